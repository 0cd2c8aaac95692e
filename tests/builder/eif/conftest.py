"""Small real inputs for EIF tests: random kernel/ramdisk bytes and a P-384 signing pair."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Parts:
    kernel: Path
    boot: Path
    app: Path
    cmdline: str = "console=ttyS0 reboot=k panic=30"


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    rng = __import__("random").Random(1234)
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(rng.randbytes(300_000))
    boot = tmp_path / "boot.cpio"
    boot.write_bytes(rng.randbytes(70_001))
    app = tmp_path / "app.cpio"
    app.write_bytes(rng.randbytes(1_234_567))
    return Parts(kernel, boot, app)


@dataclass(frozen=True)
class SigningPair:
    cert: Path
    key: Path
    cert_pem: bytes


def make_signing_pair(
    directory: Path, name: str = "signer", curve: ec.EllipticCurve | None = None
) -> SigningPair:
    key = ec.generate_private_key(curve or ec.SECP384R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "enclave-audit tests"),
        ]
    )
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(os.urandom(8), "big"))
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA384())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path = directory / f"{name}.crt.pem"
    key_path = directory / f"{name}.key.pem"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return SigningPair(cert_path, key_path, cert_pem)


@pytest.fixture
def signing_pair(tmp_path: Path) -> SigningPair:
    return make_signing_pair(tmp_path)


@pytest.fixture
def make_signer(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Factory: make_signer(name, curve) -> SigningPair in tmp_path."""

    def make(name: str = "signer", curve: ec.EllipticCurve | None = None) -> SigningPair:
        return make_signing_pair(tmp_path, name, curve)

    return make
