"""Rendering a :class:`DiffReport`: text (rich), JSON, and markdown/HTML through templates.

Every view puts the most important differences first: security-relevant changes, then
unexplained ones (no evidence of a benign cause), then benign ones with their evidence,
then derived values.  The summary says how many of each there are, and says so plainly
when a difference is unexplained or when the comparison is incomplete (INCONCLUSIVE).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text
from rich.tree import Tree

from enclave_audit.model.difference import (
    Cause,
    CauseHint,
    DiffNode,
    DiffReport,
    NodeKind,
    Significance,
)
from enclave_audit.output import visible
from enclave_audit.templating import environment
from verifier.compare.causes import items, own_hints, own_significance

SEP = " › "
HEADLINES = 10
TREE_CHILDREN = 40
TREE_DIFF_LINES = 24


class DiffFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    HTML = "html"
    MARKDOWN = "markdown"


def pcr_label(pcrs: tuple[int, ...]) -> str:
    return ", ".join(f"PCR{p}" for p in pcrs)


def item_significance(node: DiffNode) -> Significance:
    """The meaning of one difference by itself (not of what lies below it)."""
    return own_significance(own_hints(node))


def headlines(root: DiffNode, limit: int = HEADLINES) -> list[DiffNode]:
    """The most important differences, most significant first: one per differing file."""
    ordered = sorted(
        items(root),
        key=lambda n: (
            item_significance(n).rank,
            0 if any(h.cause is Cause.REAL for h in own_hints(n)) else 1,
            0 if n.pcrs else 1,
            -len(n.path),  # the most precise location first (file › section › symbol)
        ),
    )
    out: list[DiffNode] = []
    seen_groups: dict[tuple[str, ...], Significance] = {}
    by_path = {n.path: n for n in root.walk()}
    for item in ordered:
        if item.kind is NodeKind.FIELD and item.name == "crc32":
            continue
        significance = item_significance(item)
        # one line per file and meaning: group by the first file-level ancestor
        group = _group(by_path, item)
        if seen_groups.get(group) is significance or (
            group in seen_groups and significance.rank >= Significance.BENIGN.rank
        ):
            continue
        seen_groups.setdefault(group, significance)
        out.append(item)
        if len(out) >= limit:
            break
    return out


def first_cause(node: DiffNode) -> CauseHint | None:
    """The hint that decides the node's meaning (security, real, unexplained, then benign)."""
    hints = own_hints(node) or list(node.causes)
    for wanted in (Cause.SECURITY, Cause.REAL, Cause.UNEXPLAINED):
        for h in hints:
            if h.cause is wanted:
                return h
    explaining = [h for h in hints if h.explains]
    return explaining[0] if explaining else (hints[0] if hints else None)


_FILE_KINDS = (
    NodeKind.ELF,
    NodeKind.PYC,
    NodeKind.TEXT,
    NodeKind.MEMBER,
    NodeKind.BINARY,
    NodeKind.KERNEL,
)


def _group(by_path: dict[tuple[str, ...], DiffNode], leaf: DiffNode) -> tuple[str, ...]:
    """The first ancestor (from the top) that is a file-level thing: member, ELF, pyc..."""
    for k in range(2, len(leaf.path) + 1):
        node = by_path.get(leaf.path[:k])
        if node is not None and node.kind in _FILE_KINDS:
            return node.path
    return leaf.path[:-1]


def describe_hint(h: CauseHint) -> str:
    confidence = "" if h.cause in (Cause.UNEXPLAINED,) else f" ({h.confidence.value} confidence)"
    return f"{h.cause.value}{confidence}: {h.evidence}"


def _causes(node: DiffNode, n: int = 2) -> str:
    first = first_cause(node)
    if first is None:
        return ""
    rest = [h for h in node.causes if h is not first][: n - 1]
    return "; ".join(describe_hint(h) for h in (first, *rest))


_STYLE = {
    Significance.SECURITY: "bold red",
    Significance.UNEXPLAINED: "bold yellow",
    Significance.BENIGN: "green",
    Significance.DERIVED: "dim",
}


def summary_lines(report: DiffReport) -> list[str]:
    """Plain sentences: how many differences of each meaning, and what is incomplete.

    The first line always says whether anything is unexplained or security-relevant.
    """
    root = report.root
    lines: list[str] = []
    counts = report.significance
    if root is not None:
        n_sec = counts.get(Significance.SECURITY.value, 0)
        n_unx = counts.get(Significance.UNEXPLAINED.value, 0)
        n_ben = counts.get(Significance.BENIGN.value, 0)
        n_der = counts.get(Significance.DERIVED.value, 0)
        parts = []
        if n_sec:
            parts.append(f"Security-relevant: {n_sec}")
        if n_unx:
            parts.append(f"Unexplained: {n_unx} (no evidence of a benign cause: real changes)")
        if n_ben:
            benign = ", ".join(f"{c.label} {n}" for c, n in cause_summary(root))
            parts.append(f"Benign, with evidence: {n_ben} ({benign})")
        if n_der:
            parts.append(f"Derived: {n_der}")
        if not n_sec and not n_unx and (n_ben or n_der):
            parts.append("every difference is explained by evidence")
        lines.append("; ".join(parts))
    if report.stats.limits_reached or report.stats.unreadable:
        lines.append(
            "INCONCLUSIVE: not everything was compared — "
            + "; ".join((*report.stats.limits_reached, *report.stats.unreadable))
        )
    return lines


