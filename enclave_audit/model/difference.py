"""The difference tree: what differs between two artefacts, where, why and which PCRs it moves.

A :class:`DiffNode` names a location as a tuple of path segments (``image.eif`` ->
``ramdisk[1]`` -> ``usr/bin/server`` -> ``.text`` -> ``main``), says what kind of thing
it is and how it changed, carries both sides (digest, size or a short value; ``None``
when the thing is absent on that side), a one-line summary, an optional bounded unified
diff, notes, the likely causes (:class:`CauseHint`) and the PCRs the difference moves.

The tree is presentation-free; :mod:`verifier.compare.render` and ``reports`` draw it.
A whole tree is saved as a :class:`DiffReport`, a schema-versioned JSON document.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from enclave_audit.errors import InvalidInput
from enclave_audit.model._versioning import load_versioned

SCHEMA: Literal["enclave-audit/diff"] = "enclave-audit/diff"
SCHEMA_VERSION = 1

#: a bounded unified diff keeps at most this many lines (diffoscope's per-diff limit idea)
MAX_DIFF_LINES = 200
#: a side's short value (a field, a few bytes of hex, a line) keeps at most this many characters
MAX_VALUE_CHARS = 512


class NodeKind(StrEnum):
    """What a node is about."""

    IMAGE = "image"  # an EIF
    SECTION = "section"  # an EIF section
    KERNEL = "kernel"  # a kernel image (bzImage)
    ARCHIVE = "archive"  # cpio, tar, zip, gzip, xz
    DIRECTORY = "directory"
    MEMBER = "member"  # a file inside an archive or directory
    ELF = "elf"
    ELF_SECTION = "elf-section"
    SYMBOL = "symbol"
    PYC = "pyc"
    TEXT = "text"
    BINARY = "binary"
    FIELD = "field"  # one metadata value: mtime, mode, uid, DW_AT_comp_dir, build-id ...
    ORDER = "order"  # member order of a container


class Change(StrEnum):
    ADDED = "added"  # only on the right
    REMOVED = "removed"  # only on the left
    CONTENT = "content"  # both present, different content
    METADATA = "metadata"  # same content, different metadata (mode, owner, mtime ...)
    REORDERED = "reordered"  # same members, different order


class Cause(StrEnum):
    """Likely causes of a difference (ordered roughly by how often they explain rebuild noise)."""

    TIMESTAMP = "timestamp"
    BUILD_PATH = "build-path"
    FILE_ORDER = "file-order"
    OWNERSHIP = "ownership"  # owner, group or mode
    LOCALE = "locale"
    TOOLCHAIN = "toolchain"
    BUILD_ID = "build-id"  # build-id that follows from other differences
    DEBUG_SYMBOLS = "debug-symbols"  # stripped on one side, not the other
    RANDOM = "random"
    DERIVED = "derived"  # a checksum, digest or signature over other differences
    UNKNOWN = "unknown"

    @property
    def label(self) -> str:
        return _CAUSE_LABELS[self]


_CAUSE_LABELS: dict[Cause, str] = {
    Cause.TIMESTAMP: "embedded timestamp",
    Cause.BUILD_PATH: "build path",
    Cause.FILE_ORDER: "file order",
    Cause.OWNERSHIP: "owner/mode",
    Cause.LOCALE: "locale",
    Cause.TOOLCHAIN: "toolchain version",
    Cause.BUILD_ID: "build-id derived from other changes",
    Cause.DEBUG_SYMBOLS: "stripped vs unstripped",
    Cause.RANDOM: "random data",
    Cause.DERIVED: "follows from other differences (checksum, digest, signature)",
    Cause.UNKNOWN: "unknown (a real content change?)",
}


class CauseHint(BaseModel):
    """A likely cause and the evidence that suggests it (shown to the reader)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cause: Cause
    evidence: str


class Side(BaseModel):
    """One side of a difference: whatever is known about it (all optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    digest: str | None = None  # "sha256:<hex>"
    size: int | None = None
    value: str | None = None  # a short rendering: a field value, hex bytes, a line

    @classmethod
    def of(
        cls, *, digest: str | None = None, size: int | None = None, value: object = None
    ) -> Side:
        text = None if value is None else str(value)
        if text is not None and len(text) > MAX_VALUE_CHARS:
            text = text[: MAX_VALUE_CHARS - 1] + "…"
        return cls(digest=digest, size=size, value=text)


class DiffNode(BaseModel):
    """One difference, located by path, with its children (the finer differences)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: tuple[str, ...]
    kind: NodeKind
    change: Change
    left: Side | None
    right: Side | None
    summary: str
    unified_diff: str | None = None
    notes: tuple[str, ...] = ()
    causes: tuple[CauseHint, ...] = ()
    pcrs: tuple[int, ...] = ()
    children: tuple[DiffNode, ...] = ()

    @property
    def name(self) -> str:
        return self.path[-1] if self.path else ""

    def walk(self) -> Iterator[DiffNode]:
        """This node and all descendants, depth first, in order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def leaves(self) -> Iterator[DiffNode]:
        if not self.children:
            yield self
            return
        for child in self.children:
            yield from child.leaves()

    def find(self, *suffix: str) -> DiffNode | None:
        """The first node whose path ends with ``suffix``."""
        n = len(suffix)
        for node in self.walk():
            if node.path[-n:] == suffix:
                return node
        return None

    def all_causes(self) -> tuple[Cause, ...]:
        """Causes attached anywhere in this subtree, without duplicates, in tree order."""
        seen: list[Cause] = []
        for node in self.walk():
            for hint in node.causes:
                if hint.cause not in seen:
                    seen.append(hint.cause)
        return tuple(seen)

    def count(self) -> int:
        return sum(1 for _ in self.walk())


def bounded_diff(lines: list[str], *, limit: int = MAX_DIFF_LINES) -> str:
    """Join diff lines, cutting after ``limit`` lines with a marker counting the rest."""
    if len(lines) <= limit:
        return "\n".join(lines)
    kept = lines[:limit]
    kept.append(f"[… {len(lines) - limit} more diff lines left out]")
    return "\n".join(kept)


class DiffStats(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    nodes: int
    truncated: bool  # the node budget was reached; some differences are summarized only
    bytes_compared: int
    seconds: float


class DiffReport(BaseModel):
    """The saved form of a comparison: schema-versioned, first key names the schema."""

    schema_: Literal["enclave-audit/diff"] = Field(default=SCHEMA, alias="schema")
    schema_version: int = SCHEMA_VERSION
    left: str
    right: str
    identical: bool
    root: DiffNode | None
    stats: DiffStats

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True)

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "diff report") -> DiffReport:
        return load_versioned(
            cls, text, schema=SCHEMA, version=SCHEMA_VERSION, source=source, error=InvalidInput
        )
