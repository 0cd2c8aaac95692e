"""The local simulation CA: a P-384 root, one intermediate, and per-launch leaves.

Shaped like the AWS Nitro chain (``specs/nitro.md`` section 5.2): every CA is
P-384 / ecdsa-with-SHA384 with basicConstraints and keyUsage keyCertSign; the leaf
has only basicConstraints (critical, CA false) and keyUsage digitalSignature +
nonRepudiation, no AKI/SKI, and lives 3 hours. Its names say "simulated" so no
document it signs can be mistaken for AWS's, and AWS's root never verifies it.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enclave_audit.errors import InvalidInput, KeyFileError
from enclave_audit.fsutil import atomic_directory, read_bytes, write_bytes_atomic
from enclave_runtime.x509load import load_certificate

ROOT_CERT = "root.pem"
ROOT_KEY = "root.key.pem"
INTERMEDIATE_CERT = "intermediate.pem"
INTERMEDIATE_KEY = "intermediate.key.pem"
LEAF_LIFETIME = dt.timedelta(hours=3, seconds=3)
ROOT_CN = "enclave-audit simulated nitro-enclaves root"


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "enclave-audit simulation"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "NOT AWS"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class SimulationCa:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, *, now: dt.datetime | None = None) -> SimulationCa:
        now = now or dt.datetime.now(dt.UTC)
        root_key = ec.generate_private_key(ec.SECP384R1())
        root_name = _name(ROOT_CN)
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
            )
            .sign(root_key, hashes.SHA384())
        )
        inter_key = ec.generate_private_key(ec.SECP384R1())
        inter = (
            x509.CertificateBuilder()
            .subject_name(_name("enclave-audit simulated region CA"))
            .issuer_name(root_name)
            .public_key(inter_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(inter_key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                critical=False,
            )
            .sign(root_key, hashes.SHA384())
        )
        return cls(root, root_key, inter, inter_key)

    def save(self, directory: Path) -> None:
        """Write the CA to ``directory`` (whole or not at all); keys are mode 0600."""
        with atomic_directory(directory) as staging:
            pem = serialization.Encoding.PEM
            write_bytes_atomic(staging / ROOT_CERT, self.root.public_bytes(pem))
            write_bytes_atomic(staging / INTERMEDIATE_CERT, self.intermediate.public_bytes(pem))
            for name, key in ((ROOT_KEY, self.root_key), (INTERMEDIATE_KEY, self.intermediate_key)):
                data = key.private_bytes(
                    pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
                write_bytes_atomic(staging / name, data, mode=0o600)

    @classmethod
    def load(cls, directory: Path) -> SimulationCa:
        def cert(name: str) -> x509.Certificate:
            return load_certificate(
                read_bytes(directory / name), what=str(directory / name), error=InvalidInput
            )

        def key(name: str) -> ec.EllipticCurvePrivateKey:
            path = directory / name
            data = read_bytes(path)
            if os.stat(path).st_mode & 0o077:
                raise KeyFileError(f"{path}: private key readable by group/others (chmod 600)")
            try:
                loaded = serialization.load_pem_private_key(data, password=None)
            except (ValueError, TypeError):
                raise KeyFileError(f"{path}: not an unencrypted PEM private key") from None
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise KeyFileError(f"{path}: not an EC private key")
            return loaded

        return cls(cert(ROOT_CERT), key(ROOT_KEY), cert(INTERMEDIATE_CERT), key(INTERMEDIATE_KEY))

    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def issue_leaf(
        self, module_id: str, *, now: dt.datetime | None = None
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A per-launch signing certificate, AWS-like: 3 h, no AKI/SKI."""
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        key = ec.generate_private_key(ec.SECP384R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{module_id}.simulated.aws"))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + LEAF_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=True,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=False,
            )
            .sign(self.intermediate_key, hashes.SHA384())
        )
        return leaf, key


def new_module_id() -> tuple[str, str]:
    """(instance id, module id) in AWS's shapes: ``i-<17 hex>`` and ``<id>-enc<16 hex>``."""
    instance = "i-" + secrets.token_hex(9)[:17]
    return instance, f"{instance}-enc{secrets.token_hex(8)}"