def render_text(report: DiffReport, console: Console) -> None:
    """The text report on ``console`` (a SafeConsole: every value is shown as data)."""
    root = report.root
    left, right = visible(report.left), visible(report.right)
    if root is None and report.complete:
        console.print(
            Text.assemble(("identical", "bold green"), f": {left} and {right} have the same bytes")
        )
        return
    if root is None:
        console.print(Text.assemble(("INCONCLUSIVE", "bold yellow"), f": {left} vs {right}"))
        for sentence in summary_lines(report):
            console.print(Text(visible(sentence)))
        return
    pcrs = f" — PCRs affected: {pcr_label(root.pcrs)}" if root.pcrs else ""
    verdict = "different" if report.complete else "different, INCONCLUSIVE"
    console.print(Text.assemble((verdict, "bold red"), f": {left} vs {right}{pcrs}"))
    for sentence in summary_lines(report):
        console.print(Text(visible(sentence)))
    console.print(
        Text.assemble(
            ("Most important differences", "bold"),
            " (security-relevant, then unexplained; file › section › symbol):",
        )
    )
    for i, item in enumerate(headlines(root), 1):
        where = visible(SEP.join(item.path[1:]) or item.path[0])
        significance = item_significance(item)
        line = Text.assemble(
            f" {i:>2}. ",
            (significance.value.upper(), _STYLE[significance]),
            " ",
            (where, "bold"),
        )
        if item.pcrs:
            line.append(f" [{pcr_label(item.pcrs)}]", style="magenta")
        line.append(f": {visible(item.summary)}")
        console.print(line)
        cause = _causes(item, 1)
        if cause:
            console.print(Text.assemble("     ", ("cause", "yellow"), f" {visible(cause)}"))
    if report.stats.truncated:
        console.print(
            Text.assemble(
                ("note", "yellow"), ": output limits reached; some differences are summarized only"
            )
        )
    for note in root.notes:
        console.print(Text.assemble(("note", "yellow"), f": {visible(note)}"))
    console.print()
    console.print(_tree(root))


def cause_summary(root: DiffNode) -> list[tuple[Cause, int]]:
    """Benign causes that explain differences, with how many each explains."""
    counts: dict[Cause, int] = {}
    for item in items(root):
        if item_significance(item) is not Significance.BENIGN:
            continue
        first = first_cause(item)
        if first is not None:
            counts[first.cause] = counts.get(first.cause, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def _label(node: DiffNode) -> RenderableType:
    text = Text()
    if node.significance is not None and node.significance is not Significance.BENIGN:
        text.append(f"{node.significance.value.upper()} ", style=_STYLE[node.significance])
    text.append(visible(node.name) or "(root)", style="bold")
    text.append(f" [{node.change.value}] ", style="dim")
    text.append(visible(node.summary))
    if node.pcrs:
        text.append(f"  ({pcr_label(node.pcrs)})", style="magenta")
    parts: list[RenderableType] = [text]
    if node.causes and not node.children:
        parts.append(Text(f"cause: {visible(_causes(node))}", style="yellow"))
    for note in node.notes:
        parts.append(Text(f"note: {visible(note)}", style="dim"))
    if (
        node.left is not None
        and node.left.value
        and not node.children
        and node.unified_diff is None
    ):
        parts.append(Text(f"- {visible(node.left.value)}", style="red"))
    if (
        node.right is not None
        and node.right.value
        and not node.children
        and node.unified_diff is None
    ):
        parts.append(Text(f"+ {visible(node.right.value)}", style="green"))
    if node.unified_diff:
        lines = [visible(line) for line in node.unified_diff.split("\n")]
        shown = "\n".join(lines[:TREE_DIFF_LINES])
        if len(lines) > TREE_DIFF_LINES:
            shown += f"\n[… {len(lines) - TREE_DIFF_LINES} more lines in the JSON output]"
        parts.append(Syntax(shown, "diff", theme="ansi_dark", word_wrap=True))
    return Group(*parts)


def _tree(root: DiffNode) -> Tree:
    tree = Tree(_label(root))

    def add(parent: Tree, node: DiffNode) -> None:
        for child in node.children[:TREE_CHILDREN]:
            add(parent.add(_label(child)), child)
        if len(node.children) > TREE_CHILDREN:
            parent.add(
                Text(
                    f"… {len(node.children) - TREE_CHILDREN} more (see --format json)", style="dim"
                )
            )

    add(tree, root)
    return tree


PcrRow = tuple[int, str | None, str | None]


def render_template(
    report: DiffReport, fmt: DiffFormat, *, pcr_rows: list[PcrRow] | None = None
) -> str:
    """Markdown or HTML through jinja2 templates (autoescape for HTML, StrictUndefined).

    ``pcr_rows``: (index, left hex, right hex) when both inputs are EIFs, for the
    measurements table.  Markdown values are escaped by the ``md`` filter.
    """
    env = environment(
        Path(__file__).parent / "templates", autoescape=fmt is DiffFormat.HTML, compact=True
    )
    name = "diff.html.j2" if fmt is DiffFormat.HTML else "diff.md.j2"
    template = env.get_template(name)
    root = report.root
    return template.render(
        report=report,
        root=root,
        headlines=headlines(root) if root is not None else [],
        causes=cause_summary(root) if root is not None else [],
        summary=summary_lines(report),
        significance_of=item_significance,
        first_cause=first_cause,
        nodes=list(root.walk()) if root is not None else [],
        sep=SEP,
        pcr_label=pcr_label,
        pcr_rows=pcr_rows or [],
    )
