"""``python3 -m enclave_runtime --self-test``: prove the image's runtime works.

Run by the builder's test inside the built root file system (chroot), so it
exercises the interpreter, NumPy and the pinned wheels that the image really
carries. It imports every runtime module, checks known-answer vectors for every
primitive the runtime relies on (RFC 9180 HPKE, SHA-384 / PCR extend, AES-GCM,
RSA-OAEP + the KMS CMS envelope, the NSM request encodings of the device
protocol) and runs a forward pass of a small deterministic model written on the
spot (F32 GGUF) through the same loader the enclave uses, checking that
incremental (KV-cache) decoding agrees with a full forward pass.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import time
from collections.abc import Callable

import numpy as np

from enclave_runtime.errors import EnclaveAuditError, Internal


class SelfTestFailed(Internal):
    """A known-answer test of the runtime failed (the image is broken)."""


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise SelfTestFailed(f"self-test: {what}")


def kat_hpke() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from enclave_runtime import hpke

    # RFC 9180 appendix A.1.1 (AES-128-GCM) - key schedule, AEAD and exporter
    sk_e = X25519PrivateKey.from_private_bytes(
        bytes.fromhex("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736")
    )
    pk_r = hpke.public_key_from_bytes(
        bytes.fromhex("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")
    )
    info = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")
    enc, ctx = hpke.setup_base_sender(pk_r, info, aead_id=hpke.AEAD_AES_128_GCM, ephemeral=sk_e)
    ct = ctx.seal(
        bytes.fromhex("4265617574792069732074727574682c20747275746820626561757479"),
        bytes.fromhex("436f756e742d30"),
    )
    _check(
        ct.hex() == "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a"
        "52ae8218a355a96d8770ac83d07bea87e13c512a",
        "HPKE RFC 9180 A.1.1 ciphertext",
    )
    _check(
        ctx.export(b"", 32).hex()
        == "3853fe2b4035195a573ffc53856e77058e15d9ea064de3e59f4961d0095250ee",
        "HPKE RFC 9180 A.1.1 exporter",
    )
    # the suite in use (AES-256-GCM) round trip
    sk = X25519PrivateKey.generate()
    enc, sctx = hpke.setup_base_sender(sk.public_key(), b"self-test")
    rctx = hpke.setup_base_recipient(enc, sk, b"self-test")
    _check(rctx.open(sctx.seal(b"x")) == b"x", "HPKE AES-256-GCM round trip")


def kat_hashes() -> None:
    _check(
        hashlib.sha384(b"abc").hexdigest()
        == "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
        "8086072ba1e7cc2358baeca134c825a7",
        "SHA-384('abc') FIPS 180-2 vector",
    )


def kat_aes_gcm() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    # GCM spec test case 13 (AES-256, zero key, zero IV, empty plaintext): tag only
    tag = AESGCM(bytes(32)).encrypt(bytes(12), b"", b"")
    _check(tag.hex() == "530f8afbc74536b9a963b4f1c4cb738b", "AES-256-GCM test case 13")


def kat_kms_envelope() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from enclave_runtime import cms

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    secret = bytes(range(32))
    envelope = cms.build_enveloped_data(secret, key.public_key())
    _check(envelope[:2] == b"\x30\x80", "CMS envelope is BER indefinite-length")
    _check(cms.open_enveloped_data(envelope, key) == secret, "CMS RSA-OAEP/AES-CBC round trip")


def kat_nsm_encodings() -> None:
    from enclave_runtime.nsm import protocol

    vectors: list[tuple[bytes, str]] = [
        (protocol.describe_pcr(0), "a16b4465736372696265504352a165696e64657800"),
        (
            protocol.extend_pcr(16, b"abc"),
            "a169457874656e64504352a265696e64657810646461746143616263",
        ),
        (protocol.lock_pcr(16), "a1674c6f636b504352a165696e64657810"),
        (protocol.describe_nsm(), "6b44657363726962654e534d"),
        (protocol.get_random(), "6947657452616e646f6d"),
        (
            protocol.attestation(),
            "a16b4174746573746174696f6ea369757365725f64617461f6656e6f6e6365f66a7075626c69635f6b6579f6",
        ),
    ]
    for encoded, expected in vectors:
        _check(encoded.hex() == expected, f"NSM request encoding {expected[:24]}...")


# --- a small deterministic GGUF (F32 tensors) --------------------------------------


def _gguf_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _gguf_kv(key: str, value: object) -> bytes:
    out = _gguf_string(key)
    if isinstance(value, float):
        return out + struct.pack("<If", 6, value)
    if isinstance(value, int):
        return out + struct.pack("<II", 4, value)
    if isinstance(value, str):
        return out + struct.pack("<I", 8) + _gguf_string(value)
    assert isinstance(value, list)
    if value and isinstance(value[0], str):
        return (
            out + struct.pack("<IIQ", 9, 8, len(value)) + b"".join(_gguf_string(v) for v in value)
        )
    return out + struct.pack("<IIQ", 9, 5, len(value)) + struct.pack(f"<{len(value)}i", *value)


def small_gguf(seed: int = 7) -> bytes:
    """A two-layer SmolLM2-shaped model with F32 weights (the tiny model's shapes)."""
    from enclave_runtime.model.tiny import DIMS, tiny_vocab

    rng = np.random.default_rng(seed)
    tokens, merges, types = tiny_vocab()
    d, heads, kv = DIMS["embedding_length"], DIMS["head_count"], DIMS["head_count_kv"]
    hd, ffn = d // heads, DIMS["feed_forward_length"]
    meta: list[tuple[str, object]] = [
        ("general.architecture", "llama"),
        ("llama.block_count", DIMS["block_count"]),
        ("llama.context_length", DIMS["context_length"]),
        ("llama.embedding_length", d),
        ("llama.feed_forward_length", ffn),
        ("llama.attention.head_count", heads),
        ("llama.attention.head_count_kv", kv),
        ("llama.rope.freq_base", 10000.0),
        ("llama.attention.layer_norm_rms_epsilon", 1e-5),
        ("llama.vocab_size", len(tokens)),
        ("llama.rope.dimension_count", hd),
        ("tokenizer.ggml.model", "gpt2"),
        ("tokenizer.ggml.tokens", tokens),
        ("tokenizer.ggml.token_type", types),
        ("tokenizer.ggml.merges", merges),
        ("tokenizer.ggml.bos_token_id", 1),
        ("tokenizer.ggml.eos_token_id", 2),
    ]
    tensors: list[tuple[str, np.ndarray]] = [
        ("token_embd.weight", rng.standard_normal((len(tokens), d)) * 0.5)
    ]
    for i in range(DIMS["block_count"]):
        tensors += [
            (f"blk.{i}.attn_norm.weight", 1.0 + 0.1 * rng.standard_normal(d)),
            (f"blk.{i}.attn_q.weight", rng.standard_normal((d, d)) * 0.3),
            (f"blk.{i}.attn_k.weight", rng.standard_normal((kv * hd, d)) * 0.3),
            (f"blk.{i}.attn_v.weight", rng.standard_normal((kv * hd, d)) * 0.3),
            (f"blk.{i}.attn_output.weight", rng.standard_normal((d, d)) * 0.2),
            (f"blk.{i}.ffn_norm.weight", 1.0 + 0.1 * rng.standard_normal(d)),
            (f"blk.{i}.ffn_gate.weight", rng.standard_normal((ffn, d)) * 0.2),
            (f"blk.{i}.ffn_up.weight", rng.standard_normal((ffn, d)) * 0.2),
            (f"blk.{i}.ffn_down.weight", rng.standard_normal((d, ffn)) * 0.2),
        ]
    tensors.append(("output_norm.weight", 1.0 + 0.1 * rng.standard_normal(d)))
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    header += b"".join(_gguf_kv(k, v) for k, v in meta)
    blobs: list[bytes] = []
    offset = 0
    for name, array in tensors:
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header += _gguf_string(name) + struct.pack("<I", array.ndim)
        header += b"".join(struct.pack("<Q", n) for n in reversed(array.shape))
        header += struct.pack("<IQ", 0, offset)
        pad = -len(data) % 32
        blobs.append(data + bytes(pad))
        offset += len(data) + pad
    header += bytes(-len(header) % 32)
    return header + b"".join(blobs)


def forward_pass() -> None:
    from enclave_runtime.model.chat import ChatModel

    chat = ChatModel.from_gguf(small_gguf(), what="self-test model")
    ids = chat.prompt_ids(chat._messages("What is the capital of France?"))
    model = chat.model
    full = model.forward(ids, model.new_cache(len(ids)))
    _check(full.shape == (len(ids), model.config.vocab_size), "forward pass logits shape")
    _check(bool(np.isfinite(full).all()), "forward pass logits are finite")
    cache = model.new_cache(len(ids))
    model.forward(ids[:-1], cache)
    step = model.forward(ids[-1:], cache)
    _check(
        bool(np.allclose(step[-1], full[-1], rtol=1e-3, atol=1e-3)),
        "KV-cache decoding agrees with the full forward pass",
    )
    first = chat.generate("What is the capital of France?", max_new_tokens=6)
    again = chat.generate("What is the capital of France?", max_new_tokens=6)
    _check(first.token_ids == again.token_ids, "greedy generation is deterministic")


def import_everything() -> None:
    import importlib

    for name in (
        "cbor2",
        "cryptography",
        "boto3",
        "botocore",
        "enclave_runtime.hpke",
        "enclave_runtime.cms",
        "enclave_runtime.nsm.client",
        "enclave_runtime.nsm.protocol",
        "enclave_runtime.app",
        "enclave_runtime.channels",
        "enclave_runtime.wire",
        "enclave_runtime.model_loader",
        "enclave_runtime.model.chat",
    ):
        importlib.import_module(name)


CHECKS: tuple[tuple[str, Callable[[], None]], ...] = (
    ("imports", import_everything),
    ("sha384", kat_hashes),
    ("aes-256-gcm", kat_aes_gcm),
    ("hpke rfc9180", kat_hpke),
    ("kms cms envelope", kat_kms_envelope),
    ("nsm encodings", kat_nsm_encodings),
    ("model forward pass", forward_pass),
)


def run() -> int:
    """Run every check; print one line each; 0 when all pass."""
    failed = 0
    for name, check in CHECKS:
        t0 = time.perf_counter()
        try:
            check()
        except (EnclaveAuditError, ImportError, AssertionError, ValueError) as exc:
            failed += 1
            print(f"FAIL {name}: {exc}", flush=True)
            continue
        print(f"ok   {name} ({time.perf_counter() - t0:.2f}s)", flush=True)
    print("self-test: " + ("FAILED" if failed else "passed"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run())
