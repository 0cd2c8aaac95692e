"""``enclave-audit attest`` and ``keys`` end to end through the console script."""

from __future__ import annotations

import json
import random
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CliResult, assert_one_line_error, run_cli, shared_fixture

from builder.eif import write_eif
from enclave_audit.model.attestation import (
    VSA_EXT_PCRS,
    VSA_EXT_REBUILDS,
    VSA_EXT_SOURCE_COMMIT,
    VSA_EXT_VERDICT,
)
from enclave_audit.model.measurements import PcrSet, measurements_json

BEACON = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
ISSUER = "https://token.actions.githubusercontent.com"
SIG = shared_fixture("sigstore")
A_TXT = SIG / "artifacts" / "a.txt"
DSSE = SIG / "conformance-dsse-slsa-provenance-v1" / "bundle.sigstore.json"
HASHEDREKORD = SIG / "conformance-hashedrekord-v0.3" / "bundle.sigstore.json"
WHEEL = SIG / "github-release-wheel-v0.2" / "bundle.sigstore.json"
STAGING = SIG / "staging-rekor-v2-dsse"
AMBIENT = (
    "GITHUB_ACTIONS",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "SIGSTORE_ID_TOKEN",
    "GOOGLE_SERVICE_ACCOUNT_NAME",
    "BUILDKITE",
    "GITLAB_CI",
    "CIRCLECI",
)


@dataclass(frozen=True)
class Image:
    eif: Path
    measurements: Path
    pcrs: PcrSet


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attest-cli")


@pytest.fixture(scope="module")
def image(work: Path) -> Image:
    rng = random.Random(8)
    kernel, ramdisk = work / "bzImage", work / "app.cpio"
    kernel.write_bytes(rng.randbytes(4096))
    ramdisk.write_bytes(rng.randbytes(8192))
    eif = work / "enclave.eif"
    pcrs = write_eif(
        eif,
        kernel=kernel,
        cmdline="console=ttyS0",
        ramdisks=[ramdisk],
        name="t",
        version="1",
        build_time="2025-01-01T00:00:00Z",
    ).pcrs
    measurements = work / "measurements.json"
    measurements.write_text(measurements_json(pcrs))
    return Image(eif, measurements, pcrs)


