"""``diff --exclude GLOB``: leave matching differences out of a report.

A node is left out when a glob matches its path below the compared inputs (the parts
joined with ``/``, e.g. ``ramdisk[1]/usr/lib/python3.11/x.pyc``) or its own name.
Containers whose differences were all left out disappear too, and the report is
identical when nothing is left; a container that differs in its own right (a header
field, a size) stays, and with nothing below it left it is judged by its own evidence.
Significance, the causes summarised from below, the order and the counts are computed
again from what is left.  What was left out is counted in a note on the root.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from enclave_audit.model.difference import DiffNode, DiffReport
from verifier.compare.causes import reclassify, significance_counts


def _matches(node: DiffNode, globs: Sequence[str]) -> bool:
    below = "/".join(node.path[1:])
    return any(fnmatchcase(below, g) or fnmatchcase(node.name, g) for g in globs)


def _prune(node: DiffNode, globs: Sequence[str], dropped: list[int]) -> DiffNode | None:
    if node.path[1:] and _matches(node, globs):
        dropped[0] += node.count()
        return None
    if not node.children:
        return node
    kept = [c for c in (_prune(child, globs, dropped) for child in node.children) if c]
    if not kept:
        own = node.unified_diff is not None or (
            node.left is not None
            and node.right is not None
            and (node.left.value, node.left.digest) != (node.right.value, node.right.digest)
            and node.left.value is not None
        )
        if not own:
            return None
    pcrs = tuple(sorted({p for c in kept for p in c.pcrs})) if kept else node.pcrs
    return node.model_copy(update={"children": tuple(kept), "pcrs": pcrs})


def exclude_paths(report: DiffReport, globs: Sequence[str]) -> DiffReport:
    """``report`` without the differences that ``globs`` match."""
    if report.root is None or not globs:
        return report
    dropped = [0]
    root = _prune(report.root, globs, dropped)
    if root is not None:
        root = reclassify(root)
        if dropped[0]:
            note = f"--exclude {' '.join(globs)}: {dropped[0]} difference node(s) left out"
            root = root.model_copy(update={"notes": (*root.notes, note)})
    verdict = (
        "INCONCLUSIVE" if not report.complete else ("IDENTICAL" if root is None else "DIFFERENT")
    )
    return report.model_copy(
        update={
            "root": root,
            "identical": root is None,
            "verdict": verdict,
            "significance": significance_counts(root) if root is not None else {},
            "stats": report.stats.model_copy(
                update={"nodes": root.count() if root is not None else 0}
            ),
        }
    )
