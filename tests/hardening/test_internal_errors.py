"""Internal errors (exit 70) turned into specific codes (issue 18, findings reproduced).

Every hostile input here made a verb crash with ``internal error`` (exit 70) before:
EIF metadata with a 4,300-digit integer, deep nesting or a lone surrogate; non-UTF-8
member names in ``audit --json`` (which lost the FAIL verdict); ``report`` on a bad
PCR key or deep nesting; a root certificate with an unknown key algorithm.  The last
test runs each verb over every hostile input of this file (the CLI layer, where the
crashes were seen) and requires a specific exit code and one error line.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli, shared_fixture

from enclave_audit.errors import EifError, InvalidInput, ReportInvalid
from fuzz.hostile import METADATA_VALUES, eif_with_metadata

NITRO = shared_fixture("nitro")
EXPECTED = json.loads((NITRO / "expected.json").read_text())["documents"]
DOCUMENT = NITRO / next(e["file"] for e in EXPECTED if "evervault_2022-10-13" in e["file"])


# --- EIF metadata -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(METADATA_VALUES))
@pytest.mark.parametrize("verb", ["describe-eif", "audit"])
def test_hostile_eif_metadata_is_an_eif_error(tmp_path: Path, kind: str, verb: str) -> None:
    image = eif_with_metadata(tmp_path, kind)
    result = run_cli([verb, str(image), "--json"])
    assert_one_line_error(result, EifError.exit_code, "metadata section")


@pytest.mark.parametrize("kind", sorted(METADATA_VALUES))
def test_diff_of_hostile_metadata_compares_bytes(tmp_path: Path, kind: str) -> None:
    image = eif_with_metadata(tmp_path / "a", kind)
    other = eif_with_metadata(tmp_path / "b", "duplicate-key" if kind != "duplicate-key" else "nan")
    result = run_cli(["diff", str(image), str(other), "--json"])
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "metadata" in result.stdout


# --- non-UTF-8 names in JSON output -------------------------------------------------------------


def _setuid_with_undecodable_name(tmp_path: Path) -> Path:
    from builder.eif import write_eif
    from builder.initramfs import write_ramdisk
    from builder.initramfs.entries import directory, file_bytes

    write_ramdisk(
        tmp_path / "boot.cpio",
        [directory("dev"), file_bytes("init", b"\x7fELF" + bytes(60), 0o755)],
        epoch=0,
    )
    write_ramdisk(
        tmp_path / "app.cpio",
        [
            file_bytes("cmd", b"/bin/x\n"),
            file_bytes("env", b"A=1\n"),
            directory("rootfs"),
            # bytes 0xff 0xfe in the name; setuid and world-writable: a high finding
            file_bytes("rootfs/bad\udcff\udcfename", b"#!/bin/sh\n", 0o4777),
        ],
        epoch=0,
    )
    (tmp_path / "kernel").write_bytes(bytes(4096))
    image = tmp_path / "nonutf8.eif"
    write_eif(
        image,
        kernel=tmp_path / "kernel",
        cmdline="console=ttyS0",
        ramdisks=[tmp_path / "boot.cpio", tmp_path / "app.cpio"],
        name="t",
        version="1",
        build_time="2025-01-01T00:00:00+00:00",
    )
    return image


def test_audit_json_keeps_the_fail_verdict_with_an_undecodable_member_name(
    tmp_path: Path,
) -> None:
    """The finding: exit 70 (PydanticSerializationError), and the FAIL verdict was lost."""
    result = run_cli(["audit", str(_setuid_with_undecodable_name(tmp_path)), "--json"])
    assert result.exit_code == 1, result.stderr
    assert "internal error" not in result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "FAIL"
    paths = json.dumps(report)
    assert "bad\\\\xff\\\\xfename" in paths  # the bytes are shown, escaped, as data


def test_audit_text_and_sbom_with_an_undecodable_member_name(tmp_path: Path) -> None:
    image = _setuid_with_undecodable_name(tmp_path)
    text = run_cli(["audit", str(image)])
    assert text.exit_code == 1, text.stderr
    assert "internal error" not in text.stderr
    sbom = tmp_path / "sbom.json"
    report = tmp_path / "report.json"
    result = run_cli(
        [
            "audit", str(image), "--sbom", str(sbom), "--sbom-format", "spdx",
            "--format", "json", "-o", str(report),
        ]
    )  # fmt: skip
    assert result.exit_code == 1, result.stderr
    assert "internal error" not in result.stderr
    json.loads(sbom.read_bytes().decode("utf-8"))
    saved = json.loads(report.read_bytes().decode("utf-8"))
    assert saved["verdict"] == "FAIL"
    assert "bad\\\\xff\\\\xfename" in json.dumps(saved)
    sarif = run_cli(["audit", str(image), "--format", "sarif"])
    assert sarif.exit_code == 1, sarif.stderr
    assert "internal error" not in sarif.stderr
    assert "rootfs/bad%FF%FEname" in sarif.stdout  # the URI carries the bytes


def test_diff_json_with_an_undecodable_member_name(tmp_path: Path) -> None:
    """diff --json (stdout and file) writes the name visibly, never exit 70."""
    from builder.initramfs import write_ramdisk
    from builder.initramfs.entries import file_bytes

    for side, data in (("a", b"one\n"), ("b", b"two\n")):
        write_ramdisk(
            tmp_path / f"{side}.cpio", [file_bytes("bad\udcff\udcfename", data, 0o755)], epoch=0
        )
    a, b = str(tmp_path / "a.cpio"), str(tmp_path / "b.cpio")
    shown = "bad\\\\xff\\\\xfename"  # the bytes, escaped, as data
    result = run_cli(["diff", a, b, "--json"])
    assert result.exit_code == 1, result.stderr
    assert "internal error" not in result.stderr
    assert shown in json.dumps(json.loads(result.stdout))
    out = tmp_path / "diff.json"
    result = run_cli(["diff", a, b, "--json", str(out)])
    assert result.exit_code == 1, result.stderr
    assert "internal error" not in result.stderr
    assert shown in json.dumps(json.loads(out.read_bytes().decode("utf-8")))


# --- report -------------------------------------------------------------------------------------

_BASE = {
    "schema": "enclave-audit/report",
    "schema_version": 1,
    "title": "t",
    "generated_at": "2026-01-01T00:00:00Z",
    "verdict": "PASS",
    "summary": "s",
}


def _row(key: str) -> dict[str, object]:
    return {**_BASE, "pcr_table": [{"source": "a", "role": "builder", "pcrs": {key: "aa" * 48}}]}


HOSTILE_REPORTS = {
    "bad-pcr-key": json.dumps(_row("x")),
    "huge-pcr-key": json.dumps(_row("1" * 5000)),
    "negative-pcr-key": json.dumps(_row("-1")),
    "deep-nesting": json.dumps(_BASE)[:-1] + ', "notes": ' + "[" * 50_000 + "]" * 50_000 + "}",
    "lone-surrogate": json.dumps(_BASE)[:-1] + ', "notes": ["\\ud800"]}',
    "big-integer": json.dumps(_BASE)[:-1] + ', "schema_version": ' + "1" * 5000 + "}",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_REPORTS))
@pytest.mark.parametrize("fmt", ["html", "text"])
def test_report_on_a_hostile_saved_report_is_report_invalid(
    tmp_path: Path, kind: str, fmt: str
) -> None:
    path = tmp_path / "report.json"
    path.write_text(HOSTILE_REPORTS[kind])
    result = run_cli(["report", str(path), "--format", fmt])
    assert_one_line_error(result, ReportInvalid.exit_code, str(path))


# --- root certificates --------------------------------------------------------------------------


def unknown_algorithm_root(path: Path) -> Path:
    """A CA certificate (P-384, CA, keyCertSign) whose key algorithm OID is 1.2.3.4.5.6.7.8."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root")])
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=36500))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    ec_public_key = bytes.fromhex("06072a8648ce3d0201")  # OID 1.2.840.10045.2.1
    assert der.count(ec_public_key) == 1
    der = der.replace(ec_public_key, bytes.fromhex("06072a030405060708"))
    path.write_bytes(
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
    )
    return path


