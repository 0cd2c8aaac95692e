"""Crashes the fuzzers and corpora found, kept as regression tests.

Each test names the input that used to escape as a foreign exception (or be
accepted) and checks that it is now one of the project's own errors.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from enclave_audit.errors import EnclaveAuditError

DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


def test_eif_signature_with_corrupt_certificate_field_is_refused() -> None:
    """A bit flipped inside the signing certificate's issuer or key (CRC fixed up).

    Used to raise ValueError ("error parsing asn1 value") from describe_certificate()
    and cryptography's UnsupportedAlgorithm from public_key().
    """
    from builder.eif import parse_signature_section
    from fuzz.seeds import eif_signature_seeds

    section = eif_signature_seeds()[0]
    crashes = []
    for i in range(len(section)):
        tampered = bytearray(section)
        tampered[i] ^= 1 << (i % 8)
        try:
            info = parse_signature_section(bytes(tampered))
            info.describe_certificate()
        except EnclaveAuditError:
            pass
        except Exception as exc:
            crashes.append(f"byte {i}: {type(exc).__name__}: {exc}")
    assert not crashes, "\n".join(crashes[:5])


@pytest.mark.parametrize(
    "call",
    [
        "reports.key_policy.parse_policy",
        "enclave_audit.fsutil.read_json",
        "enclave_runtime.wire.json_object",
    ],
)
def test_deeply_nested_json_is_a_project_error(call: str, tmp_path: Path) -> None:
    """100 000 nested arrays used to raise RecursionError out of json.loads."""
    if call == "reports.key_policy.parse_policy":
        from reports.key_policy import parse_policy

        run = lambda: parse_policy(DEEP_JSON)  # noqa: E731
    elif call == "enclave_audit.fsutil.read_json":
        from enclave_audit.fsutil import read_json

        path = tmp_path / "deep.json"
        path.write_bytes(DEEP_JSON)
        run = lambda: read_json(path)  # noqa: E731
    else:
        from enclave_runtime.wire import json_object

        run = lambda: json_object(DEEP_JSON, "request")  # noqa: E731
    with pytest.raises(EnclaveAuditError):
        run()


def test_kms_answers_deeply_nested_json_with_400(tmp_path: Path) -> None:
    """A signed request whose body nests 100 000 arrays: SerializationException, not a 500."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from reference_enclave.kms import Credential, start_kms

    cred = Credential(
        access_key_id="AKIAREGRESSION000001",
        secret_access_key="s" * 40,
        principal="arn:aws:iam::111122223333:user/admin",
    )
    with start_kms(tmp_path / "kms.db", credentials=[cred]) as kms:
        request = AWSRequest(
            method="POST",
            url=kms.url + "/",
            data=DEEP_JSON,
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": "TrentService.ListKeys",
            },
        )
        SigV4Auth(
            Credentials(cred.access_key_id, cred.secret_access_key), "kms", "us-east-1"
        ).add_auth(request)
        prepared = urllib.request.Request(
            kms.url + "/", data=DEEP_JSON, headers=dict(request.headers.items()), method="POST"
        )
        try:
            with urllib.request.urlopen(prepared, timeout=30) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read()
    assert status == 400, (status, body[:200])
    assert json.loads(body)["__type"] == "SerializationException"


def test_gpu_report_with_trailing_bytes_is_refused() -> None:
    """A genuine accelerator report with bytes appended after the CBOR item was accepted.

    cbor2.loads() decodes the first item and ignores what follows, so a tampered
    report (the signed report plus anything) passed verify_report.
    """
    from enclave_runtime.gpu_bridge.attestation import verify_report
    from fuzz.seeds import gpu_report_seeds
    from fuzz.targets import FIXED_NOW, _reference_values

    report = gpu_report_seeds()[0]
    verify_report(
        report, _reference_values(), nonce=b"n" * 32, enclave_share=b"e" * 32, now=FIXED_NOW
    )
    with pytest.raises(EnclaveAuditError):
        verify_report(
            report + b"\x00",
            _reference_values(),
            nonce=b"n" * 32,
            enclave_share=b"e" * 32,
            now=FIXED_NOW,
        )


CRASHES = Path(__file__).with_name("crashes")


@pytest.mark.parametrize(
    "reproducer", sorted(p.name for p in CRASHES.iterdir()) if CRASHES.is_dir() else []
)
def test_fuzzer_reproducers_are_refused_cleanly(reproducer: str) -> None:
    """Every reproducer the fuzz runner kept (``<target>-crash-<sha1>``) is now a project error."""
    from fuzz.targets import TARGETS

    target = reproducer.split("-crash-")[0].split("-timeout-")[0].split("-oom-")[0]
    data = (CRASHES / reproducer).read_bytes()
    try:
        TARGETS[target].run(data)
    except EnclaveAuditError:
        pass


def _with_certificate_version(der: bytes, version_byte: int) -> bytes:
    """The certificate with its explicit version INTEGER set to an invalid value."""
    at = der.find(b"\xa0\x03\x02\x01\x02")
    assert at > 0
    return der[: at + 4] + bytes([version_byte]) + der[at + 5 :]


def test_certificate_with_invalid_x509_version_is_malformed_everywhere() -> None:
    """cryptography raises x509.InvalidVersion (not a ValueError) for version 10.

    It escaped verifier.nitro.certs.parse_der, the EIF signature section parser and
    gpu_bridge.verify_report.
    """
    import cbor2

    from enclave_runtime.gpu_bridge.attestation import verify_report
    from fuzz.seeds import gpu_report_seeds
    from fuzz.targets import FIXED_NOW, _reference_values
    from verifier.nitro.certs import parse_der

    outer = cbor2.loads(gpu_report_seeds()[0])
    body = cbor2.loads(outer["body"])
    bad = _with_certificate_version(body["certificate"], 10)
    with pytest.raises(EnclaveAuditError):
        parse_der(bad, what="certificate")
    outer["body"] = cbor2.dumps({**body, "certificate": bad})
    with pytest.raises(EnclaveAuditError):
        verify_report(
            cbor2.dumps(outer),
            _reference_values(),
            nonce=b"n" * 32,
            enclave_share=b"e" * 32,
            now=FIXED_NOW,
        )
