"""The diffoscope-like comparison engine for enclave images.

``COMPARATORS`` is the ordered registry, most specific first; the last entry (bytes)
recognizes everything.  Adding a format = one module here + one entry below + one test
module under ``tests/verifier/compare/``.  :func:`compare_paths` builds an engine with a
registry (this one unless another is injected), runs it, and classifies the tree.

Import structure (no cycles): ``base`` (blobs, context, protocols) <- ``nodes`` (node
helpers) <- comparators; ``engine`` uses ``base`` and ``nodes`` only; this module wires
them together.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from enclave_audit.errors import InputNotFound, InvalidInput
from enclave_audit.limits import Limits
from enclave_audit.model.difference import DiffReport, DiffStats
from enclave_audit.progress import NullProgress, ProgressSink
from verifier.compare.archive import GzipComparator, TarComparator, XzComparator, ZipComparator
from verifier.compare.base import Budget, Comparator, CompareContext, FileBlob
from verifier.compare.binary import BinaryComparator
from verifier.compare.causes import classify, significance_counts
from verifier.compare.cpio import CpioComparator
from verifier.compare.directory import compare_directories
from verifier.compare.eif import EifComparator
from verifier.compare.elf import ElfComparator
from verifier.compare.engine import Engine
from verifier.compare.evidence import Evidence
from verifier.compare.kernel import KernelComparator
from verifier.compare.pyc import PycComparator
from verifier.compare.text import TextComparator

COMPARATORS: tuple[Comparator, ...] = (
    EifComparator(),
    CpioComparator(),
    KernelComparator(),
    ElfComparator(),
    PycComparator(),
    GzipComparator(),
    XzComparator(),
    ZipComparator(),
    TarComparator(),
    TextComparator(),
    BinaryComparator(),
)


def compare_paths(
    left: Path,
    right: Path,
    *,
    max_depth: int = 32,
    max_nodes: int = 20000,
    limits: Limits | None = None,
    evidence: Evidence | None = None,
    progress: ProgressSink | None = None,
    registry: Sequence[Comparator] | None = None,
    now: float | None = None,
) -> DiffReport:
    """Compare two files or two directories and explain the differences (the ``diff`` verb).

    ``evidence`` carries what the caller knows about each side's build (the verify path
    passes the manifests' ``SOURCE_DATE_EPOCH``); the comparators add what the images
    record themselves.  A budget hit or an unreadable part makes the verdict INCONCLUSIVE.
    """
    left, right = Path(left), Path(right)
    for p in (left, right):
        if not p.exists():
            raise InputNotFound(f"{p}: no such file or directory")
    if left.is_dir() != right.is_dir():
        raise InvalidInput(f"cannot compare a directory with a file: {left} vs {right}")
    started = time.monotonic()
    evidence = evidence or Evidence()
    for path, side in ((left, evidence.left), (right, evidence.right)):
        if path.is_file():
            side.add_time(os.stat(path).st_mtime, f"modification time of {path.name}", epoch=False)
    with tempfile.TemporaryDirectory(prefix="enclave-audit-diff-") as tmp:
        ctx = CompareContext(
            workdir=Path(tmp),
            max_depth=max_depth,
            limits=limits or Limits(),
            budget=Budget(max_nodes=max_nodes),
            progress=progress or NullProgress(),
            evidence=evidence,
        )
        engine = Engine(ctx, registry if registry is not None else COMPARATORS)
        label = left.name if left.name == right.name else f"{left.name} vs {right.name}"
        if left.is_dir():
            root = compare_directories(left, right, (label,), engine, 0)
        else:
            root = engine.compare(FileBlob(left), FileBlob(right), (label,), 0)
        if root is not None:
            root = classify(root, evidence, now=now)
        stats = DiffStats(
            nodes=root.count() if root is not None else 0,
            truncated=ctx.budget.truncated,
            bytes_compared=ctx.budget.bytes_compared,
            seconds=round(time.monotonic() - started, 3),
            bytes_decompressed=ctx.decompression.used,
            limits_reached=tuple(dict.fromkeys(ctx.limits_reached)),
            unreadable=tuple(dict.fromkeys(ctx.unreadable)),
        )
    incomplete = bool(stats.limits_reached or stats.unreadable)
    return DiffReport(
        left=str(left),
        right=str(right),
        identical=root is None,
        root=root,
        stats=stats,
        verdict="INCONCLUSIVE" if incomplete else ("IDENTICAL" if root is None else "DIFFERENT"),
        significance=significance_counts(root) if root is not None else {},
    )


__all__ = ["COMPARATORS", "Engine", "compare_paths"]
