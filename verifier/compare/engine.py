"""The recursion: identical content short-circuits, formats are identified by magic,
containers have their members paired by name (added, removed, reordered, metadata,
content), leaves get format-specific detail.

The engine is given its comparator registry (most specific first, a catch-all last);
it imports no comparator, and comparators see it only through
:class:`~verifier.compare.base.EngineApi`.  The nesting depth travels as an argument.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence

from enclave_audit.errors import InvalidInput
from enclave_audit.limits import MEMORY_FLAG, LimitExceeded
from enclave_audit.model.difference import Change, DiffNode, NodeKind, Side
from verifier.compare.base import (
    CHUNK,
    Blob,
    BytesBlob,
    Comparator,
    CompareContext,
    Container,
    Member,
    Unreadable,
    cheap_side,
    read_full,
)
from verifier.compare.nodes import (
    content_type,
    describe_children,
    field_node,
    importance,
    order_node,
)

#: what a format parser may raise on malformed input (beyond our own InvalidInput)
_MALFORMED = (ValueError, struct.error, IndexError, KeyError, EOFError, OSError, zlib.error)


class Engine:
    """Runs one comparison with a context and an injected comparator registry.

    The last comparator of the registry recognizes everything; it is also the fallback
    when a format comparator cannot make sense of its input.
    """

    def __init__(self, ctx: CompareContext, registry: Sequence[Comparator]) -> None:
        if not registry:
            raise ValueError("the comparator registry is empty")
        self._ctx = ctx
        self.registry = tuple(registry)
        self.fallback = self.registry[-1]

    @property
    def ctx(self) -> CompareContext:
        return self._ctx

    # -- identification -------------------------------------------------------------

    def identify(self, blob: Blob) -> Comparator:
        head = blob.head()
        for comparator in self.registry:
            if comparator.recognizes(blob, head):
                return comparator
        return self.fallback

    def same_content(self, a: Blob, b: Blob) -> bool:
        """Byte equality, streamed, stopping at the first differing chunk."""
        sa, sb = a.known_size(), b.known_size()
        if sa is not None and sb is not None and sa != sb:
            return False
        if isinstance(a, BytesBlob) and isinstance(b, BytesBlob):
            self.ctx.budget.bytes_compared += len(a.data)
            return a.data == b.data
        if a.quick_equal(b):
            return True
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

    def compare(self, a: Blob, b: Blob, path: tuple[str, ...], depth: int) -> DiffNode | None:
        """The difference between two blobs at ``path`` (nesting ``depth``), or None when
        their bytes are equal."""
        try:
            if self.same_content(a, b):
                return None
            if not self.ctx.budget.take():
                return None
            if depth > self.ctx.max_depth:
                return self._too_deep(a, b, path)
            ca, cb = self.identify(a), self.identify(b)
        except LimitExceeded as exc:
            return self.incomplete(path, exc)
        except Unreadable as exc:
            return self.incomplete(path, exc)
        if ca.name != cb.name:
            node = self._bytes(a, b, path, depth)
            return node.model_copy(
                update={
                    "notes": (*node.notes, f"formats differ: left is {ca.name}, right is {cb.name}")
                }
            )
        return self._run(ca, a, b, path, depth)

    def compare_with(
        self, comparator: Comparator, a: Blob, b: Blob, path: tuple[str, ...], depth: int
    ) -> DiffNode | None:
        """Like :meth:`compare`, with the format decided by the caller (an EIF's ramdisk
        sections are initramfs archives whatever their first bytes)."""
        try:
            if self.same_content(a, b):
                return None
        except (LimitExceeded, Unreadable) as exc:
            return self.incomplete(path, exc)
        if not self.ctx.budget.take():
            return None
        if depth > self.ctx.max_depth:
            return self._too_deep(a, b, path)
        return self._run(comparator, a, b, path, depth)

    def _too_deep(self, a: Blob, b: Blob, path: tuple[str, ...]) -> DiffNode:
        return DiffNode(
            path=path,
            kind=NodeKind.BINARY,
            change=Change.CONTENT,
            left=cheap_side(a, self.ctx.memory_bound),
            right=cheap_side(b, self.ctx.memory_bound),
            summary="content differs (not expanded: --max-depth reached)",
        )

    def _run(
        self, comparator: Comparator, a: Blob, b: Blob, path: tuple[str, ...], depth: int
    ) -> DiffNode:
        try:
            node = comparator.compare(a, b, path, self, depth)
        except LimitExceeded as exc:
            if exc.flag == MEMORY_FLAG:  # too large to parse in memory: compare its bytes
                self.ctx.limits_reached.append(exc.message)
                return self._fallback(a, b, path, depth, f"not parsed: {exc.message}")
            return self.incomplete(path, exc)
        except Unreadable as exc:
            self.ctx.unreadable.append(f"{'/'.join(path)}: {exc.message}")
            return self._fallback(a, b, path, depth, f"contents unreadable: {exc.message}")
        except InvalidInput as exc:
            return self._fallback(
                a, b, path, depth, f"{comparator.name} comparison failed: {exc.message}"
            )
        except _MALFORMED as exc:  # a parser tripped on malformed input: say so, go on
            return self._fallback(
                a,
                b,
                path,
                depth,
                f"{comparator.name} comparison failed: {type(exc).__name__}: {exc}",
            )
        if node is None:
            node = self._bytes(a, b, path, depth)
            node = node.model_copy(
                update={
                    "notes": (
                        *node.notes,
                        f"no {comparator.name}-level difference found; bytes differ",
                    )
                }
            )
        return node

    def _bytes(self, a: Blob, b: Blob, path: tuple[str, ...], depth: int) -> DiffNode:
        try:
            node = self.fallback.compare(a, b, path, self, depth)
        except (LimitExceeded, Unreadable) as exc:
            return self.incomplete(path, exc)
        if node is None:  # the bytes are equal after all (a stream that changed under us)
            node = DiffNode(
                path=path,
                kind=NodeKind.BINARY,
                change=Change.CONTENT,
                left=None,
                right=None,
                summary="content could not be compared",
            )
        return node

    def bytes_node(self, a: Blob, b: Blob, path: tuple[str, ...]) -> DiffNode | None:
        """The byte-level difference (the registry's catch-all comparator)."""
        return self._bytes(a, b, path, 0)

    def _fallback(self, a: Blob, b: Blob, path: tuple[str, ...], depth: int, note: str) -> DiffNode:
        node = self._bytes(a, b, path, depth)
        return node.model_copy(update={"notes": (*node.notes, note)})

    def incomplete(self, path: tuple[str, ...], error: InvalidInput) -> DiffNode:
        """A node for something that was not compared (a budget hit, unreadable data);
        recorded in the context, so the comparison is INCONCLUSIVE."""
        where = "/".join(path)
        if isinstance(error, LimitExceeded):
            self.ctx.limits_reached.append(error.message)
        else:
            self.ctx.unreadable.append(f"{where}: {error.message}")
        return DiffNode(
            path=path,
            kind=NodeKind.BINARY,
            change=Change.CONTENT,
            left=None,
            right=None,
            summary=f"not compared: {error.message}",
            notes=("incomplete: this part was not compared; the result is INCONCLUSIVE",),
        )

    # -- containers -----------------------------------------------------------------

    def compare_container(
        self,
        container: Container,
        a: Blob,
        b: Blob,
        path: tuple[str, ...],
        kind: NodeKind,
        depth: int,
    ) -> DiffNode | None:
        left = list(container.members(a, self))
        right = list(container.members(b, self))
        children = self.compare_members(left, right, path, depth)
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
        self, left: Sequence[Member], right: Sequence[Member], path: tuple[str, ...], depth: int
    ) -> tuple[DiffNode, ...]:
        """Pair members by name; report removed, added, reordered, metadata and content."""
        lmap = {m.name: m for m in left}
        rmap = {m.name: m for m in right}
        nodes: list[DiffNode] = []
        order = order_node([m.name for m in left], [m.name for m in right], path)
        if order is not None:
            nodes.append(order)
        for m in left:
            node = self.member_diff(m, rmap.get(m.name), path, depth)
            if node is not None:
                nodes.append(node)
        for m in right:
            if m.name not in lmap:
                node = self.member_diff(None, m, path, depth)
                if node is not None:
                    nodes.append(node)
        return self.cap(nodes, path)

    def member_diff(
        self, a: Member | None, b: Member | None, path: tuple[str, ...], depth: int
    ) -> DiffNode | None:
        """One member on both sides (or one): its presence, metadata and content."""
        m = a if a is not None else b
        assert m is not None
        mpath = (*path, m.name)
        fs_path = (b.fs_path if b is not None else None) or m.fs_path
        notes = tuple(dict.fromkeys((*(a.notes if a else ()), *(b.notes if b else ()))))
        if a is None or b is None:
            if not self.ctx.budget.take():
                return None
            present = a if a is not None else b
            assert present is not None
            side = Side.of(
                digest=_digest(present.blob),
                size=present.blob.known_size() if present.blob is not None else None,
                value=present.ftype,
                meta=_side_meta(present),
            )
            return DiffNode(
                path=mpath,
                kind=NodeKind.MEMBER,
                change=Change.REMOVED if b is None else Change.ADDED,
                left=side if a is not None else None,
                right=side if b is not None else None,
                summary=f"{_what(present)} only on the {'left' if b is None else 'right'}",
                notes=notes,
                fs_path=fs_path,
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
            content = self.compare(a.blob, b.blob, mpath, depth + 1)
        if content is None and not fields:
            return None
        if not self.ctx.budget.take(len(fields)):
            fields = fields[:1]
        left_side = Side.of(value=a.ftype, meta=_side_meta(a))
        right_side = Side.of(value=b.ftype, meta=_side_meta(b))
        if content is None:
            return DiffNode(
                path=mpath,
                kind=NodeKind.MEMBER,
                change=Change.METADATA,
                left=left_side,
                right=right_side,
                summary="metadata differs: " + ", ".join(f.name for f in fields),
                children=tuple(fields),
                notes=notes,
                fs_path=fs_path,
            )
        children = tuple(sorted((*content.children, *fields), key=importance))
        summary = content.summary
        if fields:
            summary += "; metadata differs: " + ", ".join(f.name for f in fields)
        cl, cr = content.left or Side(), content.right or Side()
        return content.model_copy(
            update={
                "children": children,
                "summary": summary,
                "notes": (*content.notes, *notes),
                "fs_path": fs_path,
                "left": cl.model_copy(update={"meta": left_side.meta}),
                "right": cr.model_copy(update={"meta": right_side.meta}),
            }
        )

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


def _digest(blob: Blob | None) -> str | None:
    if blob is None:
        return None
    cached = getattr(blob, "_digest", None)
    if isinstance(cached, str):
        return cached
    try:
        return blob.digest()
    except (LimitExceeded, Unreadable):
        return None


def _side_meta(member: Member) -> dict[str, str]:
    meta = {"type": member.ftype, **dict(member.meta)}
    if member.ftype == "file":
        try:
            kind = content_type(member.blob)
        except (LimitExceeded, Unreadable):
            kind = None
        if kind:
            meta["content"] = kind
    return meta


def _what(member: Member) -> str:
    meta = dict(member.meta)
    mode = meta.get("mode")
    return f"{member.ftype} (mode {mode})" if mode else member.ftype
