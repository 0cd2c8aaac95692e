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
SCHEMA_VERSION = 2

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
    """Causes of a difference.

    The benign ones (timestamp ... random) explain rebuild noise; a classifier claims one
    only with positive evidence.  DERIVED and BUILD_ID follow from other differences.
    SECURITY, REAL and UNEXPLAINED are never benign: a security-relevant change, a change
    positively identified as real (a host, URL, key, digest or instruction), and a
    difference no classifier found evidence for.
    """

    TIMESTAMP = "timestamp"
    BUILD_PATH = "build-path"
    BUILD_ENVIRONMENT = "build-environment"  # build user, host, build counter
    FILE_ORDER = "file-order"
    OWNERSHIP = "ownership"  # owner, group or permission bits (not privilege bits)
    LOCALE = "locale"
    TOOLCHAIN = "toolchain"
    BUILD_ID = "build-id"  # build-id that follows from other differences
    DEBUG_SYMBOLS = "debug-symbols"  # stripped on one side, not the other
    RANDOM = "random"
    DERIVED = "derived"  # a checksum, digest or signature over other differences
    SECURITY = "security-relevant"
    REAL = "real-change"
    UNEXPLAINED = "unexplained"
    UNKNOWN = "unexplained"  # the name before schema version 2 (an alias)

    @property
    def label(self) -> str:
        return _CAUSE_LABELS[self]

    @property
    def benign(self) -> bool:
        return self in BENIGN_CAUSES


_CAUSE_LABELS: dict[Cause, str] = {
    Cause.TIMESTAMP: "embedded timestamp",
    Cause.BUILD_PATH: "build path",
    Cause.BUILD_ENVIRONMENT: "build environment (user, host, counter)",
    Cause.FILE_ORDER: "file order",
    Cause.OWNERSHIP: "owner/mode of the build",
    Cause.LOCALE: "locale",
    Cause.TOOLCHAIN: "toolchain version",
    Cause.BUILD_ID: "build-id derived from other changes",
    Cause.DEBUG_SYMBOLS: "stripped vs unstripped",
    Cause.RANDOM: "randomized by design",
    Cause.DERIVED: "follows from other differences (checksum, digest, signature)",
    Cause.SECURITY: "security-relevant change",
    Cause.REAL: "real change",
    Cause.UNEXPLAINED: "unexplained (no evidence of a benign cause)",
}

#: nondeterminism: claimed only with positive evidence
BENIGN_CAUSES = frozenset(
    {
        Cause.TIMESTAMP,
        Cause.BUILD_PATH,
        Cause.BUILD_ENVIRONMENT,
        Cause.FILE_ORDER,
        Cause.OWNERSHIP,
        Cause.LOCALE,
        Cause.TOOLCHAIN,
        Cause.DEBUG_SYMBOLS,
        Cause.RANDOM,
    }
)
#: values computed from other differences
DERIVED_CAUSES = frozenset({Cause.DERIVED, Cause.BUILD_ID})


class Confidence(StrEnum):
    """How strongly the evidence supports a cause; LOW never explains a difference away."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Significance(StrEnum):
    """What a difference means for the auditor, most important first."""

    SECURITY = "security-relevant"  # privilege bits, loader config, init, keys, cmdline ...
    UNEXPLAINED = "unexplained"  # no evidence of a benign cause: treat it as real
    BENIGN = "benign"  # nondeterminism, with evidence
    DERIVED = "derived"  # follows from other differences

    @property
    def rank(self) -> int:
        return _SIGNIFICANCE_RANK[self]


_SIGNIFICANCE_RANK = {
    Significance.SECURITY: 0,
    Significance.UNEXPLAINED: 1,
    Significance.BENIGN: 2,
    Significance.DERIVED: 3,
}


class CauseHint(BaseModel):
    """A cause, what the classifier matched, what it checked that against, and how sure it is.

    ``evidence`` is the one line shown to the reader; ``matched`` and ``against`` are its
    parts (for example ``'/tmp/a' vs '/tmp/b'`` against ``DW_AT_comp_dir of both sides``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cause: Cause
    evidence: str
    matched: str = ""
    against: str = ""
    confidence: Confidence = Confidence.MEDIUM

    @property
    def explains(self) -> bool:
        """A benign or derived cause with enough evidence to explain the difference away."""
        return (
            self.cause in BENIGN_CAUSES or self.cause in DERIVED_CAUSES
        ) and self.confidence is not Confidence.LOW


class Side(BaseModel):
    """One side of a difference: whatever is known about it (all optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    digest: str | None = None  # "sha256:<hex>"
    size: int | None = None
    value: str | None = None  # a short rendering: a field value, hex bytes, a line
    #: for an archive member: its metadata on this side (type, mode, uid, gid, link, content)
    meta: dict[str, str] | None = None

    @classmethod
    def of(
        cls,
        *,
        digest: str | None = None,
        size: int | None = None,
        value: object = None,
        meta: dict[str, str] | None = None,
    ) -> Side:
        text = None if value is None else str(value)
        if text is not None and len(text) > MAX_VALUE_CHARS:
            text = text[: MAX_VALUE_CHARS - 1] + "…"
        return cls(digest=digest, size=size, value=text, meta=meta)


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
    #: set by the classifier: the most important meaning of this node or anything below it
    significance: Significance | None = None
    #: for a filesystem member (ramdisk, rootfs tree, tar): its path as the kernel unpacks
    #: it (``.``, ``..`` and ``//`` resolved, relative to the root)
    fs_path: str | None = None
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
    bytes_decompressed: int = 0
    #: budgets that were hit, each naming the limit and the flag that raises it: the
    #: comparison is incomplete (INCONCLUSIVE)
    limits_reached: tuple[str, ...] = ()
    #: parts that could not be read at all (the comparison is incomplete)
    unreadable: tuple[str, ...] = ()


class DiffReport(BaseModel):
    """The saved form of a comparison: schema-versioned, first key names the schema."""

    schema_: Literal["enclave-audit/diff"] = Field(default=SCHEMA, alias="schema")
    schema_version: int = SCHEMA_VERSION
    left: str
    right: str
    identical: bool
    root: DiffNode | None
    stats: DiffStats
    #: IDENTICAL, DIFFERENT, or INCONCLUSIVE when a part could not be read or compared
    verdict: Literal["IDENTICAL", "DIFFERENT", "INCONCLUSIVE"] = "DIFFERENT"
    #: how many differences (leaves) have each significance, most important first
    significance: dict[str, int] = Field(default_factory=dict)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @property
    def complete(self) -> bool:
        """Every part was read and compared (no budget hit, nothing unreadable)."""
        return not self.stats.limits_reached and not self.stats.unreadable

    def to_json(self) -> str:
        """JSON text; names that came as undecodable bytes are written visibly (``\\xNN``)."""
        from enclave_runtime.strictjson import dumps_model

        return dumps_model(self, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "diff report") -> DiffReport:
        return load_versioned(
            cls, text, schema=SCHEMA, version=SCHEMA_VERSION, source=source, error=InvalidInput
        )
