"""The real Sigstore bundles in shared/fixtures/sigstore verify offline, and only as they should."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from enclave_audit.errors import (
    BundleMalformed,
    PolicyNotMet,
    SignatureInvalid,
    SubjectMismatch,
)
from enclave_audit.model.attestation import PROVENANCE_V1
from enclave_audit.model.digests import Digest
from verifier.attest.keys import load_public_key
from verifier.attest.policy import AllOf, AnyOf, GitHubWorkflowPolicy, IdentityPolicy, KeyPolicy
from verifier.attest.verify import (
    DEFAULT_TRUSTED_ROOT,
    digest_of_bytes,
    digest_of_file,
    verify_any,
    verify_bundle,
    verify_message_bundle,
)

BEACON = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
ISSUER = "https://token.actions.githubusercontent.com"
WHEEL_IDENTITY = (
    "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
)
WHEEL_DIGEST = Digest.parse(
    "sha256:c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201"
)
DSSE = "conformance-dsse-slsa-provenance-v1/bundle.sigstore.json"
HASHEDREKORD = "conformance-hashedrekord-v0.3/bundle.sigstore.json"
WHEEL = "github-release-wheel-v0.2/bundle.sigstore.json"
STAGING = "staging-rekor-v2-dsse/bundle.sigstore.json"
STAGING_ROOT = "staging-rekor-v2-dsse/trusted_root.staging.json"


def beacon() -> IdentityPolicy:
    return IdentityPolicy(identity=BEACON, issuer=ISSUER)


def test_pinned_root_is_the_published_production_root(sig_dir: Path) -> None:
    pinned = DEFAULT_TRUSTED_ROOT.read_bytes()
    assert hashlib.sha256(pinned).hexdigest() == (
        "6494e21ea73fa7ee769f85f57d5a3e6a08725eae1e38c755fc3517c9e6bc0b66"
    )
    assert pinned == (sig_dir / "trusted_root.production.json").read_bytes()


def test_dsse_provenance_verifies_and_builder_id_is_only_a_claim(
    sig_dir: Path, a_txt: Path
) -> None:
    raw = (sig_dir / DSSE).read_bytes()
    result = verify_bundle(raw, beacon(), artifact_digest=digest_of_file(a_txt))
    assert result.payload_type == "application/vnd.in-toto+json"
    assert result.predicate_type == PROVENANCE_V1
    assert result.subject is not None and result.subject.name == "a.txt"
    assert result.signer.identity == BEACON and result.signer.issuer == ISSUER
    assert result.signer.extensions["runner_environment"] == "github-hosted"
    # the statement is parsed from the exact verified payload bytes
    assert hashlib.sha256(result.payload_bytes).hexdigest() == result.report().payload_sha256
    # builder.id names another workflow: reported, not trusted
    assert result.builder_id == (
        "https://github.com/loosebazooka/aa-test/.github/workflows/provenance.yaml@refs/heads/main"
    )
    assert result.builder_id_bound is False
    assert any("not the signer" in w for w in result.warnings)
    assert result.report().builder is not None
    assert result.report().builder.bound_to_signer is False  # type: ignore[union-attr]


def test_staging_rekor_v2_dsse_verifies_with_its_own_root(sig_dir: Path, a_txt: Path) -> None:
    result = verify_bundle(
        (sig_dir / STAGING).read_bytes(),
        beacon(),
        artifact_digest=digest_of_file(a_txt),
        trusted_root=sig_dir / STAGING_ROOT,
    )
    assert result.signer.identity == BEACON


def test_staging_bundle_fails_against_production_root(sig_dir: Path, a_txt: Path) -> None:
    with pytest.raises(SignatureInvalid, match="not enough sources of verified time"):
        verify_bundle(
            (sig_dir / STAGING).read_bytes(), beacon(), artifact_digest=digest_of_file(a_txt)
        )


def test_hashedrekord_verifies_by_file_digest(sig_dir: Path, a_txt: Path) -> None:
    result = verify_message_bundle(
        (sig_dir / HASHEDREKORD).read_bytes(), beacon(), artifact_digest=digest_of_file(a_txt)
    )
    assert result.signer.identity == BEACON


def test_github_release_wheel_with_workflow_extensions(sig_dir: Path) -> None:
    policy = AllOf(
        [
            IdentityPolicy(identity=WHEEL_IDENTITY, issuer=ISSUER),
            GitHubWorkflowPolicy(
                repository="trailofbits/rfc8785.py",
                ref="refs/tags/v0.1.2",
                trigger="release",
                sha="d8b4a6445f38c48b9137a8099706d9b8073146e4",
                runner_environment="github-hosted",
            ),
        ]
    )
    result = verify_message_bundle(
        (sig_dir / WHEEL).read_bytes(), policy, artifact_digest=WHEEL_DIGEST
    )
    assert result.signer.extensions["repository"] == "trailofbits/rfc8785.py"


@pytest.mark.parametrize(
    ("policy", "needle"),
    [
        (
            IdentityPolicy(
                identity=BEACON.replace("refs/heads/main", "refs/heads/dev"), issuer=ISSUER
            ),
            "identity",
        ),
        (IdentityPolicy(identity=BEACON, issuer="https://accounts.google.com"), "issuer"),
        (AllOf([]), "empty all-of"),
        (AnyOf([]), "empty any-of"),
        (AllOf([beacon(), GitHubWorkflowPolicy(trigger="release")]), "trigger"),
    ],
    ids=["wrong-identity", "wrong-issuer", "empty-allof", "empty-anyof", "wrong-trigger"],
)
@pytest.mark.parametrize("fixture", [DSSE, HASHEDREKORD])
def test_wrong_signer_policies_fail(
    sig_dir: Path, a_txt: Path, fixture: str, policy: AllOf, needle: str
) -> None:
    with pytest.raises(PolicyNotMet, match=needle):
        verify_any((sig_dir / fixture).read_bytes(), policy, artifact_digest=digest_of_file(a_txt))


def test_wheel_wrong_ref_fails(sig_dir: Path) -> None:
    policy = AllOf(
        [
            IdentityPolicy(identity=WHEEL_IDENTITY, issuer=ISSUER),
            GitHubWorkflowPolicy(ref="refs/tags/v9"),
        ]
    )
    with pytest.raises(PolicyNotMet, match="ref"):
        verify_message_bundle((sig_dir / WHEEL).read_bytes(), policy, artifact_digest=WHEEL_DIGEST)


def test_any_of_accepts_one_matching_alternative(sig_dir: Path, a_txt: Path) -> None:
    policy = AnyOf([IdentityPolicy(identity="someone@example.com", issuer=ISSUER), beacon()])
    verify_bundle((sig_dir / DSSE).read_bytes(), policy, artifact_digest=digest_of_file(a_txt))


@pytest.mark.parametrize("fixture", [DSSE, HASHEDREKORD])
def test_tampered_artifact_fails(sig_dir: Path, a_txt: Path, fixture: str) -> None:
    tampered = digest_of_bytes(a_txt.read_bytes() + b"\n")
    with pytest.raises(SubjectMismatch):
        verify_any((sig_dir / fixture).read_bytes(), beacon(), artifact_digest=tampered)


def test_wheel_wrong_digest_fails(sig_dir: Path) -> None:
    wrong = Digest.parse("sha256:" + "00" * 32)
    with pytest.raises(SubjectMismatch):
        verify_message_bundle((sig_dir / WHEEL).read_bytes(), beacon(), artifact_digest=wrong)


def test_tampered_payload_in_keyless_bundle_fails(sig_dir: Path, a_txt: Path) -> None:
    import base64
    import json

    obj = json.loads((sig_dir / DSSE).read_bytes())
    payload = base64.b64decode(obj["dsseEnvelope"]["payload"]).replace(b"a.txt", b"b.txt")
    obj["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    with pytest.raises(SignatureInvalid):
        verify_bundle(json.dumps(obj).encode(), beacon(), artifact_digest=digest_of_file(a_txt))


def test_keyless_bundle_refused_by_key_policy(sig_dir: Path, a_txt: Path) -> None:
    key = load_public_key(sig_dir / "generated-key-dsse" / "p256.pub.pem")
    with pytest.raises(PolicyNotMet, match="certificate"):
        verify_bundle(
            (sig_dir / DSSE).read_bytes(), KeyPolicy([key]), artifact_digest=digest_of_file(a_txt)
        )


@pytest.mark.parametrize("name", ["p256", "ed25519"])
def test_generated_key_bundles_verify(sig_dir: Path, a_txt: Path, name: str) -> None:
    keys = sig_dir / "generated-key-dsse"
    policy = KeyPolicy([load_public_key(keys / f"{name}.pub.pem")])
    result = verify_bundle(
        (keys / f"{name}.sigstore.json").read_bytes(), policy, artifact_digest=digest_of_file(a_txt)
    )
    assert result.signer.kind == "key"
    assert result.builder_id_bound is False


def test_generated_key_bundle_wrong_key_fails(sig_dir: Path, a_txt: Path) -> None:
    keys = sig_dir / "generated-key-dsse"
    policy = KeyPolicy([load_public_key(keys / "ed25519.pub.pem")])
    with pytest.raises(PolicyNotMet, match="names none of the trusted keys"):
        verify_bundle(
            (keys / "p256.sigstore.json").read_bytes(),
            policy,
            artifact_digest=digest_of_file(a_txt),
        )


def test_key_bundle_without_key_policy_fails(sig_dir: Path, a_txt: Path) -> None:
    with pytest.raises(PolicyNotMet, match="names no public key"):
        verify_bundle(
            (sig_dir / "generated-key-dsse" / "p256.sigstore.json").read_bytes(),
            beacon(),
            artifact_digest=digest_of_file(a_txt),
        )


def test_message_bundle_is_not_an_attestation(sig_dir: Path, a_txt: Path) -> None:
    with pytest.raises(BundleMalformed, match="message-signature"):
        verify_bundle(
            (sig_dir / HASHEDREKORD).read_bytes(), beacon(), artifact_digest=digest_of_file(a_txt)
        )


@pytest.mark.parametrize("fixture", [DSSE, HASHEDREKORD])
def test_random_bit_flips_in_keyless_bundles_fail_cleanly(
    sig_dir: Path, a_txt: Path, fixture: str
) -> None:
    import random

    from enclave_audit.errors import EnclaveAuditError

    raw = (sig_dir / fixture).read_bytes()
    rng = random.Random(20261123)
    digest = digest_of_file(a_txt)
    accepted = []
    for _ in range(150):
        mutated = bytearray(raw)
        index = rng.randrange(len(raw))
        mutated[index] ^= 1 << rng.randrange(8)
        try:
            verify_any(bytes(mutated), beacon(), artifact_digest=digest)
        except EnclaveAuditError:
            continue  # anything else (a foreign exception) fails the test
        accepted.append(index)
    assert accepted == []


def test_checkpoint_must_name_its_log(sig_dir: Path, a_txt: Path) -> None:
    """sigstore-python ignores the note signer name; we bind it to the log origin."""
    raw = (sig_dir / HASHEDREKORD).read_bytes()
    edited = raw.replace(b"\\u2014 rekor.sigstore.dev ", b"\\u2014 rekor.sigstore.dew ")
    assert edited != raw
    with pytest.raises(BundleMalformed, match="no signature line names the log"):
        verify_any(edited, beacon(), artifact_digest=digest_of_file(a_txt))
