"""Accelerator identity, reference values (RIM) and the signed attestation report.

A simulated vendor root CA (P-384) issues each device's identity certificate and
signs the reference integrity manifest (RIM): the firmware and driver
measurements an audited image accepts.  The image pins the vendor root and the
RIM; the enclave verifies a device report against them (chain to the pinned
root, not revoked, nonce, signature over the transcript, RIM signature,
measurements, CC mode on and debug off) before any session key exists.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enclave_audit import strictjson
from enclave_audit.errors import BridgeRefused, InvalidInput
from enclave_audit.fsutil import read_bytes
from enclave_audit.x509load import load_certificate

REPORT_VERSION = 1
MAX_REPORT = 64 << 10
MEASUREMENT_KEYS = ("firmware", "driver", "vbios")
#: the simulated vendor's key is derived from this public label (simulation only)
SIMULATED_VENDOR_LABEL = b"enclave-audit simulated accelerator vendor root v1 - NOT A SECRET"
SIMULATED_VENDOR_ROOT = Path(__file__).with_name("simulated-vendor-root.pem")
_P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "enclave-audit simulated accelerator"),
        ]
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _derived_vendor_key() -> ec.EllipticCurvePrivateKey:
    seed = hashlib.sha384(SIMULATED_VENDOR_LABEL).digest()
    return ec.derive_private_key(
        int.from_bytes(seed, "big") % (_P384_ORDER - 1) + 1, ec.SECP384R1()
    )


def _root_cert(key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    name = _name("Simulated Accelerator Vendor Root CA")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA384())
    )


@dataclass(frozen=True)
class Vendor:
    """The simulated vendor: root CA key and certificate (SIMULATION ONLY)."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, now: dt.datetime) -> Vendor:
        """A fresh random vendor (tests: a root the image does not pin)."""
        key = ec.generate_private_key(ec.SECP384R1())
        return cls(key, _root_cert(key, now))

    def issue_device(self, serial: str, now: dt.datetime) -> Device:
        key = ec.generate_private_key(ec.SECP384R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"Simulated Accelerator {serial}"))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA384())
        )
        return Device(key, cert)

    def sign_rim(self, rim: dict[str, Any]) -> bytes:
        """The signed RIM: CBOR {rim: canonical JSON bytes, signature: ES384}."""
        body = json.dumps(rim, sort_keys=True, separators=(",", ":")).encode()
        signature = self.key.sign(body, ec.ECDSA(hashes.SHA384()))
        return cbor2.dumps({"rim": body, "signature": signature})

    @classmethod
    def simulated(cls) -> Vendor:
        """The project's simulated vendor: its key is derived from a PUBLIC label.

        Anyone can derive it, which is exactly right for a simulation and keeps
        private keys out of the repository and the image; the root certificate
        (public) is committed beside this module and pinned by the image.
        """
        key = _derived_vendor_key()
        cert = x509.load_pem_x509_certificate(read_bytes(SIMULATED_VENDOR_ROOT))
        if cert.public_key() != key.public_key():
            raise InvalidInput(f"{SIMULATED_VENDOR_ROOT}: does not match the simulated vendor key")
        return cls(key, cert)

    @classmethod
    def create_simulated_root(cls, now: dt.datetime) -> Vendor:
        """(Re)issue the simulated vendor's self-signed root for the derived key."""
        key = _derived_vendor_key()
        return cls(key, _root_cert(key, now))


@dataclass(frozen=True)
class Device:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


@dataclass(frozen=True)
class ReferenceValues:
    """What the audited image pins: vendor root, signed RIM, revoked device serials."""

    vendor_root: x509.Certificate
    signed_rim: bytes
    revoked_serials: frozenset[int] = frozenset()

    def rim(self) -> dict[str, Any]:
        """The RIM after checking the vendor's signature over it."""
        try:
            outer = cbor2.loads(self.signed_rim)
            body, signature = outer["rim"], outer["signature"]
            key = self.vendor_root.public_key()
            assert isinstance(key, ec.EllipticCurvePublicKey)
            key.verify(signature, body, ec.ECDSA(hashes.SHA384()))
            rim = json.loads(body)
        except InvalidSignature:
            raise BridgeRefused("reference values: RIM signature does not verify") from None
        except (cbor2.CBORDecodeError, KeyError, TypeError, ValueError, AssertionError):
            raise BridgeRefused("reference values: RIM is malformed") from None
        if not isinstance(rim, dict) or not isinstance(rim.get("measurements"), dict):
            raise BridgeRefused("reference values: RIM lacks measurements")
        return rim

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "vendor_root_pem": _pem(self.vendor_root).decode(),
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


def make_report(
    device: Device,
    *,
    nonce: bytes,
    enclave_share: bytes,
    device_share: bytes,
    measurements: dict[str, str],
    cc_mode: bool,
    debug: bool,
    version: str,
    params: bytes = b"",
) -> bytes:
    """The device's signed report (CBOR), covering the whole handshake transcript."""
    body = cbor2.dumps(
        {
            "version": REPORT_VERSION,
            "measurements": measurements,
            "firmware_version": version,
            "cc_mode": cc_mode,
            "debug": debug,
            "certificate": device.cert.public_bytes(serialization.Encoding.DER),
        }
    )
    digest = transcript_hash(nonce, enclave_share, device_share, body, params)
    signature = device.key.sign(digest, ec.ECDSA(hashes.SHA384()))
    return cbor2.dumps({"body": body, "device_share": device_share, "signature": signature})


def _strict_cbor(data: bytes) -> Any:
    """One CBOR item and nothing after it (trailing bytes are tampering)."""
    stream = io.BytesIO(data)
    value = cbor2.CBORDecoder(stream).decode()
    if stream.tell() != len(data):
        raise ValueError("trailing bytes after the CBOR item")
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
        outer = _strict_cbor(report)
        body, device_share, signature = outer["body"], outer["device_share"], outer["signature"]
        fields = _strict_cbor(body)
        cert = x509.load_der_x509_certificate(fields["certificate"])
    except (cbor2.CBORDecodeError, KeyError, TypeError, ValueError, RecursionError,
            x509.InvalidVersion):
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
