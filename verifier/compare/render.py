"""Rendering a :class:`DiffReport`: text (rich), JSON, and markdown/HTML through templates.

The text view puts the most important differences first: a headline list naming each
differing file down to its section and symbol, with PCRs and causes, before the tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text
from rich.tree import Tree

from enclave_audit.model.difference import Cause, DiffNode, DiffReport, NodeKind

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
    root = report.root
    if root is None:
        console.print(
            f"[bold green]identical[/]: {report.left} and {report.right} have the same bytes"
        )
        return
    pcrs = f" — PCRs affected: {pcr_label(root.pcrs)}" if root.pcrs else ""
    console.print(f"[bold red]different[/]: {report.left} vs {report.right}{pcrs}")
    console.print("[bold]Most important differences[/] (file › section › symbol):")
    for i, leaf in enumerate(headlines(root), 1):
        where = SEP.join(leaf.path[1:]) or leaf.path[0]
        pcr = f" [magenta]\\[{pcr_label(leaf.pcrs)}][/]" if leaf.pcrs else ""
        console.print(f" {i:>2}. [bold]{_esc(where)}[/]{pcr}: {_esc(leaf.summary)}")
        cause = _causes(leaf, 1)
        if cause:
            console.print(f"     [yellow]cause[/] {_esc(cause)}")
    summary = cause_summary(root)
    if summary:
        console.print(
            "[bold]Likely causes[/]: " + ", ".join(f"{c.label} ({n})" for c, n in summary)
        )
    if report.stats.truncated:
        console.print(
            "[yellow]note[/]: output limits reached; some differences are summarized only"
        )
    console.print()
    console.print(_tree(root))


def cause_summary(root: DiffNode) -> list[tuple[Cause, int]]:
    counts: dict[Cause, int] = {}
    for leaf in root.leaves():
        for hint in leaf.causes[:1]:
            counts[hint.cause] = counts.get(hint.cause, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def _esc(text: str) -> str:
    return text.replace("[", "\\[")


def _label(node: DiffNode) -> RenderableType:
    text = Text()
    text.append(node.name or "(root)", style="bold")
    text.append(f" [{node.change.value}] ", style="dim")
    text.append(node.summary)
    if node.pcrs:
        text.append(f"  ({pcr_label(node.pcrs)})", style="magenta")
    parts: list[RenderableType] = [text]
    if node.causes and not node.children:
        parts.append(Text(f"cause: {_causes(node)}", style="yellow"))
    for note in node.notes:
        parts.append(Text(f"note: {note}", style="dim"))
    if (
        node.left is not None
        and node.left.value
        and not node.children
        and node.unified_diff is None
    ):
        parts.append(Text(f"- {node.left.value}", style="red"))
    if (
        node.right is not None
        and node.right.value
        and not node.children
        and node.unified_diff is None
    ):
        parts.append(Text(f"+ {node.right.value}", style="green"))
    if node.unified_diff:
        lines = node.unified_diff.splitlines()
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


def render_template(report: DiffReport, fmt: DiffFormat) -> str:
    """Markdown or HTML through jinja2 templates (autoescape for HTML, StrictUndefined)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=jinja2.select_autoescape(["html.j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
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
    )
