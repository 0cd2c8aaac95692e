"""Building difference nodes: fields, member order, summaries, ordering, content types.

Helpers every comparator and the engine share.  Nothing here recurses or knows the
engine, so comparators import it freely.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from enclave_audit.model.difference import Change, DiffNode, NodeKind, Side
from verifier.compare.base import Blob

#: children are shown in this order: content first, then order, then metadata
_RANK = {
    Change.CONTENT: 0,
    Change.ADDED: 1,
    Change.REMOVED: 1,
    Change.REORDERED: 2,
    Change.METADATA: 3,
}


def importance(node: DiffNode) -> tuple[int, int]:
    """Order of children before classification (content, presence, order, metadata)."""
    field_last = 1 if node.kind is NodeKind.FIELD else 0
    return (_RANK[node.change] + field_last, 0)


def field_node(path: tuple[str, ...], name: str, left: object, right: object) -> DiffNode:
    """A metadata value that differs (``left``/``right`` None when absent on that side)."""
    return DiffNode(
        path=(*path, name),
        kind=NodeKind.FIELD,
        change=Change.METADATA,
        left=None if left is None else Side.of(value=left),
        right=None if right is None else Side.of(value=right),
        summary=f"{name}: {_short(left)} -> {_short(right)}",
    )


def _short(value: object) -> str:
    if value is None:
        return "(absent)"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def order_node(left: Sequence[str], right: Sequence[str], path: tuple[str, ...]) -> DiffNode | None:
    """A REORDERED node when the members both sides share come in a different order."""
    common = set(left) & set(right)
    lseq = [n for n in left if n in common]
    rseq = [n for n in right if n in common]
    if lseq == rseq:
        return None
    first = next(i for i, (x, y) in enumerate(zip(lseq, rseq, strict=True)) if x != y)
    moved = sum(1 for x, y in zip(lseq, rseq, strict=True) if x != y)
    sorted_l = lseq == sorted(lseq)
    sorted_r = rseq == sorted(rseq)
    notes = [f"a permutation of the same {len(lseq)} members"]
    if sorted_l != sorted_r:
        notes.append(f"{'left' if sorted_l else 'right'} side is sorted by name, the other is not")
    return DiffNode(
        path=(*path, "(member order)"),
        kind=NodeKind.ORDER,
        change=Change.REORDERED,
        left=Side.of(value=", ".join(lseq[first : first + 3])),
        right=Side.of(value=", ".join(rseq[first : first + 3])),
        summary=f"{moved} of {len(lseq)} common members in a different position,"
        f" first at #{first}: {lseq[first]!r} vs {rseq[first]!r}",
        notes=tuple(notes),
    )


def describe_children(children: Sequence[DiffNode], what: str) -> str:
    counts: dict[Change, int] = {}
    for child in children:
        if child.kind is NodeKind.FIELD:
            continue
        counts[child.change] = counts.get(child.change, 0) + 1
    parts = [f"{n} {change.value}" for change, n in counts.items()]
    fields = [c.name for c in children if c.kind is NodeKind.FIELD]
    if fields:
        parts.append("fields: " + ", ".join(fields[:5]))
    return f"{what} differs: " + ", ".join(parts)


def with_pcrs(node: DiffNode, pcrs: tuple[int, ...]) -> DiffNode:
    """Mark a node and everything below it as moving ``pcrs``."""
    return node.model_copy(
        update={"pcrs": pcrs, "children": tuple(with_pcrs(c, pcrs) for c in node.children)}
    )


# --- content types -----------------------------------------------------------------------

_ET = {1: "relocatable", 2: "executable", 3: "shared object", 4: "core"}
_PT_INTERP = 3


def elf_type(head: bytes) -> str | None:
    """``ELF executable``, ``ELF shared library``... from the first bytes of an ELF."""
    if not head.startswith(b"\x7fELF") or len(head) < 52:
        return None
    little = head[5] == 1
    is64 = head[4] == 2
    end = "<" if little else ">"
    e_type = struct.unpack_from(end + "H", head, 16)[0]
    if e_type == 3:
        # a PIE executable is ET_DYN too: it asks for an interpreter
        try:
            if is64:
                phoff = struct.unpack_from(end + "Q", head, 32)[0]
                phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
            else:
                phoff = struct.unpack_from(end + "I", head, 28)[0]
                phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
            for i in range(min(phnum, 64)):
                at = phoff + i * phentsize
                if at + 4 > len(head):
                    break
                if struct.unpack_from(end + "I", head, at)[0] == _PT_INTERP:
                    return "ELF executable"
        except struct.error:
            pass
        return "ELF shared library"
    return f"ELF {_ET.get(e_type, f'type {e_type}')}"


def content_type(blob: Blob | None) -> str | None:
    """A short description of what a file holds, from its first bytes (None if unknown)."""
    if blob is None:
        return None
    try:
        head = blob.head(4096)
    except (OSError, ValueError):
        return None
    if head.startswith(b"\x7fELF"):
        return elf_type(head) or "ELF"
    if head.startswith(b"#!"):
        line = head[2:].split(b"\n", 1)[0].strip().decode("utf-8", "replace")
        return f"script ({line[:60]})" if line else "script"
    if b"-----BEGIN " in head:
        kind = head.split(b"-----BEGIN ", 1)[1].split(b"-----", 1)[0][:40]
        return f"PEM {kind.decode('ascii', 'replace')}"
    return None
