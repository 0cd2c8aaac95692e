"""HPKE (RFC 9180), base mode, for DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-GCM.

Written on ``cryptography`` primitives (X25519, HKDF-Extract/Expand through HMAC,
AES-GCM) because the runtime needs the exporter interface (RFC 9180 section 5.3)
to derive response keys, which ``cryptography``'s own single-shot HPKE lacks.
The enclave image runs this module too, so it imports only the standard library
and ``cryptography``.

The suite the project uses is KEM 0x0020, KDF 0x0001, AEAD 0x0002 (AES-256-GCM);
AES-128-GCM (0x0001) is implemented as well so the RFC's appendix A.1 vectors can
be checked byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MODE_BASE = 0x00
KEM_X25519_HKDF_SHA256 = 0x0020
KDF_HKDF_SHA256 = 0x0001
AEAD_AES_128_GCM = 0x0001
AEAD_AES_256_GCM = 0x0002

_NH = 32  # HKDF-SHA256 output size
_NSECRET = 32  # DHKEM(X25519) shared secret size
_NENC = 32
_NN = 12
_AEAD_NK = {AEAD_AES_128_GCM: 16, AEAD_AES_256_GCM: 32}


class HpkeError(Exception):
    """Decapsulation or decryption failed (wrong key, tampered data, bad length).

    Deliberately carries no detail about which step failed (no oracle).
    """


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or b"\x00" * _NH, ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    if length > 255 * _NH:
        raise HpkeError("HKDF-Expand length too large")
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled = length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info
    return _expand(prk, labeled, length)


_KEM_SUITE_ID = b"KEM" + KEM_X25519_HKDF_SHA256.to_bytes(2, "big")


def _extract_and_expand(dh: bytes, kem_context: bytes) -> bytes:
    eae_prk = _labeled_extract(_KEM_SUITE_ID, b"", b"eae_prk", dh)
    return _labeled_expand(_KEM_SUITE_ID, eae_prk, b"shared_secret", kem_context, _NSECRET)


def derive_key_pair(ikm: bytes) -> X25519PrivateKey:
    """DeriveKeyPair for DHKEM(X25519) (RFC 9180 section 7.1.3)."""
    dkp_prk = _labeled_extract(_KEM_SUITE_ID, b"", b"dkp_prk", ikm)
    sk = _labeled_expand(_KEM_SUITE_ID, dkp_prk, b"sk", b"", 32)
    return X25519PrivateKey.from_private_bytes(sk)


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def _dh(sk: X25519PrivateKey, pk: X25519PublicKey) -> bytes:
    try:
        dh = sk.exchange(pk)
    except ValueError:
        # all-zero output (small-order point): RFC 9180 section 7.1.4 says abort
        raise HpkeError("X25519 produced the all-zero shared secret") from None
    return dh


def encap(
    pk_r: X25519PublicKey, *, ephemeral: X25519PrivateKey | None = None
) -> tuple[bytes, bytes]:
    """Encap(pkR) -> (shared_secret, enc). ``ephemeral`` only for test vectors."""
    sk_e = ephemeral if ephemeral is not None else X25519PrivateKey.generate()
    dh = _dh(sk_e, pk_r)
    enc = _raw_public(sk_e.public_key())
    kem_context = enc + _raw_public(pk_r)
    return _extract_and_expand(dh, kem_context), enc


def decap(enc: bytes, sk_r: X25519PrivateKey) -> bytes:
    if len(enc) != _NENC:
        raise HpkeError("encapsulated key has the wrong length")
    try:
        pk_e = X25519PublicKey.from_public_bytes(enc)
    except ValueError:
        raise HpkeError("encapsulated key is not an X25519 public key") from None
    dh = _dh(sk_r, pk_e)
    kem_context = enc + _raw_public(sk_r.public_key())
    return _extract_and_expand(dh, kem_context)


@dataclass
class Context:
    """An HPKE encryption context (sender or recipient) with its sequence number."""

    suite_id: bytes
    aead_id: int
    key: bytes
    base_nonce: bytes
    exporter_secret: bytes
    seq: int = field(default=0)

    def _nonce(self) -> bytes:
        if self.seq >= (1 << (8 * _NN)) - 1:
            raise HpkeError("message limit reached")
        seq_bytes = self.seq.to_bytes(_NN, "big")
        return bytes(a ^ b for a, b in zip(self.base_nonce, seq_bytes, strict=True))

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        ct = AESGCM(self.key).encrypt(self._nonce(), plaintext, aad)
        self.seq += 1
        return ct

    def open(self, ciphertext: bytes, aad: bytes = b"") -> bytes:
        try:
            pt = AESGCM(self.key).decrypt(self._nonce(), ciphertext, aad)
        except (InvalidTag, ValueError):
            raise HpkeError("HPKE open failed") from None
        self.seq += 1
        return pt

    def export(self, exporter_context: bytes, length: int) -> bytes:
        return _labeled_expand(
            self.suite_id, self.exporter_secret, b"sec", exporter_context, length
        )


def _suite_id(aead_id: int) -> bytes:
    return (
        b"HPKE"
        + KEM_X25519_HKDF_SHA256.to_bytes(2, "big")
        + KDF_HKDF_SHA256.to_bytes(2, "big")
        + aead_id.to_bytes(2, "big")
    )


def key_schedule(shared_secret: bytes, info: bytes, *, aead_id: int = AEAD_AES_256_GCM) -> Context:
    """KeySchedule for mode_base (no PSK)."""
    if aead_id not in _AEAD_NK:
        raise HpkeError(f"unsupported AEAD id {aead_id:#06x}")
    suite_id = _suite_id(aead_id)
    psk_id_hash = _labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite_id, b"", b"info_hash", info)
    context = bytes([MODE_BASE]) + psk_id_hash + info_hash
    secret = _labeled_extract(suite_id, shared_secret, b"secret", b"")
    key = _labeled_expand(suite_id, secret, b"key", context, _AEAD_NK[aead_id])
    base_nonce = _labeled_expand(suite_id, secret, b"base_nonce", context, _NN)
    exporter_secret = _labeled_expand(suite_id, secret, b"exp", context, _NH)
    return Context(suite_id, aead_id, key, base_nonce, exporter_secret)


def setup_base_sender(
    pk_r: X25519PublicKey,
    info: bytes,
    *,
    aead_id: int = AEAD_AES_256_GCM,
    ephemeral: X25519PrivateKey | None = None,
) -> tuple[bytes, Context]:
    shared_secret, enc = encap(pk_r, ephemeral=ephemeral)
    return enc, key_schedule(shared_secret, info, aead_id=aead_id)


def setup_base_recipient(
    enc: bytes, sk_r: X25519PrivateKey, info: bytes, *, aead_id: int = AEAD_AES_256_GCM
) -> Context:
    return key_schedule(decap(enc, sk_r), info, aead_id=aead_id)


def public_key_from_bytes(raw: bytes) -> X25519PublicKey:
    if len(raw) != 32:
        raise HpkeError("an X25519 public key is 32 bytes")
    return X25519PublicKey.from_public_bytes(raw)


def response_keys(
    ctx: Context, enc: bytes, response_nonce: bytes, label: bytes
) -> tuple[bytes, bytes]:
    """OHTTP-style (RFC 9458 section 4.4) response key and nonce from the request context.

    ``secret = Export(label, Nk)``, ``salt = enc || response_nonce``,
    ``prk = Extract(salt, secret)``, key/nonce = ``Expand(prk, "key"/"nonce")``.
    """
    nk = _AEAD_NK[ctx.aead_id]
    secret = ctx.export(label, nk)
    prk = _extract(enc + response_nonce, secret)
    return _expand(prk, b"key", nk), _expand(prk, b"nonce", _NN)
