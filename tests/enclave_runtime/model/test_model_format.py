"""CIMF v1: round trips and every kind of tampering, on the serial and the parallel path."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from enclave_audit.errors import InvalidInput, KeyFileError, ModelTampered
from enclave_runtime import model_format as mf
from reference_enclave import model_files as files

KEY = bytes(range(32))
CHUNK = 4096
Decrypt = Callable[[Path, bytes], bytes]


def _serial(path: Path, key: bytes, pinned: bytes | None = None) -> bytes:
    with path.open("rb") as fh:
        return bytes(mf.decrypt_model(fh, key, expected_sha256=pinned))


def _parallel(path: Path, key: bytes, pinned: bytes | None = None) -> bytes:
    return bytes(files.decrypt_model_file(path, key, workers=2, expected_sha256=pinned))


PATHS = pytest.mark.parametrize("decrypt", [_serial, _parallel], ids=["serial", "parallel"])


def _encrypt(tmp_path: Path, data: bytes, name: str = "m", key: bytes = KEY) -> Path:
    src = tmp_path / f"{name}.bin"
    src.write_bytes(data)
    dst = tmp_path / f"{name}.cimf"
    files.encrypt_model(
        src,
        dst,
        key,
        chunk_size=CHUNK,
        model_id="tiny",
        model_version="1",
        encryption_context={"model": "tiny", "env": "test"},
    )
    return dst


@pytest.fixture
def plain() -> bytes:
    return os.urandom(5 * CHUNK + 123)  # six chunks, the last one short


@PATHS
@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_round_trip(tmp_path: Path, decrypt: Decrypt, size: int) -> None:
    data = os.urandom(size)
    enc = _encrypt(tmp_path, data)
    assert decrypt(enc, KEY) == data
    header = mf.parse_header(enc.read_bytes()[: mf.read_header(enc.open("rb")).header_length])
    assert header.chunk_count == max(1, -(-size // CHUNK))
    assert enc.stat().st_size == header.file_length
    assert header.plaintext_sha256 == hashlib.sha256(data).digest()
    assert dict(header.encryption_context) == {"env": "test", "model": "tiny"}


def test_same_key_fresh_salt_per_file(tmp_path: Path, plain: bytes) -> None:
    a = _encrypt(tmp_path, plain, "a").read_bytes()
    b = _encrypt(tmp_path, plain, "b").read_bytes()
    assert a != b  # random file salt -> different per-file keys


def _chunks(enc: Path) -> tuple[bytes, list[bytes], mf.ModelHeader]:
    data = enc.read_bytes()
    header = mf.read_header(io.BytesIO(data))
    parts = [
        data[header.chunk_offset(i) : header.chunk_offset(i) + header.chunk_plain_len(i) + 16]
        for i in range(header.chunk_count)
    ]
    assert header.raw + b"".join(parts) == data
    return header.raw, parts, header


@PATHS
def test_bit_flips_anywhere_are_detected(tmp_path: Path, decrypt: Decrypt, plain: bytes) -> None:
    enc = _encrypt(tmp_path, plain)
    data = enc.read_bytes()
    header_len = mf.read_header(io.BytesIO(data)).header_length
    # every header byte after the magic/version/alg, and samples across the chunks
    positions = [*range(8, header_len), *range(header_len, len(data), 997), len(data) - 1]
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 0x01
        enc.write_bytes(bytes(bad))
        with pytest.raises(ModelTampered):
            decrypt(enc, KEY)


@PATHS
def test_truncation_is_detected(tmp_path: Path, decrypt: Decrypt, plain: bytes) -> None:
    enc = _encrypt(tmp_path, plain)
    raw, parts, _ = _chunks(enc)
    cuts = [
        raw + b"".join(parts[:-1]),  # final chunk dropped, at a chunk boundary
        raw + b"".join(parts[:3]),
        raw,  # header only
        enc.read_bytes()[:-1],
        enc.read_bytes()[: len(raw) + 100],
        raw[:-3],
    ]
    for cut in cuts:
        enc.write_bytes(cut)
        with pytest.raises(ModelTampered, match=r"truncated|incomplete"):
            decrypt(enc, KEY)


@PATHS
def test_extension_reorder_duplicate(tmp_path: Path, decrypt: Decrypt, plain: bytes) -> None:
    enc = _encrypt(tmp_path, plain)
    raw, p, _ = _chunks(enc)
    variants = {
        "appended byte": raw + b"".join(p) + b"\0",
        "duplicated final": raw + b"".join(p) + p[-1],
        "swapped 1,2": raw + p[0] + p[2] + p[1] + b"".join(p[3:]),
        "duplicated 0 over 1": raw + p[0] + p[0] + b"".join(p[2:]),
    }
    for name, body in variants.items():
        enc.write_bytes(body)
        with pytest.raises(ModelTampered, match=r"authentication|after the final|truncated"):
            decrypt(enc, KEY)
        assert name


@PATHS
def test_splicing_from_another_file_is_detected(
    tmp_path: Path, decrypt: Decrypt, plain: bytes
) -> None:
    enc_a = _encrypt(tmp_path, plain, "a")
    enc_b = _encrypt(tmp_path, plain, "b")  # same key, same plaintext, other salt
    raw_a, pa, _ = _chunks(enc_a)
    raw_b, pb, _ = _chunks(enc_b)
    target = tmp_path / "spliced.cimf"
    for body in (
        raw_a + pa[0] + pb[1] + b"".join(pa[2:]),  # one foreign chunk
        raw_a + b"".join(pb),  # all chunks of the other file
        raw_b + b"".join(pa),
    ):  # the other file's header
        target.write_bytes(body)
        with pytest.raises(ModelTampered, match="authentication"):
            decrypt(target, KEY)


@PATHS
def test_wrong_key_is_detected(tmp_path: Path, decrypt: Decrypt, plain: bytes) -> None:
    enc = _encrypt(tmp_path, plain)
    with pytest.raises(ModelTampered, match="wrong data key"):
        decrypt(enc, bytes(32))


@PATHS
def test_pinned_digest(tmp_path: Path, decrypt: Decrypt, plain: bytes) -> None:
    enc = _encrypt(tmp_path, plain)
    assert decrypt(enc, KEY, hashlib.sha256(plain).digest()) == plain  # type: ignore[call-arg]
    with pytest.raises(ModelTampered, match="not the pinned"):
        decrypt(enc, KEY, hashlib.sha256(b"other").digest())  # type: ignore[call-arg]


def test_decrypt_to_writes_nothing_on_failure(tmp_path: Path, plain: bytes) -> None:
    enc = _encrypt(tmp_path, plain)
    out = tmp_path / "out.bin"
    files.decrypt_model_to(enc, out, KEY)
    assert out.read_bytes() == plain
    out.unlink()
    data = bytearray(enc.read_bytes())
    data[-20] ^= 0x80
    enc.write_bytes(bytes(data))
    for workers in (1, 2):
        with pytest.raises(ModelTampered):
            files.decrypt_model_to(enc, out, KEY, workers=workers)
        assert not out.exists()
        assert not list(tmp_path.glob(".out.bin.*"))


def test_refused_buffer_is_zeroed() -> None:
    buf = bytearray(b"secret plaintext")
    err = mf.refuse(buf, "x")
    assert isinstance(err, ModelTampered) and buf == bytes(len(buf))


def test_header_parsing_limits(tmp_path: Path, plain: bytes) -> None:
    with pytest.raises(InvalidInput, match="not an encrypted model"):
        mf.read_header(io.BytesIO(b"GGUF" + bytes(200)))
    with pytest.raises(InvalidInput, match="too short"):
        mf.read_header(io.BytesIO(b"CIM"))
    raw = _encrypt(tmp_path, plain).read_bytes()
    with pytest.raises(InvalidInput, match="version"):
        mf.read_header(io.BytesIO(raw[:4] + b"\0\x09" + raw[6:]))
    huge = raw[:8] + (1 << 30).to_bytes(4, "big") + raw[12:]
    with pytest.raises(ModelTampered, match="header length"):
        mf.read_header(io.BytesIO(huge))
    with pytest.raises(InvalidInput, match="chunk size"):
        mf.build_header(data_key=KEY, plaintext_length=1, plaintext_sha256=bytes(32), chunk_size=16)
    with pytest.raises(KeyFileError):
        mf.derive_keys(b"short", bytes(32))


def test_max_plaintext_limit(tmp_path: Path, plain: bytes) -> None:
    enc = _encrypt(tmp_path, plain)
    with enc.open("rb") as fh, pytest.raises(InvalidInput, match="limit"):
        mf.decrypt_model(fh, KEY, max_plaintext=1000)


def test_key_files(tmp_path: Path) -> None:
    raw = tmp_path / "raw.key"
    raw.write_bytes(KEY)
    hexed = tmp_path / "hex.key"
    hexed.write_text(KEY.hex() + "\n")
    assert files.load_data_key(raw) == files.load_data_key(hexed) == KEY
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(KeyFileError):
        files.load_data_key(bad)


def test_known_answer_key_derivation() -> None:
    """HKDF-SHA256 per RFC 5869 (Extract with the salt, Expand per label)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    salt = bytes(range(100, 132))
    keys = mf.derive_keys(KEY, salt)
    expected = HKDF(hashes.SHA256(), 32, salt, b"cimf v1 chunk").derive(KEY)
    assert keys.chunk == expected