@pytest.fixture(scope="module", params=["ecdsa-p256", "ed25519"])
def key(work: Path, request: pytest.FixtureRequest) -> Path:
    prefix = work / f"key-{request.param}"
    result = run_cli(
        ["keys", "generate", "--type", request.param, "--prefix", str(prefix), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["type"] == request.param and info["fingerprint"].startswith("SHA256:")
    assert stat.S_IMODE(Path(info["private_key"]).stat().st_mode) == 0o600
    return prefix


def ok(result: CliResult) -> CliResult:
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def vsa_args(
    image: Image,
    key_ref: str,
    out: Path,
    *,
    verdict: str = "FAIL",
    measurements: Path | None = None,
    rebuilds: int = 0,
    policy_text: str = "{}",
) -> list[str]:
    """``attest vsa`` arguments; the policy file is written beside ``out``."""
    policy = out.parent / "policy.json"
    policy.write_text(policy_text)
    return [
        "attest",
        "vsa",
        "--eif",
        str(image.eif),
        "--measurements",
        str(measurements or image.measurements),
        "--verdict",
        verdict,
        "--policy",
        str(policy),
        "--rebuilds",
        str(rebuilds),
        "--key",
        key_ref,
        "-o",
        str(out),
    ]


def sign_vsa(
    image: Image, key: Path, out: Path, verdict: str = "PASS", measurements: Path | None = None
) -> CliResult:
    args = vsa_args(
        image,
        f"file:{key}.key",
        out,
        verdict=verdict,
        measurements=measurements,
        rebuilds=2,
        policy_text='{"require": "PCR0-2"}\n',
    )
    return run_cli([*args, "--source-commit", "0123456789ABCDEF0123456789abcdef01234567", "--json"])


def test_keys_generate_refuses_overwrite(key: Path) -> None:
    result = run_cli(["keys", "generate", "-o", str(key)])
    assert_one_line_error(result, 7, "exists")


def test_vsa_sign_and_verify(image: Image, key: Path, work: Path) -> None:
    out = work / f"vsa-{key.name}.sigstore.json"
    summary = json.loads(ok(sign_vsa(image, key, out)).stdout)
    assert summary["predicate_type"] == "https://slsa.dev/verification_summary/v1"
    result = ok(
        run_cli(
            [
                "attest",
                "verify",
                str(out),
                "--artifact",
                str(image.eif),
                "--key",
                f"{key}.pub",
                "--json",
            ]
        )
    )
    report = json.loads(result.stdout)
    assert (report["schema"], report["schema_version"]) == ("enclave-audit/attest-verify", 1)
    assert report["signer"]["kind"] == "key"
    assert report["matched_subject"] == "enclave.eif" and report["subject_checked"] is True
    # human output names what was verified
    human = ok(
        run_cli(["attest", "verify", str(out), "--artifact", str(image.eif), "--key", f"{key}.pub"])
    )
    assert "verified: https://slsa.dev/verification_summary/v1 about enclave.eif" in human.stdout
    # and the payload carries the PCRs, commit (lowercased), rebuilds and verdict
    bundle = json.loads(out.read_text())
    import base64

    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    pred = statement["predicate"]
    assert pred[VSA_EXT_PCRS]["PCR0"] == image.pcrs.hex(0)
    assert pred[VSA_EXT_SOURCE_COMMIT] == "0123456789abcdef0123456789abcdef01234567"
    assert pred[VSA_EXT_REBUILDS] == 2 and pred[VSA_EXT_VERDICT] == "PASS"
    assert pred["verificationResult"] == "PASSED"


def test_vsa_pass_refused_for_other_measurements(image: Image, key: Path, work: Path) -> None:
    wrong = work / "wrong-measurements.json"
    wrong.write_text(
        measurements_json(PcrSet(values={0: "00" * 48, 1: image.pcrs.hex(1), 2: image.pcrs.hex(2)}))
    )
    out = work / f"refused-{key.name}.sigstore.json"
    assert_one_line_error(sign_vsa(image, key, out, measurements=wrong), 1, "PCR0")
    assert not out.exists()
    # a FAIL verdict about the same mismatch is fine to record
    ok(sign_vsa(image, key, out, verdict="FAIL", measurements=wrong))


def test_provenance_from_statement(key: Path, work: Path) -> None:
    bundle = json.loads(DSSE.read_text())
    import base64

    statement = work / "provenance.json"
    statement.write_bytes(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    out = work / f"prov-{key.name}.sigstore.json"
    ok(
        run_cli(
            [
                "attest",
                "provenance",
                "--statement",
                str(statement),
                "--key",
                f"file:{key}.key",
                "-o",
                str(out),
            ]
        )
    )
    result = ok(
        run_cli(
            [
                "attest",
                "verify",
                str(out),
                "--artifact",
                str(A_TXT),
                "--key",
                f"{key}.pub",
                "--predicate-type",
                "https://slsa.dev/provenance/v1",
                "--json",
            ]
        )
    )
    report = json.loads(result.stdout)
    assert report["builder"] == {
        "claimed": "https://github.com/loosebazooka/aa-test/.github/workflows/provenance.yaml@refs/heads/main",
        "bound_to_signer": False,
    }
    # signed exactly as given
    signed = json.loads(out.read_text())["dsseEnvelope"]["payload"]
    assert base64.b64decode(signed) == statement.read_bytes()


def test_provenance_from_manifest(image: Image, key: Path, work: Path) -> None:
    from enclave_audit.fsutil import hash_file
    from enclave_audit.model.manifest import BuildManifest

    digests = hash_file(image.eif, ("sha256", "sha384"))
    manifest = BuildManifest.model_validate(
        {
            "name": "t",
            "version": "1",
            "builder": {"version": "0.1.0", "backend": "native"},
            "source_date_epoch": 1700000000,
            "rootfs_source_date_epoch": 1700000000,
            "source": {"git_commit": "ab" * 20, "tree_sha256": "cd" * 32},
            "spec": {
                "path": "enclave.toml",
                "sha256": "ef" * 32,
                "text": "",
                "lock_path": "l",
                "lock_text": "",
            },
            "kernel": {
                "release": "6.1",
                "cmdline": "console=ttyS0",
                "bzimage_sha256": "01" * 32,
                "config_sha256": "02" * 32,
                "input_digest": "03" * 32,
                "source_date_epoch": 1,
            },
            "inputs": [],
            "toolchain": {"gcc": "12.2.0"},
            "ramdisks": [],
            "outputs": [
                {
                    "name": "enclave.eif",
                    "size": image.eif.stat().st_size,
                    "sha256": digests["sha256"].hex(),
                    "sha384": digests["sha384"].hex(),
                }
            ],
            "pcrs": {"values": {str(i): image.pcrs.hex(i) for i in image.pcrs.indices()}},
        }
    )
    path = work / "build-manifest.json"
    path.write_text(manifest.to_json())
    out = work / f"manifest-prov-{key.name}.sigstore.json"
    ok(
        run_cli(
            [
                "attest",
                "provenance",
                "--manifest",
                str(path),
                "--key",
                f"file:{key}.key",
                "-o",
                str(out),
            ]
        )
    )
    report = json.loads(
        ok(
            run_cli(
                [
                    "attest",
                    "verify",
                    str(out),
                    "--artifact",
                    str(image.eif),
                    "--key",
                    f"{key}.pub",
                    "--json",
                ]
            )
        ).stdout
    )
    assert report["predicate_type"] == "https://slsa.dev/provenance/v1"
    assert report["matched_subject"] == "enclave.eif"


def test_real_keyless_bundles() -> None:
    result = ok(
        run_cli(
            [
                "attest",
                "verify",
                str(DSSE),
                "--artifact",
                str(A_TXT),
                "--identity",
                BEACON,
                "--issuer",
                ISSUER,
            ]
        )
    )
    assert "verified: https://slsa.dev/provenance/v1 about a.txt" in result.stdout
    assert "not the signer" in result.stderr and "not trusted" in result.stderr
    ok(
        run_cli(
            [
                "attest",
                "verify",
                str(HASHEDREKORD),
                "--artifact",
                str(A_TXT),
                "--identity",
                BEACON,
                "--issuer",
                ISSUER,
            ]
        )
    )
    ok(
        run_cli(
            [
                "attest",
                "verify",
                str(STAGING / "bundle.sigstore.json"),
                "--artifact",
                str(A_TXT),
                "--identity",
                BEACON,
                "--issuer",
                ISSUER,
                "--trusted-root",
                str(STAGING / "trusted_root.staging.json"),
            ]
        )
    )
    report = json.loads(
        ok(
            run_cli(
                [
                    "attest",
                    "verify",
                    str(WHEEL),
                    "--digest",
                    "sha256:c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201",
                    "--identity",
                    "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
                    "--issuer",
                    ISSUER,
                    "--repository",
                    "trailofbits/rfc8785.py",
                    "--ref",
                    "refs/tags/v0.1.2",
                    "--trigger",
                    "release",
                    "--json",
                ]
            )
        ).stdout
    )
    assert report["kind"] == "message"
    assert report["signer"]["extensions"]["trigger"] == "release"


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--identity", BEACON + "x", "--issuer", ISSUER], 42, "identity"),
        (["--identity", BEACON, "--issuer", "https://accounts.google.com"], 42, "issuer"),
        (["--identity", BEACON, "--issuer", ISSUER, "--trigger", "release"], 42, "trigger"),
        (
            ["--identity", BEACON, "--issuer", ISSUER, "--digest", "sha256:" + "00" * 32],
            43,
            "subject",
        ),
        (
            [
                "--identity",
                BEACON,
                "--issuer",
                ISSUER,
                "--trusted-root",
                str(STAGING / "trusted_root.staging.json"),
            ],
            41,
            "",
        ),
    ],
    ids=["identity", "issuer", "trigger", "digest", "wrong-root"],
)
def test_keyless_failures(args: list[str], code: int, needle: str) -> None:
    subject = [] if "--digest" in args else ["--artifact", str(A_TXT)]
    assert_one_line_error(run_cli(["attest", "verify", str(DSSE), *subject, *args]), code, needle)


def test_bundle_errors(image: Image, key: Path, work: Path) -> None:
    out = work / f"err-{key.name}.sigstore.json"
    ok(sign_vsa(image, key, out))
    common = ["--artifact", str(image.eif), "--key", f"{key}.pub"]
    garbage = work / "garbage.json"
    garbage.write_text("{not json")
    assert_one_line_error(
        run_cli(["attest", "verify", str(garbage), *common]), 40, "not valid JSON"
    )
    obj = json.loads(out.read_text())
    import base64

    sig = bytearray(base64.b64decode(obj["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[len(sig) // 2] ^= 0x01
    obj["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    flipped = work / "flipped.sigstore.json"
    flipped.write_text(json.dumps(obj))
    assert_one_line_error(run_cli(["attest", "verify", str(flipped), *common]), 41, "signature")
    assert_one_line_error(
        run_cli(["attest", "verify", str(out), "--artifact", str(A_TXT), "--key", f"{key}.pub"]),
        43,
        "subject",
    )
    bad_key = work / "bad.pub"
    bad_key.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    assert_one_line_error(
        run_cli(
            ["attest", "verify", str(out), "--artifact", str(image.eif), "--key", str(bad_key)]
        ),
        44,
        "public key",
    )
    assert_one_line_error(
        run_cli(["attest", "verify", str(work / "missing.json"), *common]), 6, "missing.json"
    )
    # the keyless verifier refuses a key bundle with a clear message
    assert_one_line_error(
        run_cli(
            [
                "attest",
                "verify",
                str(out),
                "--artifact",
                str(image.eif),
                "--identity",
                BEACON,
                "--issuer",
                ISSUER,
            ]
        ),
        42,
        "no public key",
    )


def test_usage_errors(key: Path) -> None:
    assert_one_line_error(
        run_cli(["attest", "verify", str(DSSE), "--key", f"{key}.pub"]), 2, "--artifact"
    )
    assert_one_line_error(
        run_cli(["attest", "verify", str(DSSE), "--artifact", str(A_TXT)]), 2, "--identity"
    )
    assert_one_line_error(
        run_cli(
            [
                "attest",
                "verify",
                str(DSSE),
                "--artifact",
                str(A_TXT),
                "--key",
                f"{key}.pub",
                "--identity",
                BEACON,
                "--issuer",
                ISSUER,
            ]
        ),
        2,
        "not both",
    )


def test_insecure_flag_warns_every_time() -> None:
    for _ in range(2):
        result = ok(
            run_cli(
                [
                    "attest",
                    "verify",
                    str(DSSE),
                    "--insecure-no-subject-check",
                    "--identity",
                    BEACON,
                    "--issuer",
                    ISSUER,
                ]
            )
        )
        assert "--insecure-no-subject-check" in result.stderr and "warning" in result.stderr
        assert "an unchecked subject" in result.stdout


def test_private_key_with_loose_permissions_is_refused(key: Path, work: Path, image: Image) -> None:
    loose = work / "loose.key"
    loose.write_bytes(Path(f"{key}.key").read_bytes())
    loose.chmod(0o644)
    result = run_cli(vsa_args(image, f"file:{loose}", work / "x.json"))
    assert_one_line_error(result, 44, "0644")


def test_keyless_signing_needs_ambient_credential(image: Image, work: Path) -> None:
    env = dict.fromkeys(AMBIENT, "")
    result = run_cli(vsa_args(image, "sigstore:", work / "keyless.json"), env=env)
    assert_one_line_error(result, 5, "ambient OIDC")
    assert not (work / "keyless.json").exists()


@pytest.mark.network_ns
def test_real_bundles_verify_with_no_network(tmp_path: Path) -> None:
    """Offline means offline: the CLI runs in a network namespace with no interfaces."""
    import os
    import subprocess
    import sys

    from conftest import need, need_tool

    unshare = need_tool("unshare", "util-linux")
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, check=False)
    need(probe.returncode == 0, "unshare -rn (user + network namespaces) not permitted here")
    exe = str(Path(sys.executable).with_name("enclave-audit"))
    env = {**os.environ, "HOME": str(tmp_path)}  # no sigstore cache either
    cases = [
        [str(DSSE), "--artifact", str(A_TXT)],
        [str(HASHEDREKORD), "--artifact", str(A_TXT)],
        [
            str(STAGING / "bundle.sigstore.json"),
            "--artifact",
            str(A_TXT),
            "--trusted-root",
            str(STAGING / "trusted_root.staging.json"),
        ],
    ]
    for case in cases:
        proc = subprocess.run(
            [
                unshare,
                "-rn",
                exe,
                "attest",
                "verify",
                *case,
                "--identity",
                BEACON,
                "--issuer",
                ISSUER,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, (case, proc.stderr)
        assert proc.stdout.startswith("verified:")


def test_encrypted_key_via_environment(image: Image, work: Path) -> None:
    prefix = work / "enc"
    env = {"MY_PASS": "s3cret passphrase"}
    assert_one_line_error(
        run_cli(
            [
                "keys",
                "generate",
                "--type",
                "ed25519",
                "-o",
                str(prefix),
                "--passphrase-env",
                "UNSET_VAR_X",
            ]
        ),
        44,
        "UNSET_VAR_X",
    )
    info = json.loads(
        ok(
            run_cli(
                [
                    "keys",
                    "generate",
                    "--type",
                    "ed25519",
                    "-o",
                    str(prefix),
                    "--passphrase-env",
                    "MY_PASS",
                    "--json",
                ],
                env=env,
            )
        ).stdout
    )
    assert info["encrypted"] is True
    args = vsa_args(image, f"file:{prefix}.key", work / "enc.sigstore.json")
    assert_one_line_error(run_cli(args, env={"ENCLAVE_AUDIT_KEY_PASSPHRASE": ""}), 44, "encrypted")
    ok(run_cli(args, env={"ENCLAVE_AUDIT_KEY_PASSPHRASE": "s3cret passphrase"}))
    ok(
        run_cli(
            [
                "attest",
                "verify",
                str(work / "enc.sigstore.json"),
                "--artifact",
                str(image.eif),
                "--key",
                f"{prefix}.pub",
            ]
        )
    )
