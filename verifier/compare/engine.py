"""The recursion: identical content short-circuits, formats are identified by magic,
containers have their members paired by name (added, removed, reordered, metadata,
content), leaves get format-specific detail, and the finished tree gets its causes.
"""

from __future__ import annotations

import struct
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from enclave_audit.errors import InputNotFound, InvalidInput
from enclave_audit.model.difference import (
    Change,
    DiffNode,
    DiffReport,
    DiffStats,
    NodeKind,
    Side,
)
from enclave_audit.progress import ProgressSink
from verifier.compare.base import (
    CHUNK,
    Blob,
    Budget,
    BytesBlob,
    Comparator,
    CompareContext,
    Container,
    FileBlob,
    Member,
    cheap_side,
)
from verifier.compare.binary import read_full

#: what a format parser may raise on malformed input (beyond our own InvalidInput)
_MALFORMED = (ValueError, struct.error, IndexError, KeyError, EOFError, OSError, zlib.error)

#: children are shown in this order: content first, then order, then metadata
_RANK = {
    Change.CONTENT: 0,
    Change.ADDED: 1,
    Change.REMOVED: 1,
    Change.REORDERED: 2,
    Change.METADATA: 3,
}


def importance(node: DiffNode) -> tuple[int, int]:
    field_last = 1 if node.kind is NodeKind.FIELD else 0
    return (_RANK[node.change] + field_last, 0)


class Engine:
    """Runs one comparison with a context and a comparator registry (most specific first)."""

    def __init__(self, ctx: CompareContext, registry: Sequence[Comparator]) -> None:
        self.ctx = ctx
        self.registry = tuple(registry)

    # -- identification -------------------------------------------------------------

    def identify(self, blob: Blob) -> Comparator:
        head = blob.head()
        for comparator in self.registry:
            if comparator.recognizes(blob, head):
                return comparator
        return self.registry[-1]

    def same_content(self, a: Blob, b: Blob) -> bool:
        """Byte equality, streamed, stopping at the first differing chunk."""
        sa, sb = a.known_size(), b.known_size()
        if sa is not None and sb is not None and sa != sb:
            return False
        if isinstance(a, BytesBlob) and isinstance(b, BytesBlob):
            self.ctx.budget.bytes_compared += len(a.data)
            return a.data == b.data
        da, db = getattr(a, "_digest", None), getattr(b, "_digest", None)
        if da is not None and db is not None:
            return bool(da == db)
        with a.open() as fa, b.open() as fb:
            while True:
                ca = read_full(fa, CHUNK)
                cb = read_full(fb, CHUNK)
                self.ctx.budget.bytes_compared += len(ca)
                if ca != cb:
                    return False
                if not ca:
                    return True

    # -- recursion ----------------------------------------------------------------

    def compare(self, a: Blob, b: Blob, path: tuple[str, ...], depth: int = 0) -> DiffNode | None:
        """The difference between two blobs at ``path``, or None when the bytes are equal."""
        if self.same_content(a, b):
            return None
        if not self.ctx.budget.take():
            return None
        from verifier.compare.binary import BinaryComparator

        if depth > self.ctx.max_depth:
            return DiffNode(
                path=path,
                kind=NodeKind.BINARY,
                change=Change.CONTENT,
                left=cheap_side(a, self.ctx.memory_bound),
                right=cheap_side(b, self.ctx.memory_bound),
                summary="content differs (not expanded: --max-depth reached)",
            )
        ca, cb = self.identify(a), self.identify(b)
        fallback = BinaryComparator()
        if ca.name != cb.name:
            node = fallback.compare(a, b, path, self)
            assert node is not None
            return node.model_copy(
                update={
                    "notes": (*node.notes, f"formats differ: left is {ca.name}, right is {cb.name}")
                }
            )
        self._depth = depth
        try:
            node = ca.compare(a, b, path, self)
        except InvalidInput as exc:
            return self._fallback(a, b, path, f"{ca.name} comparison failed: {exc.message}")
        except _MALFORMED as exc:  # a parser tripped on malformed input: say so, go on
            return self._fallback(
                a, b, path, f"{ca.name} comparison failed: {type(exc).__name__}: {exc}"
            )
        if node is None:
            node = fallback.compare(a, b, path, self)
            assert node is not None
            node = node.model_copy(
                update={
                    "notes": (*node.notes, f"no {ca.name}-level difference found; bytes differ")
                }
            )
        return node

    def _fallback(self, a: Blob, b: Blob, path: tuple[str, ...], note: str) -> DiffNode:
        from verifier.compare.binary import BinaryComparator

        node = BinaryComparator().compare(a, b, path, self)
        if node is None:  # the bytes are equal after all (a stream that changed under us)
            node = DiffNode(
                path=path,
                kind=NodeKind.BINARY,
                change=Change.CONTENT,
                left=None,
                right=None,
                summary="content could not be compared",
            )
        return node.model_copy(update={"notes": (*node.notes, note)})

    @property
    def depth(self) -> int:
        return getattr(self, "_depth", 0)

    def compare_nested(self, a: Blob, b: Blob, path: tuple[str, ...]) -> DiffNode | None:
        """Recurse one level deeper (used by containers for their members)."""
        depth = self.depth
        try:
            return self.compare(a, b, path, depth + 1)
        finally:
            self._depth = depth

    # -- containers -----------------------------------------------------------------

    def compare_container(
        self, container: Container, a: Blob, b: Blob, path: tuple[str, ...], kind: NodeKind
    ) -> DiffNode | None:
        left = list(container.members(a, self))
        right = list(container.members(b, self))
        children = self.compare_members(left, right, path)
        if not children:
            return None
        return DiffNode(
            path=path,
            kind=kind,
            change=Change.CONTENT,
            left=Side.of(size=a.known_size()),
            right=Side.of(size=b.known_size()),
            summary=describe_children(children, f"{container.name} archive"),
            children=children,
        )

    def compare_members(
        self, left: Sequence[Member], right: Sequence[Member], path: tuple[str, ...]
    ) -> tuple[DiffNode, ...]:
        """Pair members by name; report removed, added, reordered, metadata and content."""
        lmap = {m.name: m for m in left}
        rmap = {m.name: m for m in right}
        nodes: list[DiffNode] = []
        order = order_node([m.name for m in left], [m.name for m in right], path)
        if order is not None:
            nodes.append(order)
        for m in left:
            node = self.member_diff(m, rmap.get(m.name), path)
            if node is not None:
                nodes.append(node)
        for m in right:
            if m.name not in lmap:
                node = self.member_diff(None, m, path)
                if node is not None:
                    nodes.append(node)
        return self.cap(nodes, path)

    def member_diff(
        self, a: Member | None, b: Member | None, path: tuple[str, ...]
    ) -> DiffNode | None:
        m = a if a is not None else b
        assert m is not None
        mpath = (*path, m.name)
        if a is None or b is None:
            if not self.ctx.budget.take():
                return None
            present = a if a is not None else b
            assert present is not None
            side = Side.of(
                digest=present.blob.digest() if present.blob is not None else None,
                size=present.blob.known_size() if present.blob is not None else None,
                value=present.ftype,
            )
            return DiffNode(
                path=mpath,
                kind=NodeKind.MEMBER,
                change=Change.REMOVED if b is None else Change.ADDED,
                left=side if a is not None else None,
                right=side if b is not None else None,
                summary=f"{present.ftype} only on the {'left' if b is None else 'right'}",
            )
        fields: list[DiffNode] = []
        bmeta = dict(b.meta)
        ameta = dict(a.meta)
        if a.ftype != b.ftype:
            fields.append(field_node(mpath, "type", a.ftype, b.ftype))
        for key, value in a.meta:
            other = bmeta.get(key)
            if other != value:
                fields.append(field_node(mpath, key, value, other))
        for key, value in b.meta:
            if key not in ameta:
                fields.append(field_node(mpath, key, None, value))
        content: DiffNode | None = None
        if a.blob is not None and b.blob is not None:
            content = self.compare_nested(a.blob, b.blob, mpath)
        if content is None and not fields:
            return None
        if not self.ctx.budget.take(len(fields)):
            fields = fields[:1]
        if content is None:
            return DiffNode(
                path=mpath,
                kind=NodeKind.MEMBER,
                change=Change.METADATA,
                left=Side.of(value=a.ftype),
                right=Side.of(value=b.ftype),
                summary="metadata differs: " + ", ".join(f.name for f in fields),
                children=tuple(fields),
            )
        children = tuple(sorted((*content.children, *fields), key=importance))
        summary = content.summary
        if fields:
            summary += "; metadata differs: " + ", ".join(f.name for f in fields)
        return content.model_copy(update={"children": children, "summary": summary})

    def cap(self, nodes: Iterable[DiffNode], path: tuple[str, ...]) -> tuple[DiffNode, ...]:
        """Sort by importance and keep at most ``max_children`` (the rest are counted)."""
        ordered = sorted(nodes, key=importance)
        limit = self.ctx.max_children
        if len(ordered) <= limit:
            return tuple(ordered)
        dropped = len(ordered) - limit
        self.ctx.budget.truncated = True
        more = DiffNode(
            path=(*path, f"[{dropped} more]"),
            kind=NodeKind.MEMBER,
            change=Change.CONTENT,
            left=None,
            right=None,
            summary=f"{dropped} more differences not shown (raise the limit to see them)",
        )
        return (*ordered[:limit], more)


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
    notes = []
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