def test_open_chunk_without_decrypt_into(tmp_path: Path) -> None:
    """Older cryptography (Debian 12 ships 38) has no decrypt_into: the copy fallback."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    class OldAesGcm:
        def __init__(self, key: bytes) -> None:
            self._inner = AESGCM(key)

        def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
            return self._inner.decrypt(nonce, data, aad)

    key = bytes(32)
    ct = AESGCM(key).encrypt((7).to_bytes(12, "big"), b"hello", b"aad")
    dest = bytearray(5)
    mf.open_chunk(OldAesGcm(key), 7, memoryview(ct), b"aad", memoryview(dest))  # type: ignore[arg-type]
    assert dest == b"hello"


def test_load_encrypted_model_unwraps_and_zeroes(tmp_path: Path, plain: bytes) -> None:
    enc = _encrypt(tmp_path, plain)
    seen: list[mf.ModelHeader] = []
    key = bytearray(KEY)

    def unwrap(header: mf.ModelHeader) -> bytearray:
        seen.append(header)
        return key

    pinned = hashlib.sha256(plain).digest()
    assert bytes(files.load_encrypted_model(enc, unwrap, expected_sha256=pinned)) == plain
    assert seen[0].model_id == "tiny" and dict(seen[0].encryption_context)["model"] == "tiny"
    assert key == bytes(32)  # the caller's copy of the data key was wiped
    with pytest.raises(ModelTampered, match="wrong data key"):
        files.load_encrypted_model(enc, lambda h: bytes(32))
