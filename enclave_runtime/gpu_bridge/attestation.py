"""Accelerator reference values (RIM) and the verification of its signed attestation report.

A vendor root CA (P-384) issues each device's identity certificate and signs the
reference integrity manifest (RIM): the firmware and driver measurements an audited
image accepts.  The image pins the vendor root and the RIM; the enclave verifies a
device report against them (chain to the pinned
root, not revoked, nonce, signature over the transcript, RIM signature,
measurements, CC mode on and debug off) before any session key exists.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enclave_runtime import cbor, strictjson
from enclave_runtime.errors import BridgeRefused, InvalidInput
from enclave_runtime.x509load import load_certificate

REPORT_VERSION = 1
MAX_REPORT = 64 << 10
MEASUREMENT_KEYS = ("firmware", "driver", "vbios")


@dataclass(frozen=True)
class ReferenceValues:
    """What the audited image pins: vendor root, signed RIM, revoked device serials."""

    vendor_root: x509.Certificate
    signed_rim: bytes
    revoked_serials: frozenset[int] = frozenset()

    def rim(self) -> dict[str, Any]:
        """The RIM after checking the vendor's signature over it."""
        try:
            outer = cbor.loads(self.signed_rim, what="signed RIM")
            assert isinstance(outer, dict)
            body, signature = outer["rim"], outer["signature"]
            key = self.vendor_root.public_key()
            assert isinstance(key, ec.EllipticCurvePublicKey)
            key.verify(signature, body, ec.ECDSA(hashes.SHA384()))
            rim = json.loads(body)
        except InvalidSignature:
            raise BridgeRefused("reference values: RIM signature does not verify") from None
        except (InvalidInput, KeyError, TypeError, ValueError, AssertionError):
            raise BridgeRefused("reference values: RIM is malformed") from None
        if not isinstance(rim, dict) or not isinstance(rim.get("measurements"), dict):
            raise BridgeRefused("reference values: RIM lacks measurements")
        return rim

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "vendor_root_pem": self.vendor_root.public_bytes(
                        serialization.Encoding.PEM
                    ).decode(),
                    "signed_rim_hex": self.signed_rim.hex(),
                    "revoked_serials": sorted(self.revoked_serials),
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "reference values") -> ReferenceValues:
        data = strictjson.loads(text, what=source, error=InvalidInput)
        try:
            root = load_certificate(
                data["vendor_root_pem"].encode(), what=f"{source}: vendor root", error=InvalidInput
            )
            rim = bytes.fromhex(data["signed_rim_hex"])
            revoked = frozenset(int(s) for s in data.get("revoked_serials", []))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"{source}: not accelerator reference values: {exc}") from None
        return cls(root, rim, revoked)

    def summary(self) -> dict[str, Any]:
        """For audit reports: root fingerprint and the pinned measurements."""
        return {
            "vendor_root_sha256": hashlib.sha256(
                self.vendor_root.public_bytes(serialization.Encoding.DER)
            ).hexdigest(),
            "rim": self.rim(),
            "revoked_serials": sorted(self.revoked_serials),
        }


def transcript_hash(
    nonce: bytes, enclave_share: bytes, device_share: bytes, body: bytes, params: bytes = b""
) -> bytes:
    """SHA-384 over the whole handshake, length-prefixed: what the device signs."""
    h = hashlib.sha384()
    for part in (b"enclave-audit bridge v1", nonce, enclave_share, params, device_share, body):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def _cbor_map(data: bytes, what: str) -> dict[Any, Any]:
    """One CBOR map and nothing after it (trailing bytes are tampering)."""
    value = cbor.loads(data, what=what)
    if not isinstance(value, dict):
        raise TypeError(f"{what} is not a CBOR map")
    return value


@dataclass(frozen=True)
class VerifiedDevice:
    serial: int
    subject: str
    measurements: dict[str, str]
    device_share: bytes
    transcript: bytes


def verify_report(
    report: bytes,
    reference: ReferenceValues,
    *,
    nonce: bytes,
    enclave_share: bytes,
    now: dt.datetime,
    params: bytes = b"",
) -> VerifiedDevice:
    """Every check before a key may exist; any failure is one BridgeRefused line."""
    if len(report) > MAX_REPORT:
        raise BridgeRefused("accelerator report too large")
    try:
        outer = _cbor_map(report, "accelerator report")
        body, device_share, signature = outer["body"], outer["device_share"], outer["signature"]
        if not isinstance(body, bytes):
            raise TypeError("report body is not a byte string")
        fields = _cbor_map(body, "accelerator report body")
        cert = x509.load_der_x509_certificate(fields["certificate"])
    except (InvalidInput, KeyError, TypeError, ValueError, x509.InvalidVersion):
        raise BridgeRefused("accelerator report is malformed") from None
    if not all(isinstance(x, bytes) for x in (body, device_share, signature)):
        raise BridgeRefused("accelerator report is malformed")
    root = reference.vendor_root
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        raise BridgeRefused(
            "accelerator certificate does not chain to the pinned device root"
        ) from None
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise BridgeRefused("accelerator certificate is not valid now")
    if cert.serial_number in reference.revoked_serials:
        raise BridgeRefused(f"accelerator certificate {cert.serial_number:x} is revoked")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BridgeRefused("accelerator key is not ECDSA")
    digest = transcript_hash(nonce, enclave_share, device_share, body, params)
    try:
        key.verify(signature, digest, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise BridgeRefused(
            "accelerator report signature does not cover this handshake (stale nonce or"
            " tampered report)"
        ) from None
    rim = reference.rim()
    measured = fields.get("measurements")
    if not isinstance(measured, dict):
        raise BridgeRefused("accelerator report lacks measurements")
    for name, expected in rim["measurements"].items():
        got = measured.get(name)
        if not isinstance(got, str) or got.lower() != str(expected).lower():
            raise BridgeRefused(
                f"accelerator measurement {name} = {str(got)[:24]} is not in the reference values"
            )
    if fields.get("cc_mode") is not True:
        raise BridgeRefused("accelerator is not in confidential-computing mode")
    if fields.get("debug") is not False:
        raise BridgeRefused("accelerator is in debug mode")
    return VerifiedDevice(
        serial=cert.serial_number,
        subject=cert.subject.rfc4514_string(),
        measurements={k: str(v) for k, v in measured.items()},
        device_share=device_share,
        transcript=digest,
    )
