"""HPKE (RFC 9180) against the RFC's appendix A.1 vectors and pyca's independent HPKE."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hpke as pyca_hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from enclave_runtime import hpke

# RFC 9180 A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, mode_base
A1 = {
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "ikmE": "7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234",
    "skEm": "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
    "pkEm": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    "ikmR": "6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037",
    "skRm": "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
    "pkRm": "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
    "shared_secret": "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
    "key": "4531685d41d65f03dc48f6b8302c05b0",
    "base_nonce": "56d890e5accaaf011cff4b7d",
    "exporter_secret": "45ff1c2e220db587171952c0592d5f5ebe103f1561a2614e38f2ffd47e99e3f8",
}
A1_PT = bytes.fromhex("4265617574792069732074727574682c20747275746820626561757479")
A1_ENCRYPTIONS = [
    (
        0,
        "436f756e742d30",
        "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
    ),
    (
        1,
        "436f756e742d31",
        "af2d7e9ac9ae7e270f46ba1f975be53c09f8d875bdc8535458c2494e8a6eab251c03d0c22a56b8ca42c2063b84",
    ),
    (
        2,
        "436f756e742d32",
        "498dfcabd92e8acedc281e85af1cb4e3e31c7dc394a1ca20e173cb72516491588d96a19ad4a683518973dcc180",
    ),
]
A1_EXPORTS = [
    ("", "3853fe2b4035195a573ffc53856e77058e15d9ea064de3e59f4961d0095250ee"),
    ("00", "2e8f0b54673c7029649d4eb9d5e33bf1872cf76d623ff164ac185da9e88c21a5"),
    ("54657374436f6e74657874", "e9e43065102c3836401bed8c3c3c75ae46be1639869391d62c61f1ec7af54931"),
]


def _h(name: str) -> bytes:
    return bytes.fromhex(A1[name])


def test_derive_key_pair_matches_rfc() -> None:
    sk_e = hpke.derive_key_pair(_h("ikmE"))
    assert sk_e.private_bytes_raw() == _h("skEm")
    assert sk_e.public_key().public_bytes_raw() == _h("pkEm")
    sk_r = hpke.derive_key_pair(_h("ikmR"))
    assert sk_r.private_bytes_raw() == _h("skRm")
    assert sk_r.public_key().public_bytes_raw() == _h("pkRm")


def test_sender_matches_rfc_a1() -> None:
    sk_e = X25519PrivateKey.from_private_bytes(_h("skEm"))
    pk_r = hpke.public_key_from_bytes(_h("pkRm"))
    shared, enc = hpke.encap(pk_r, ephemeral=sk_e)
    assert enc == _h("pkEm")
    assert shared == _h("shared_secret")
    enc2, ctx = hpke.setup_base_sender(
        pk_r, _h("info"), aead_id=hpke.AEAD_AES_128_GCM, ephemeral=sk_e
    )
    assert enc2 == enc
    assert (ctx.key, ctx.base_nonce, ctx.exporter_secret) == (
        _h("key"),
        _h("base_nonce"),
        _h("exporter_secret"),
    )
    for seq, aad, ct in A1_ENCRYPTIONS:
        assert ctx.seq == seq
        assert ctx.seal(A1_PT, bytes.fromhex(aad)).hex() == ct
    for context, value in A1_EXPORTS:
        assert ctx.export(bytes.fromhex(context), 32).hex() == value


def test_recipient_matches_rfc_a1() -> None:
    sk_r = X25519PrivateKey.from_private_bytes(_h("skRm"))
    ctx = hpke.setup_base_recipient(_h("pkEm"), sk_r, _h("info"), aead_id=hpke.AEAD_AES_128_GCM)
    for _, aad, ct in A1_ENCRYPTIONS:
        assert ctx.open(bytes.fromhex(ct), bytes.fromhex(aad)) == A1_PT
    for context, value in A1_EXPORTS:
        assert ctx.export(bytes.fromhex(context), 32).hex() == value


def test_recipient_rejects_tampering_and_replay() -> None:
    sk_r = X25519PrivateKey.from_private_bytes(_h("skRm"))
    ctx = hpke.setup_base_recipient(_h("pkEm"), sk_r, _h("info"), aead_id=hpke.AEAD_AES_128_GCM)
    bad = bytearray(bytes.fromhex(A1_ENCRYPTIONS[0][2]))
    bad[0] ^= 1
    with pytest.raises(hpke.HpkeError):
        ctx.open(bytes(bad), bytes.fromhex(A1_ENCRYPTIONS[0][1]))
    assert ctx.open(bytes.fromhex(A1_ENCRYPTIONS[0][2]), bytes.fromhex(A1_ENCRYPTIONS[0][1]))
    # replaying message 0 at sequence 1 fails
    with pytest.raises(hpke.HpkeError):
        ctx.open(bytes.fromhex(A1_ENCRYPTIONS[0][2]), bytes.fromhex(A1_ENCRYPTIONS[0][1]))
    with pytest.raises(hpke.HpkeError):
        hpke.decap(b"\x00" * 31, sk_r)


_PYCA_SUITE = pyca_hpke.Suite(
    pyca_hpke.KEM.X25519, pyca_hpke.KDF.HKDF_SHA256, pyca_hpke.AEAD.AES_256_GCM
)


def test_aes256_suite_interoperates_with_pyca_both_ways() -> None:
    """Suite 0x0020/0x0001/0x0002 (the one the project uses) against pyca's HPKE."""
    sk_r = X25519PrivateKey.generate()
    info = b"enclave-audit interop"
    blob = _PYCA_SUITE.encrypt(b"what is the capital of France?", sk_r.public_key(), info=info)
    ctx = hpke.setup_base_recipient(blob[:32], sk_r, info)
    assert ctx.open(blob[32:]) == b"what is the capital of France?"
    enc, sctx = hpke.setup_base_sender(sk_r.public_key(), info)
    assert _PYCA_SUITE.decrypt(enc + sctx.seal(b"Paris"), sk_r, info=info) == b"Paris"


def test_response_keys_agree_between_sender_and_recipient() -> None:
    sk_r = X25519PrivateKey.generate()
    enc, sctx = hpke.setup_base_sender(sk_r.public_key(), b"i")
    rctx = hpke.setup_base_recipient(enc, sk_r, b"i")
    nonce = b"\x07" * 32
    assert hpke.response_keys(sctx, enc, nonce, b"resp") == hpke.response_keys(
        rctx, enc, nonce, b"resp"
    )
    assert hpke.response_keys(sctx, enc, nonce, b"resp") != hpke.response_keys(
        sctx, enc, b"\x08" * 32, b"resp"
    )


def test_small_order_encapsulated_key_is_refused() -> None:
    """RFC 9180 7.1.4: an all-zero X25519 shared secret must abort decapsulation."""
    sk_r = X25519PrivateKey.generate()
    with pytest.raises(hpke.HpkeError):
        hpke.decap(bytes(32), sk_r)
