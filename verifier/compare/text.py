"""Text and JSON: a bounded unified diff (JSON compared after canonical formatting)."""

from __future__ import annotations

import difflib
import json

from enclave_audit.model.difference import Change, DiffNode, NodeKind, Side, bounded_diff
from enclave_runtime import strictjson
from verifier.compare.base import Blob, EngineApi

#: texts with more lines than this get a line-set summary instead of difflib (quadratic)
MAX_DIFF_INPUT_LINES = 50000
#: texts larger than this are compared as bytes (a diff of them would be unreadable anyway)
MAX_TEXT = 16 << 20


def looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut at the end of the head is still text
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def unified(left: list[str], right: list[str], *, name: str, limit: int) -> tuple[str, int, int]:
    """(bounded unified diff, lines removed, lines added)."""
    if len(left) + len(right) > 2 * MAX_DIFF_INPUT_LINES:
        lset, rset = set(left), set(right)
        removed = [f"-{x}" for x in left if x not in rset]
        added = [f"+{x}" for x in right if x not in lset]
        lines = [
            f"--- a/{name}",
            f"+++ b/{name}",
            "@@ line sets (too long for a positional diff) @@",
        ]
        lines += removed + added
        return bounded_diff(lines, limit=limit), len(removed), len(added)
    lines = list(
        difflib.unified_diff(
            left, right, fromfile=f"a/{name}", tofile=f"b/{name}", lineterm="", n=2
        )
    )
    n_removed = sum(1 for x in lines if x.startswith("-") and not x.startswith("---"))
    n_added = sum(1 for x in lines if x.startswith("+") and not x.startswith("+++"))
    return bounded_diff(lines, limit=limit), n_removed, n_added


def _folded(lines: list[str]) -> list[str]:
    return ["".join(ch for ch in x.casefold() if ch.isalnum()) for x in lines]


def collation_note(left: list[str], right: list[str]) -> str | None:
    """Say so when one side is in byte order and the other in a locale's collation order."""
    if len(left) < 2:
        return None
    lc, rc = left == sorted(left), right == sorted(right)
    lf, rf = _folded(left) == sorted(_folded(left)), _folded(right) == sorted(_folded(right))
    if lc and rf and not rc:
        return (
            "collation: left is in byte (C locale) order, right in case-insensitive (locale) order"
        )
    if rc and lf and not lc:
        return (
            "collation: right is in byte (C locale) order, left in case-insensitive (locale) order"
        )
    return None


def text_node(
    path: tuple[str, ...],
    left: str,
    right: str,
    *,
    limit: int,
    what: str = "text",
    kind: NodeKind = NodeKind.TEXT,
    left_side: Side | None = None,
    right_side: Side | None = None,
) -> DiffNode | None:
    if left == right:
        return None
    llines, rlines = left.splitlines(), right.splitlines()
    diff, removed, added = unified(llines, rlines, name=path[-1] if path else what, limit=limit)
    notes: list[str] = []
    if sorted(llines) == sorted(rlines):
        notes.append("same lines in a different order")
        collation = collation_note(llines, rlines)
        if collation:
            notes.append(collation)
    elif left.split() == right.split():
        notes.append("whitespace differences only")
    return DiffNode(
        path=path,
        kind=kind,
        change=Change.CONTENT,
        left=left_side or Side.of(size=len(left.encode())),
        right=right_side or Side.of(size=len(right.encode())),
        summary=f"{what} differs: -{removed} +{added} lines",
        unified_diff=diff,
        notes=tuple(notes),
    )


class TextComparator:
    """UTF-8 text without NUL bytes, below the in-memory bound."""

    name = "text"

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return looks_like_text(head)

    def compare(
        self, a: Blob, b: Blob, path: tuple[str, ...], engine: EngineApi, depth: int
    ) -> DiffNode | None:
        bound = min(engine.ctx.memory_bound, MAX_TEXT)
        sa, sb = a.known_size(), b.known_size()
        if (sa is not None and sa > bound) or (sb is not None and sb > bound):
            return None  # the engine falls back to the byte comparison
        da, db = a.read_all(bound), b.read_all(bound)
        try:
            ta, tb = da.decode("utf-8"), db.decode("utf-8")
        except UnicodeDecodeError:
            return None
        left_side = Side.of(digest=a.digest(), size=len(da))
        right_side = Side.of(digest=b.digest(), size=len(db))
        ja, jb = _json(ta), _json(tb)
        if ja is not None and jb is not None:
            ca = json.dumps(ja[0], indent=2, sort_keys=True, ensure_ascii=False)
            cb = json.dumps(jb[0], indent=2, sort_keys=True, ensure_ascii=False)
            if ca == cb:
                return DiffNode(
                    path=path,
                    kind=NodeKind.TEXT,
                    change=Change.CONTENT,
                    left=left_side,
                    right=right_side,
                    summary="JSON equal after canonical formatting: key order or whitespace only",
                    notes=("same JSON value; key order or formatting differs",),
                )
            node = text_node(
                path,
                ca,
                cb,
                limit=engine.ctx.diff_lines,
                what="JSON",
                left_side=left_side,
                right_side=right_side,
            )
            return node
        return text_node(
            path, ta, tb, limit=engine.ctx.diff_lines, left_side=left_side, right_side=right_side
        )


def _json(text: str) -> tuple[object] | None:
    stripped = text.lstrip()
    if not stripped or stripped[0] not in "{[":
        return None
    # strict (enclave_runtime.strictjson): a duplicate key, NaN, a huge number or deep nesting
    # is compared as text, never claimed "the same JSON value" (a reader may take the first
    # of two duplicate keys, where json.loads keeps the last) nor a crash
    try:
        return (strictjson.loads(text, what="JSON", error=ValueError),)
    except ValueError:
        return None