def test_attestation_verify_with_a_root_of_unknown_key_algorithm(tmp_path: Path) -> None:
    root = unknown_algorithm_root(tmp_path / "root.pem")
    result = run_cli(
        ["attestation", "verify", str(DOCUMENT), "--root", str(root), "--at", "document"]
    )
    assert_one_line_error(result, InvalidInput.exit_code, "Unknown key type")


def test_every_root_loader_refuses_a_root_of_unknown_key_algorithm(tmp_path: Path) -> None:
    from builder.eif.pcr import pcr8_from_certificate
    from enclave_runtime.gpu_bridge.attestation import ReferenceValues
    from reference_enclave.kms.server import load_roots
    from verifier.nitro import TrustRoot

    root = unknown_algorithm_root(tmp_path / "root.pem")
    with pytest.raises(InvalidInput, match="Unknown key type"):
        TrustRoot.from_file(root)
    with pytest.raises(InvalidInput, match="Unknown key type"):
        load_roots([root])
    with pytest.raises(InvalidInput, match="Unknown key type"):
        pcr8_from_certificate(root.read_bytes())
    values = json.dumps(
        {"vendor_root_pem": root.read_text(), "signed_rim_hex": "00", "revoked_serials": []}
    )
    with pytest.raises(InvalidInput, match="Unknown key type"):
        ReferenceValues.from_json(values)


# --- every verb, every hostile input of this file: never exit 70 -------------------------------


def test_hostile_json_as_any_other_input_is_never_exit_70(tmp_path: Path) -> None:
    """The same hostile JSON documents where other verbs read JSON (expectations, keys
    policies, measurements, trust roots): a specific code and one line, never exit 70."""
    runs: list[list[str]] = []
    for kind, text in HOSTILE_REPORTS.items():
        path = tmp_path / f"{kind}.json"
        path.write_text(text)
        runs.append(
            ["attestation", "verify", str(DOCUMENT), "--at", "document", "--expect", str(path)]
        )
        runs.append(["describe-eif", str(path)])
    failures = []
    for args in runs:
        result = run_cli(args)
        if result.exit_code == 70 or "Traceback" in result.stderr or result.exit_code == 0:
            failures.append(f"{args[:2]} {Path(args[-1]).name}: {result.stderr.strip()[-200:]}")
    assert not failures, "\n".join(failures)
