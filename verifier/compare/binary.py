"""The fallback: where two byte strings first differ, how many bytes differ, with context.

Streams both sides in chunks (XOR of big integers finds and counts differing bytes at C
speed, without importing numpy), so any size is fine.
Each side's ``value`` is ``@0x<offset> <hex>``: a window around the first difference that
the cause classifiers decode (unix times, paths, random bytes).
"""

from __future__ import annotations

import re

from enclave_audit.model.difference import Change, DiffNode, NodeKind, Side
from verifier.compare.base import CHUNK, Blob, EngineApi, cheap_side, read_full

WINDOW_BEFORE = 32
WINDOW_AFTER = 64


_NONZERO = re.compile(rb"[^\x00]+")


def xor(a: bytes, b: bytes) -> bytes:
    """Byte-wise XOR of the common prefix of ``a`` and ``b`` (zero bytes where equal)."""
    n = min(len(a), len(b))
    if n == 0:
        return b""
    value = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    return value.to_bytes(n, "big")


def count_differing(a: bytes, b: bytes) -> int:
    """Differing bytes in the common prefix."""
    x = xor(a, b)
    return len(x) - x.count(0)


def differing_runs(a: bytes, b: bytes, limit: int) -> list[tuple[int, int]]:
    """(start, end inclusive) of up to ``limit`` runs of differing bytes in the common prefix."""
    out: list[tuple[int, int]] = []
    for m in _NONZERO.finditer(xor(a, b)):
        out.append((m.start(), m.end() - 1))
        if len(out) >= limit:
            break
    return out


def first_difference(a: bytes, b: bytes) -> int | None:
    """Offset of the first differing byte of two byte strings (a prefix counts as different)."""
    n = min(len(a), len(b))
    if a[:n] != b[:n]:
        x = xor(a, b)
        return n - len(x.lstrip(b"\x00"))
    return None if len(a) == len(b) else n


def window(data: bytes, offset: int) -> str:
    start = max(0, offset - WINDOW_BEFORE)
    return f"@0x{start:x} {data[start : offset + WINDOW_AFTER].hex()}"


def byte_node(
    path: tuple[str, ...],
    a: bytes,
    b: bytes,
    *,
    kind: NodeKind = NodeKind.BINARY,
    base: int = 0,
    what: str = "bytes",
    left: Side | None = None,
    right: Side | None = None,
) -> DiffNode | None:
    """A node for two in-memory byte strings (used by format comparators for one section)."""
    first = first_difference(a, b)
    if first is None:
        return None
    n = min(len(a), len(b))
    differing = count_differing(a[:n], b[:n])
    size_note = "" if len(a) == len(b) else f", sizes {len(a)} vs {len(b)}"
    left_side = left or Side.of(size=len(a))
    right_side = right or Side.of(size=len(b))
    return DiffNode(
        path=path,
        kind=kind,
        change=Change.CONTENT,
        left=left_side.model_copy(update={"value": window(a, first)}),
        right=right_side.model_copy(update={"value": window(b, first)}),
        summary=f"{what} differ from offset 0x{base + first:x}"
        f" ({differing} differing bytes{size_note})",
    )


class BinaryComparator:
    """Any two blobs: the first differing offset and the count of differing bytes."""

    name = "binary"

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return True

    def compare(
        self, a: Blob, b: Blob, path: tuple[str, ...], engine: EngineApi, depth: int
    ) -> DiffNode | None:
        first: int | None = None
        differing = 0
        offset = 0
        wa = wb = b""
        with a.open() as fa, b.open() as fb:
            while True:
                ca = read_full(fa, CHUNK)
                cb = read_full(fb, CHUNK)
                if not ca and not cb:
                    break
                n = min(len(ca), len(cb))
                if ca[:n] != cb[:n]:
                    differing += count_differing(ca[:n], cb[:n])
                    if first is None:
                        idx = first_difference(ca[:n], cb[:n]) or 0
                        first = offset + idx
                        lo = max(0, idx - WINDOW_BEFORE)
                        wa = ca[lo : idx + WINDOW_AFTER]
                        wb = cb[lo : idx + WINDOW_AFTER]
                        wstart = offset + lo
                if len(ca) != len(cb):
                    if first is None:
                        first = offset + n
                        wstart = max(0, first - WINDOW_BEFORE)
                        lo = wstart - offset
                        wa, wb = ca[lo : n + WINDOW_AFTER], cb[lo : n + WINDOW_AFTER]
                    differing += abs(len(ca) - len(cb))
                    # drain the rest for sizes only
                    while more := fa.read(CHUNK):
                        differing += len(more)
                    while more := fb.read(CHUNK):
                        differing += len(more)
                    break
                offset += n
        if first is None:
            return None
        sa, sb = a.known_size(), b.known_size()
        size_note = "" if sa == sb else f", sizes {sa} vs {sb}"
        return DiffNode(
            path=path,
            kind=NodeKind.BINARY,
            change=Change.CONTENT,
            left=cheap_side(a, engine.ctx.memory_bound, value=f"@0x{wstart:x} {wa.hex()}"),
            right=cheap_side(b, engine.ctx.memory_bound, value=f"@0x{wstart:x} {wb.hex()}"),
            summary=f"bytes differ from offset 0x{first:x}"
            f" (~{differing} differing bytes{size_note})",
        )
