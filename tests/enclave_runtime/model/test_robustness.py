"""Hostile inputs: parsers raise only the project's one-line errors, never foreign ones."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave_audit.errors import InvalidInput, ModelTampered
from enclave_runtime import model_format as mf
from enclave_runtime.model.chat import ChatModel
from enclave_runtime.model.gguf_read import GGUFFile

KEY = bytes(32)
HEADER, _ = mf.build_header(
    data_key=KEY,
    plaintext_length=10_000,
    plaintext_sha256=bytes(32),
    chunk_size=4096,
    model_id="m",
    model_version="1",
    kms_key_id="k",
    wrapped_key=b"w" * 40,
    encryption_context={"a": "b"},
)


@given(st.binary(max_size=400))
@settings(max_examples=400)
def test_random_headers(data: bytes) -> None:
    try:
        mf.read_header(io.BytesIO(mf.MAGIC + b"\0\x01\0\x01" + data))
    except (InvalidInput, ModelTampered):
        pass


@given(
    st.lists(
        st.tuples(st.integers(0, len(HEADER.raw) - 1), st.integers(1, 255)),
        min_size=1,
        max_size=4,
        unique_by=lambda flip: flip[0],  # two flips of one byte could cancel out
    )
)
@settings(max_examples=400)
def test_mutated_headers(flips: list[tuple[int, int]]) -> None:
    raw = bytearray(HEADER.raw)
    for pos, mask in flips:
        raw[pos] ^= mask
    try:
        header = mf.read_header(io.BytesIO(bytes(raw)))
        mf.authenticate_header(header, KEY)
    except (InvalidInput, ModelTampered):
        return
    raise AssertionError("a modified header authenticated")


@given(data=st.data())
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_mutated_gguf(tiny_bytes: bytes, data: st.DataObject) -> None:
    raw = bytearray(tiny_bytes)
    limit = min(len(raw), 16_000)  # the header, metadata and tensor directory
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, limit - 1))] ^= data.draw(st.integers(1, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    try:
        ChatModel.from_gguf(bytes(raw), what="mutated")
    except InvalidInput:
        pass


def test_tiny_gguf_header_fits_the_mutated_region(tiny_bytes: bytes) -> None:
    g = GGUFFile(tiny_bytes)
    assert min(t.offset for t in g.tensors.values()) < 16_000
