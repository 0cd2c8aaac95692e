"""Local signing keys: generation, loading, fingerprints and hints.

Private keys are PKCS#8 PEM (optionally encrypted with a passphrase taken from
an environment variable), created with mode 0600 from the start (the temp file
that :func:`enclave_audit.fsutil.atomic_write` renames into place is made by
``mkstemp``, which uses 0600).  Public keys are SubjectPublicKeyInfo PEM, the
form cosign, slsa-verifier and sigstore-js read.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import struct
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from enclave_audit.errors import EnclaveAuditError, KeyFileError, OutputError
from enclave_audit.fsutil import read_bytes, write_bytes_atomic

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

#: environment variable holding the passphrase of an encrypted private key.
PASSPHRASE_ENV = "ENCLAVE_AUDIT_KEY_PASSPHRASE"
_KEY_FILE_LIMIT = 64 << 10


class KeyType(StrEnum):
    ECDSA_P256 = "ecdsa-p256"
    ED25519 = "ed25519"


def key_type_of(key: PublicKey | PrivateKey) -> KeyType:
    """The supported type of ``key``; :class:`KeyFileError` for anything else."""
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return KeyType.ED25519
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return KeyType.ECDSA_P256
        raise KeyFileError(f"unsupported EC curve {key.curve.name}; use P-256 or Ed25519")
    raise KeyFileError(f"unsupported key type {type(key).__name__}; use P-256 or Ed25519")


def spki_der(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_pem(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_hint(key: PublicKey) -> str:
    """Sigstore bundle ``publicKey.hint``: base64(SHA-256(DER SPKI)) (sigstore-go's convention)."""
    return base64.b64encode(hashlib.sha256(spki_der(key)).digest()).decode()


def ssh_fingerprint(key: PublicKey) -> str:
    """OpenSSH-style ``SHA256:<unpadded base64>`` of the SSH wire-format public key.

    This is the key id go-securesystemslib computes (and so cosign/sigstore-go
    accept) when an envelope ``keyid`` is set.
    """
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        wire = _ssh_string(b"ssh-ed25519") + _ssh_string(raw)
    else:
        key_type_of(key)
        point = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        wire = _ssh_string(b"ecdsa-sha2-nistp256") + _ssh_string(b"nistp256") + _ssh_string(point)
    digest = hashlib.sha256(wire).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def load_public_key(path: Path) -> PublicKey:
    """A PEM SubjectPublicKeyInfo public key of a supported type."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm, TypeError):
        if b"PRIVATE KEY-----" in data:
            public = path.with_suffix(".pub")
            raise KeyFileError(
                f"{path}: this is a private key; verifying takes the public key",
                hint=f"give {public} (written beside it by 'enclave-audit keys generate')"
                if public != path
                else "export its public key: openssl pkey -in KEY -pubout",
            ) from None
        if data.lstrip().startswith(b"{"):
            raise KeyFileError(
                f"{path}: this is JSON, not a PEM public key",
                hint="is it the bundle? the bundle is the first argument, --key the .pub file",
            ) from None
        raise KeyFileError(f"{path}: not a PEM public key (SubjectPublicKeyInfo)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{path}: unsupported key type; use ECDSA P-256 or Ed25519")
    try:
        key_type_of(key)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc.message}") from None
    return key


def load_private_key(path: Path, *, passphrase: bytes | None = None) -> PrivateKey:
    """A PKCS#8/SEC1 PEM private key; refuses files readable by group or others."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if b"PUBLIC KEY-----" in _read_key_file(path)[:200]:
        raise KeyFileError(
            f"{path}: this is a public key; signing takes the private key",
            hint=f"give {path.with_suffix('.key')} (its pair from 'enclave-audit keys generate')",
        )
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: unsafe permissions {stat.S_IMODE(st.st_mode):04o}; "
            f"a private key must be 0600 (chmod 600 {path})"
        )
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        if passphrase is None:
            raise KeyFileError(
                f"{path}: key is encrypted; set {PASSPHRASE_ENV} to its passphrase"
            ) from None
        raise KeyFileError(f"{path}: key is not encrypted but a passphrase was given") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path}: not a PEM private key, or wrong passphrase") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path}: unsupported key type; use ECDSA P-256 or Ed25519")
    try:
        key_type_of(key)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc.message}") from None
    return key


def _read_key_file(path: Path) -> bytes:
    try:
        return read_bytes(path, limit=_KEY_FILE_LIMIT)
    except EnclaveAuditError as exc:  # InputNotFound / InvalidInput from fsutil
        raise KeyFileError(f"key file {exc.message}") from None


@dataclass(frozen=True)
class KeyPairFiles:
    private: Path
    public: Path
    key_type: KeyType
    fingerprint: str  # SHA256:... (ssh style)
    hint: str  # bundle publicKey.hint


def generate_key_pair(
    key_type: KeyType,
    prefix: Path,
    *,
    passphrase: bytes | None = None,
    overwrite: bool = False,
) -> KeyPairFiles:
    """Write ``PREFIX.key`` (0600, PKCS#8 PEM) and ``PREFIX.pub`` (SPKI PEM)."""
    private_path = prefix.with_name(prefix.name + ".key")
    public_path = prefix.with_name(prefix.name + ".pub")
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists():
                raise OutputError(f"{path} exists; refusing to overwrite a key (use --force)")
    private: PrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if key_type is KeyType.ECDSA_P256
        else ed25519.Ed25519PrivateKey.generate()
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public = private.public_key()
    write_bytes_atomic(private_path, pem, mode=0o600)
    write_bytes_atomic(public_path, spki_pem(public), mode=0o644)
    return KeyPairFiles(
        private=private_path,
        public=public_path,
        key_type=key_type,
        fingerprint=ssh_fingerprint(public),
        hint=key_hint(public),
    )


def passphrase_from_env(var: str = PASSPHRASE_ENV) -> bytes | None:
    value = os.environ.get(var)
    return value.encode() if value else None
