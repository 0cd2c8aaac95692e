"""Booting EIFs under QEMU's nitro-enclave machine: the guest's NSM must report our PCRs.

Slow: each boot is a few seconds of TCG emulation; the session fixtures build
QEMU and the kernel once (cached across runs).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from builder.eif import describe_eif, extend_string, pcr8_from_certificate
from enclave_audit.model.findings import Verdict
from enclave_audit.model.measurements import measurements_json
from verifier.qemu.boot import boot_and_attest
from verifier.qemu.build import QemuInstall
from verifier.qemu.testimage import DEFAULT_APP_PAYLOAD, ProbeImage, write_probe_eif

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

ROLE = "arn:aws:iam::123456789012:role/enclave-audit-parent"
INSTANCE = "i-0123456789abcdef0"


def test_probe_pcrs_equal_ours_via_cli(
    qemu_install: QemuInstall, probe: ProbeImage, tmp_path: Path
) -> None:
    nonce = "5eed" * 8
    result = run_cli(
        [
            "enclave",
            "qemu-run",
            str(probe.eif),
            "--parent-role",
            ROLE,
            "--parent-id",
            INSTANCE,
            "--nonce",
            nonce,
            "--json",
        ],
        timeout=600,
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["schema"], report["schema_version"]) == ("enclave-audit/qemu-boot", 1)
    assert report["verdict"] == "PASS"
    described = describe_eif(probe.eif).pcrs
    guest = {int(k): bytes.fromhex(v) for k, v in report["guest_pcrs"].items()}
    for index in (0, 1, 2):
        assert guest[index] == described[index] == probe.pcrs[index]
    assert guest[3] == extend_string(ROLE)
    assert guest[4] == extend_string(INSTANCE)
    assert guest[8] == bytes(48)
    assert all(c["match"] for c in report["comparisons"])
    assert report["attestation"]["nonce"] == nonce
    assert report["insecure_unsigned"] is True and report["not_checked"]
    assert "INSECURE" in result.stderr
    # the stretch goal: the same response also crossed our vsock data path
    assert report["vsock_device_started"] is True
    assert report["vsock_document_match"] is True  # guest -> host
    assert report["vsock_request_ok"] is True  # host -> guest, with a second nonce
    # the emulated document is refused by the relying-party verifier by default
    doc = tmp_path / "qemu-doc.cbor"
    doc.write_bytes(base64.b64decode(report["document"]))
    refused = run_cli(["attestation", "verify", str(doc)])
    assert_one_line_error(refused, 25, "unsigned")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enclave-audit qemu test signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA384())
    )
    cert_path, key_path = tmp_path / "signer.pem", tmp_path / "signer.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_signed_probe_pcr8_equals_ours(
    qemu_install: QemuInstall, probe_kernel: Path, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    signed = write_probe_eif(tmp_path / "signed.eif", kernel=probe_kernel, signing=(cert, key))
    result = boot_and_attest(
        signed.eif, parent_role=None, parent_id=None, nonce=None, timeout=300, progress=None
    )
    assert result.verdict is Verdict.PASS, result.checks
    expected8 = pcr8_from_certificate(cert.read_bytes())
    assert result.guest_pcrs[8] == expected8 == describe_eif(signed.eif).pcrs[8]
    assert result.guest_pcrs[3] == result.guest_pcrs[4] == bytes(48)
    assert 0 < result.timings.attestation_s <= result.timings.total_s


def test_changed_application_byte_shows_pcr2(
    qemu_install: QemuInstall, probe: ProbeImage, probe_kernel: Path, tmp_path: Path
) -> None:
    payload = bytearray(DEFAULT_APP_PAYLOAD)
    payload[0] ^= 0x01
    tampered = write_probe_eif(
        tmp_path / "tampered.eif", kernel=probe_kernel, app_payload=bytes(payload)
    )
    expected = tmp_path / "measurements.json"
    expected.write_text(measurements_json(probe.pcrs))  # what the builder recorded
    result = run_cli(
        ["enclave", "qemu-run", str(tampered.eif), "--expect", str(expected), "--json"],
        timeout=600,
    )
    assert result.exit_code == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "FAIL"
    differing = sorted(c["index"] for c in report["comparisons"] if not c["match"])
    assert differing == [0, 2]  # PCR1 (kernel, cmdline, bootstrap) is untouched
    guest2 = bytes.fromhex(report["guest_pcrs"]["2"])
    # QEMU measured the tampered image exactly as describe-eif does
    assert guest2 == describe_eif(tampered.eif).pcrs[2] != probe.pcrs[2]
    assert "PCR2" in result.stderr and "PCR0" in result.stderr


def test_reference_image_pcrs_equal_ours(qemu_install: QemuInstall, reference_eif: Path) -> None:
    result = boot_and_attest(
        reference_eif, parent_role=ROLE, parent_id=INSTANCE, nonce=None, timeout=900, progress=None
    )
    assert result.verdict is Verdict.PASS, [c for c in result.checks if c.outcome != "pass"]
    described = describe_eif(reference_eif).pcrs
    for index in (0, 1, 2):
        assert result.guest_pcrs[index] == described[index]
    assert result.guest_pcrs[3] == extend_string(ROLE)
    assert result.guest_pcrs[4] == extend_string(INSTANCE)
    # the image's init sends the Nitro boot heartbeat over vsock: our backend carried it
    assert result.vsock_heartbeat is True


def test_guest_that_never_attests_is_one_error(
    qemu_install: QemuInstall, unbootable_eif: Path
) -> None:
    result = run_cli(["enclave", "qemu-run", str(unbootable_eif), "--timeout", "60"], timeout=300)
    assert_one_line_error(result, 63, "before the guest attested")
