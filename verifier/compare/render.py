"""Rendering a :class:`DiffReport`: text (rich), JSON, and markdown/HTML through templates.

The text view puts the most important differences first: a headline list naming each
differing file down to its section and symbol, with PCRs and causes, before the tree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text
from rich.tree import Tree

from enclave_audit.model.difference import Cause, DiffNode, DiffReport, NodeKind
from enclave_audit.output import visible, visible_lines

SEP = " › "
HEADLINES = 10
TREE_CHILDREN = 40
TREE_DIFF_LINES = 24


class DiffFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    HTML = "html"
    MARKDOWN = "markdown"


def md_escape(value: object) -> str:
    """An untrusted value inside Markdown: one line, no markup, no HTML, shown as data."""
    text = visible(value)
    for ch in ("\\", "`", "*", "_", "[", "]", "<", ">", "|", "#", "!"):
        text = text.replace(ch, "\\" + ch)
    return text


def _as_data(value: object) -> object:
    """Every value a template prints: control and bidi characters made visible.

    Markup (a macro's output, already built from finalized values) passes unchanged.
    """
    from markupsafe import Markup

    if isinstance(value, str) and not isinstance(value, Markup):
        return visible_lines(value)
    return value


def md_fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text`` (it cannot close early)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def pcr_label(pcrs: tuple[int, ...]) -> str:
    return ", ".join(f"PCR{p}" for p in pcrs)


def headlines(root: DiffNode, limit: int = HEADLINES) -> list[DiffNode]:
    """The most important differences: for each differing thing, its first, deepest leaf."""
    out: list[DiffNode] = []
    seen_parents: set[tuple[str, ...]] = set()
    for leaf in _evidence_in_order(root):
        if leaf.kind in (NodeKind.FIELD,) and leaf.name in ("crc32",):
            continue
        # one line per file: group by the parent of the first section-level node
        group = _group(root, leaf)
        if group in seen_parents:
            continue
        seen_parents.add(group)
        out.append(leaf)
        if len(out) >= limit:
            break
    return out


def _evidence_in_order(node: DiffNode) -> Iterator[DiffNode]:
    """Leaves, and nodes that carry their own diff, in display order."""
    if not node.children or node.unified_diff is not None:
        yield node
    for child in node.children:
        yield from _evidence_in_order(child)


def _group(root: DiffNode, leaf: DiffNode) -> tuple[str, ...]:
    # the first ancestor (from the top) that is a file-level thing: archive member, ELF, pyc...
    chain = [n for n in root.walk() if leaf.path[: len(n.path)] == n.path]
    file_kinds = (
        NodeKind.ELF,
        NodeKind.PYC,
        NodeKind.TEXT,
        NodeKind.MEMBER,
        NodeKind.BINARY,
        NodeKind.KERNEL,
    )
    for n in chain[1:]:
        if n.kind in file_kinds:
            return n.path
    return leaf.path[:-1]


def _causes(node: DiffNode, n: int = 2) -> str:
    if not node.causes:
        return ""
    return "; ".join(f"{h.cause.value}: {h.evidence}" for h in node.causes[:n])


def render_text(report: DiffReport, console: Console) -> None:
    """The text report on ``console`` (a SafeConsole: every value is shown as data)."""
    root = report.root
    left, right = visible(report.left), visible(report.right)
    if root is None:
        console.print(
            Text.assemble(("identical", "bold green"), f": {left} and {right} have the same bytes")
        )
        return
    pcrs = f" — PCRs affected: {pcr_label(root.pcrs)}" if root.pcrs else ""
    console.print(Text.assemble(("different", "bold red"), f": {left} vs {right}{pcrs}"))
    console.print(
        Text.assemble(("Most important differences", "bold"), " (file › section › symbol):")
    )
    for i, leaf in enumerate(headlines(root), 1):
        where = visible(SEP.join(leaf.path[1:]) or leaf.path[0])
        line = Text.assemble(f" {i:>2}. ", (where, "bold"))
        if leaf.pcrs:
            line.append(f" [{pcr_label(leaf.pcrs)}]", style="magenta")
        line.append(f": {visible(leaf.summary)}")
        console.print(line)
        cause = _causes(leaf, 1)
        if cause:
            console.print(Text.assemble("     ", ("cause", "yellow"), f" {visible(cause)}"))
    summary = cause_summary(root)
    if summary:
        console.print(
            Text.assemble(
                ("Likely causes", "bold"),
                ": " + ", ".join(f"{c.label} ({n})" for c, n in summary),
            )
        )
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
    counts: dict[Cause, int] = {}
    for leaf in root.leaves():
        for hint in leaf.causes[:1]:
            counts[hint.cause] = counts.get(hint.cause, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def _label(node: DiffNode) -> RenderableType:
    text = Text()
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
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=jinja2.select_autoescape(["html.j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_as_data,
    )
    env.filters["md"] = md_escape
    env.filters["md_block"] = visible_lines
    env.filters["fence"] = md_fence
    name = "diff.html.j2" if fmt is DiffFormat.HTML else "diff.md.j2"
    template = env.get_template(name)
    root = report.root
    return template.render(
        report=report,
        root=root,
        headlines=headlines(root) if root is not None else [],
        causes=cause_summary(root) if root is not None else [],
        nodes=list(root.walk()) if root is not None else [],
        sep=SEP,
        pcr_label=pcr_label,
        pcr_rows=pcr_rows or [],
    )