def compare_paths(
    left: Path,
    right: Path,
    *,
    max_depth: int = 32,
    memory_bound: int = 64 << 20,
    max_nodes: int = 20000,
    progress: ProgressSink | None = None,
    registry: Sequence[Comparator] | None = None,
) -> DiffReport:
    """Compare two files or two directories and explain the differences (the ``diff`` verb)."""
    from enclave_audit.progress import NullProgress
    from verifier.compare import COMPARATORS
    from verifier.compare.causes import classify
    from verifier.compare.directory import compare_directories

    left, right = Path(left), Path(right)
    for p in (left, right):
        if not p.exists():
            raise InputNotFound(f"{p}: no such file or directory")
    if left.is_dir() != right.is_dir():
        raise InvalidInput(f"cannot compare a directory with a file: {left} vs {right}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="enclave-audit-diff-") as tmp:
        ctx = CompareContext(
            workdir=Path(tmp),
            max_depth=max_depth,
            memory_bound=memory_bound,
            budget=Budget(max_nodes=max_nodes),
            progress=progress or NullProgress(),
        )
        engine = Engine(ctx, registry if registry is not None else COMPARATORS)
        label = left.name if left.name == right.name else f"{left.name} vs {right.name}"
        if left.is_dir():
            root = compare_directories(left, right, (label,), engine)
        else:
            root = engine.compare(FileBlob(left), FileBlob(right), (label,))
        if root is not None:
            root = classify(root)
        stats = DiffStats(
            nodes=root.count() if root is not None else 0,
            truncated=ctx.budget.truncated,
            bytes_compared=ctx.budget.bytes_compared,
            seconds=round(time.monotonic() - started, 3),
        )
    return DiffReport(
        left=str(left), right=str(right), identical=root is None, root=root, stats=stats
    )
