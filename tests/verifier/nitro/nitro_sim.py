"""Helpers for the Nitro attestation tests: real documents and a test-only simulation PKI.

The simulation PKI signs documents in the exact AWS format (untagged
COSE_Sign1, ES384, payload map in AWS key order, cabundle = [root, ...CAs])
with a local P-384 chain, so verifier rules can be exercised on chains that
differ from AWS's in one controlled way at a time.  (The reference enclave's
own simulator lives elsewhere; this is only a test double for the verifier.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from enclave_audit.cose import Sign1, sig_structure
from verifier.nitro import TrustRoot

FIXTURES = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "nitro"
BASE_TIME = datetime(2026, 1, 3, 20, 41, 7, 402000, tzinfo=UTC)
ZERO48 = bytes(48)


def expected_documents() -> list[dict[str, Any]]:
    return list(json.loads((FIXTURES / "expected.json").read_text())["documents"])


def document_ids() -> list[str]:
    return [Path(d["file"]).stem for d in expected_documents()]


def read_document(entry: dict[str, Any]) -> bytes:
    from verifier.nitro import unwrap_transport

    return unwrap_transport((FIXTURES / entry["file"]).read_bytes())


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "enclave-audit tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass
class CertSpec:
    """How to issue one certificate; defaults give the AWS profile."""

    cn: str
    ca: bool
    path_length: int | None = None
    key_cert_sign: bool = True
    digital_signature: bool = True
    basic_constraints: bool = True
    bc_critical: bool = True
    not_before: datetime = BASE_TIME - timedelta(days=1)
    not_after: datetime = BASE_TIME + timedelta(days=1)
    curve: ec.EllipticCurve = field(default_factory=ec.SECP384R1)
    hash: hashes.HashAlgorithm = field(default_factory=hashes.SHA384)
    critical_unknown: bool = False


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def issue(spec: CertSpec, issuer: Issued | None) -> Issued:
    key = ec.generate_private_key(spec.curve)
    subject = _name(spec.cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
    )
    if spec.basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=spec.ca, path_length=spec.path_length if spec.ca else None),
            critical=spec.bc_critical,
        )
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=spec.digital_signature,
            content_commitment=not spec.ca,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=spec.ca and spec.key_cert_sign,
            crl_sign=spec.ca,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=spec.ca,
    )
    if spec.critical_unknown:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
            critical=True,
        )
    signer = key if issuer is None else issuer.key
    return Issued(builder.sign(signer, spec.hash), key)


@dataclass
class SimPki:
    root: Issued
    intermediates: list[Issued]  # nearest to the root first (cabundle order)
    leaf: Issued

    @property
    def trust_root(self) -> TrustRoot:
        return TrustRoot.from_pem(self.root.pem, name="test simulation root")

    @property
    def cabundle(self) -> list[bytes]:
        return [self.root.der, *(i.der for i in self.intermediates)]


def build_pki(
    *,
    leaf: CertSpec | None = None,
    intermediates: list[CertSpec] | None = None,
    root: CertSpec | None = None,
) -> SimPki:
    root_spec = root or CertSpec("sim root", ca=True, not_after=BASE_TIME + timedelta(days=3650))
    root_issued = issue(root_spec, None)
    specs = (
        intermediates
        if intermediates is not None
        else [
            CertSpec("sim regional", ca=True, path_length=1),
            CertSpec("sim instance", ca=True, path_length=0),
        ]
    )
    chain: list[Issued] = []
    issuer = root_issued
    for spec in specs:
        issuer = issue(spec, issuer)
        chain.append(issuer)
    leaf_spec = leaf or CertSpec(
        "i-0123456789abcdef0-enc0123456789abcdef.sim",
        ca=False,
        not_before=BASE_TIME - timedelta(minutes=1),
        not_after=BASE_TIME + timedelta(hours=3),
    )
    return SimPki(root_issued, chain, issue(leaf_spec, issuer))


def default_fields(pki: SimPki, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "module_id": "i-0123456789abcdef0-enc0123456789abcdef",
        "digest": "SHA384",
        "timestamp": int(BASE_TIME.timestamp() * 1000),
        "pcrs": {i: (bytes([i + 1]) * 48 if i < 5 else ZERO48) for i in range(16)},
        "certificate": pki.leaf.der,
        "cabundle": pki.cabundle,
        "public_key": None,
        "user_data": b"user data",
        "nonce": bytes.fromhex("00112233445566778899aabbccddeeff"),
    }
    fields.update(overrides)
    return fields


def _indefinite_map(fields: dict[str, Any]) -> bytes:
    return b"\xbf" + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in fields.items()) + b"\xff"


def sign_document(
    key: ec.EllipticCurvePrivateKey,
    fields: dict[str, Any] | None = None,
    *,
    payload: bytes | None = None,
    protected: bytes = b"\xa1\x01\x38\x22",
    tagged: bool = False,
    indefinite: bool = False,
) -> bytes:
    """An AWS-format document over ``fields`` (or raw ``payload`` bytes) signed with ``key``."""
    if payload is None:
        assert fields is not None
        payload = _indefinite_map(fields) if indefinite else cbor2.dumps(fields)
    der = key.sign(sig_structure(protected, payload), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    return Sign1(protected, payload, signature, tagged=tagged).encode()


SignFn = Callable[..., bytes]
