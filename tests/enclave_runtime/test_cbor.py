"""The strict CBOR decoder every parser uses, in the image and in the auditor."""

from __future__ import annotations

import cbor2
import pytest

from enclave_audit.errors import AttestationMalformed
from enclave_runtime.cbor import UNDEFINED, CborMap, Tagged, loads
from enclave_runtime.errors import InvalidInput, ProtocolError


def test_decoder_matches_cbor2_on_ordinary_items() -> None:
    item = {
        "a": [1, -1, 2**64 - 1, -(2**64)],
        "b": b"\x00\xff",
        "c": None,
        "d": True,
        "e": 1.5,
        3: {"x": []},
    }
    assert loads(cbor2.dumps(item), what="t") == item


def test_decoder_accepts_indefinite_and_non_minimal_encodings() -> None:
    assert loads(bytes.fromhex("bf616101ff"), what="t") == {"a": 1}
    assert isinstance(loads(bytes.fromhex("bf616101ff"), what="t"), CborMap)
    assert loads(bytes.fromhex("bf616101ff"), what="t").indefinite  # type: ignore[attr-defined]
    assert loads(bytes.fromhex("9f0102ff"), what="t") == [1, 2]
    assert loads(bytes.fromhex("5f42010243030405ff"), what="t") == b"\x01\x02\x03\x04\x05"
    assert loads(bytes.fromhex("7f6161626262ff"), what="t") == "abb"
    assert loads(bytes.fromhex("1b0000000000000001"), what="t") == 1
    assert loads(bytes.fromhex("d25f40ff"), what="t") == Tagged(18, b"")
    assert loads(bytes.fromhex("f7"), what="t") is UNDEFINED
    assert loads(bytes.fromhex("f93c00"), what="t") == 1.0


@pytest.mark.parametrize(
    ("hex_", "needle"),
    [
        ("a2616101616102", "duplicate map key"),
        ("a1816101", "map key"),
        ("a1f501", "map key"),
        ("1c", "reserved"),
        ("5f01ff", "chunk"),
        ("5f4161", "break"),
        ("9f01", "break"),
        ("ff", "unexpected break"),
        ("f818", "simple value"),
        ("1f", "indefinite length on an integer"),
        ("df01", "tag"),
        ("62c328", "UTF-8"),
        ("5a00010000", "truncated"),
        ("9b00000000ffffffff", "declared"),
        ("0102", "trailing"),
        ("", "truncated"),
        ("81" * 20 + "00", "nesting"),
    ],
)
def test_decoder_rejects(hex_: str, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        loads(bytes.fromhex(hex_), what="t")
    # the caller names the error class (documents, peers' messages)
    with pytest.raises(AttestationMalformed, match=needle):
        loads(bytes.fromhex(hex_), what="t", error=AttestationMalformed)
    with pytest.raises(ProtocolError, match=needle):
        loads(bytes.fromhex(hex_), what="t", error=ProtocolError)
