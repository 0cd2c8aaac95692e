"""A strict, bounded CBOR decoder (RFC 8949 subset): the one every parser here uses.

The enclave decodes NSM responses and GPU-bridge frames with it; the auditor
decodes attestation documents and EIF signature sections with the same code.

Why not ``cbor2.loads``: a verifier must know exactly what it accepted, and
``cbor2.loads`` decodes the first item and ignores whatever follows.  This
decoder works on an in-memory buffer with every length checked against the
bytes that remain, rejects duplicate map keys, trailing bytes, reserved
encodings and nesting deeper than a small limit, and raises only the error class
its caller names (:class:`~enclave_runtime.errors.InvalidInput` unless told, e.g.
``AttestationMalformed`` for documents or ``ProtocolError`` for a peer's
message).  It accepts what real NSM
documents use: definite and indefinite-length maps (the 2026 documents use
``bf ... ff``), non-minimal integer heads (the timestamp is an 8-byte uint),
and tags (returned as :class:`Tagged`, the caller decides which it allows).

It also records whether each map was definite or indefinite so a document's
encoding can be shown; signatures are always checked over the original bytes,
never over a re-encoding.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from enclave_runtime.errors import EnclaveAuditError, InvalidInput

MAX_DEPTH: Final = 16

_BREAK: Final = 0xFF


class CborMap(dict[object, object]):
    """A decoded map; ``indefinite`` says how it was encoded."""

    indefinite: bool = False


@dataclass(frozen=True)
class Tagged:
    """A tagged item (major type 6)."""

    tag: int
    value: object


class _Undefined:
    """CBOR ``undefined`` (simple value 23)."""

    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Final = _Undefined()


class _Decoder:
    def __init__(self, data: bytes, what: str, error: type[EnclaveAuditError]) -> None:
        self.data = data
        self.pos = 0
        self.what = what
        self.error = error

    def fail(self, problem: str) -> EnclaveAuditError:
        return self.error(f"{self.what}: {problem} (at byte {self.pos})")

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise self.fail(f"truncated: needs {n} more bytes, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def head(self) -> tuple[int, int, int | None]:
        """(major type, additional info, argument or None for indefinite)."""
        if self.pos >= len(self.data):
            raise self.fail("truncated: expected another data item")
        initial = self.data[self.pos]
        self.pos += 1
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info, info
        if info == 24:
            return major, info, self.take(1)[0]
        if info == 25:
            return major, info, int.from_bytes(self.take(2), "big")
        if info == 26:
            return major, info, int.from_bytes(self.take(4), "big")
        if info == 27:
            return major, info, int.from_bytes(self.take(8), "big")
        if info == 31:
            return major, info, None
        raise self.fail(f"reserved additional information {info}")

    def need_items(self, count: int, per_item: int) -> None:
        # every item takes at least one byte: refuse absurd counts before looping
        if count * per_item > len(self.data) - self.pos:
            raise self.fail(
                f"declared {count} items but only {len(self.data) - self.pos} bytes left"
            )

    def item(self, depth: int) -> object:
        if depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH}")
        start = self.pos
        major, info, arg = self.head()
        if major == 0:
            if arg is None:
                raise self.fail("indefinite length on an integer")
            return arg
        if major == 1:
            if arg is None:
                raise self.fail("indefinite length on an integer")
            return -1 - arg
        if major in (2, 3):
            raw = self.string(major, arg)
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                self.pos = start
                raise self.fail("text string is not valid UTF-8") from None
        if major == 4:
            return self.array(arg, depth)
        if major == 5:
            return self.map(arg, depth)
        if major == 6:
            if arg is None:
                raise self.fail("indefinite length on a tag")
            return Tagged(arg, self.item(depth + 1))
        return self.simple(info, arg, start)

    def string(self, major: int, arg: int | None) -> bytes:
        if arg is not None:
            return self.take(arg)
        chunks: list[bytes] = []
        while True:
            if self.pos >= len(self.data):
                raise self.fail("truncated: indefinite-length string without a break")
            if self.data[self.pos] == _BREAK:
                self.pos += 1
                return b"".join(chunks)
            chunk_major, _, chunk_len = self.head()
            if chunk_major != major or chunk_len is None:
                raise self.fail("indefinite-length string chunk of the wrong type")
            chunks.append(self.take(chunk_len))

    def array(self, arg: int | None, depth: int) -> list[object]:
        out: list[object] = []
        if arg is None:
            while not self.at_break():
                out.append(self.item(depth + 1))
            return out
        self.need_items(arg, 1)
        for _ in range(arg):
            out.append(self.item(depth + 1))
        return out

    def map(self, arg: int | None, depth: int) -> CborMap:
        out = CborMap()
        out.indefinite = arg is None
        count = 0
        if arg is not None:
            self.need_items(arg, 2)
        while (arg is None and not self.at_break()) or (arg is not None and count < arg):
            key_pos = self.pos
            key = self.item(depth + 1)
            if not isinstance(key, int | str | bytes) or isinstance(key, bool):
                self.pos = key_pos
                raise self.fail("map key is not an integer, text or byte string")
            if key in out:
                self.pos = key_pos
                raise self.fail(f"duplicate map key {key!r}")
            out[key] = self.item(depth + 1)
            count += 1
        return out

    def at_break(self) -> bool:
        if self.pos >= len(self.data):
            raise self.fail("truncated: indefinite-length item without a break")
        if self.data[self.pos] == _BREAK:
            self.pos += 1
            return True
        return False

    def simple(self, info: int, arg: int | None, start: int) -> object:
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        if info == 23:
            return UNDEFINED
        if info == 25:
            return float(struct.unpack(">e", self.data[start + 1 : start + 3])[0])
        if info == 26:
            return float(struct.unpack(">f", self.data[start + 1 : start + 5])[0])
        if info == 27:
            return float(struct.unpack(">d", self.data[start + 1 : start + 9])[0])
        if arg is None:
            self.pos = start
            raise self.fail("unexpected break")
        self.pos = start
        raise self.fail(f"unsupported simple value {arg}")


def loads(data: bytes, *, what: str, error: type[EnclaveAuditError] = InvalidInput) -> object:
    """Decode exactly one CBOR item that fills ``data``.

    ``what`` names the item in errors; every problem raises ``error``.
    """
    decoder = _Decoder(bytes(data), what, error)
    value = decoder.item(0)
    if decoder.pos != len(decoder.data):
        raise decoder.fail(f"{len(decoder.data) - decoder.pos} trailing bytes after the item")
    return value


def encode_head(major: int, value: int) -> bytes:
    """Shortest head for ``major`` with argument ``value`` (RFC 8949 preferred encoding)."""
    if value < 0:
        raise ValueError("CBOR head argument must be non-negative")
    if value < 24:
        return bytes([(major << 5) | value])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([(major << 5) | info]) + value.to_bytes(size, "big")
    raise ValueError("CBOR head argument exceeds 64 bits")


def encode_bytes(value: bytes) -> bytes:
    return encode_head(2, len(value)) + value


def encode_text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return encode_head(3, len(raw)) + raw
