"""The in-memory GGUF reader against the ``gguf`` package, and its refusals."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from enclave_audit.errors import InvalidInput
from enclave_runtime.model.gguf_read import GGMLType, GGUFFile


def _compare_with_gguf_package(
    path: Path, names: set[str] | None = None, theirs: gguf.GGUFReader | None = None
) -> int:
    ours = GGUFFile(path.read_bytes())
    theirs = theirs if theirs is not None else gguf.GGUFReader(path)
    for key, field in theirs.fields.items():
        if not key.startswith("GGUF."):
            assert ours.metadata[key] == pytest.approx(field.contents()), key
    checked = 0
    for t in theirs.tensors:
        if names is not None and t.name not in names:
            continue
        want = gguf.quants.dequantize(t.data, t.tensor_type)
        got = ours.tensor(t.name)
        assert got.dtype == np.float32 and got.shape == want.shape, t.name
        np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=t.name)
        checked += 1
    return checked


def test_tiny_matches_gguf_package(tiny_gguf: Path) -> None:
    assert _compare_with_gguf_package(tiny_gguf) == 2 * 9 + 2
    types = {i.ggml_type for i in GGUFFile(tiny_gguf.read_bytes()).tensors.values()}
    assert types == set(GGMLType)  # every supported encoding is exercised


def test_smollm2_tensors_match_gguf_package(smollm2_path: Path) -> None:
    names = {"blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"}
    reader = gguf.GGUFReader(smollm2_path)  # slow (seconds): parses 49152 token strings
    assert _compare_with_gguf_package(smollm2_path, names, reader) == len(names)
    # the Q8_0 embedding: the first 512 rows (dequantizing all 49152 with gguf takes seconds)
    ours = GGUFFile(smollm2_path.read_bytes()).tensor("token_embd.weight")[:512]
    t = next(t for t in reader.tensors if t.name == "token_embd.weight")
    want = gguf.quants.dequantize(t.data[:512], t.tensor_type)
    np.testing.assert_array_equal(ours, want.astype(np.float32))


def test_reads_from_any_buffer(tiny_bytes: bytes) -> None:
    for buf in (bytearray(tiny_bytes), memoryview(tiny_bytes)):
        g = GGUFFile(buf)
        np.testing.assert_array_equal(
            g.tensor("output_norm.weight"), GGUFFile(tiny_bytes).tensor("output_norm.weight")
        )


@pytest.mark.parametrize("cut", [0, 3, 10, 24, 200, 5000])
def test_truncated_files_are_refused(tiny_bytes: bytes, cut: int) -> None:
    with pytest.raises(InvalidInput):
        GGUFFile(tiny_bytes[:cut])


def test_tensor_data_past_the_end_is_refused(tiny_bytes: bytes) -> None:
    with pytest.raises(InvalidInput, match="past the end"):
        GGUFFile(tiny_bytes[:-64])


def test_malformed_headers_are_refused(tiny_bytes: bytes) -> None:
    with pytest.raises(InvalidInput, match="magic"):
        GGUFFile(b"GGML" + tiny_bytes[4:])
    with pytest.raises(InvalidInput, match="version"):
        GGUFFile(tiny_bytes[:4] + struct.pack("<I", 9) + tiny_bytes[8:])
    with pytest.raises(InvalidInput, match="too many"):
        GGUFFile(tiny_bytes[:8] + struct.pack("<Q", 1 << 40) + tiny_bytes[16:])
    # a huge string length in the first key
    with pytest.raises(InvalidInput):
        GGUFFile(tiny_bytes[:24] + struct.pack("<Q", 1 << 60) + tiny_bytes[32:])


def test_unsupported_tensor_type_is_refused(tiny_gguf: Path) -> None:
    data = bytearray(tiny_gguf.read_bytes())
    reader = gguf.GGUFReader(tiny_gguf)
    first = reader.tensors[0]
    # the type field sits just before the tensor's 8-byte offset in its directory entry
    name = first.name.encode()
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    n_dims = struct.unpack_from("<I", data, at)[0]
    type_at = at + 4 + 8 * n_dims
    struct.pack_into("<I", data, type_at, 14)  # Q6_K
    with pytest.raises(InvalidInput, match="unsupported GGML type 14"):
        GGUFFile(bytes(data))
