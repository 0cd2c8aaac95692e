"""The simulated accelerator vendor: root CA, device identities, signed RIM and reports.

SIMULATION ONLY, host side.  The vendor's root key is derived from a public label,
its certificate is committed beside this module and pinned (with the signed RIM) in
the image's reference values; the accelerator service (:mod:`.service`) signs each
handshake's report with a device key this vendor issued.  The enclave's side, which
verifies those reports, is :mod:`enclave_runtime.gpu_bridge.attestation`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enclave_audit.errors import InvalidInput
from enclave_audit.fsutil import read_bytes
from enclave_runtime.gpu_bridge.attestation import REPORT_VERSION, transcript_hash

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
