"""The ``diff`` verb: explain the differences between two images, ramdisks, directories or files."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import click

from enclave_audit.cli._common import json_option, out_console
from enclave_audit.fsutil import write_text_atomic
from enclave_audit.limits import limit_options


@click.command("diff")
@click.argument("left", type=click.Path(path_type=Path))
@click.argument("right", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "html", "markdown"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--max-depth",
    type=click.IntRange(0, 64),
    default=32,
    show_default=True,
    help="How many container levels to open (EIF > ramdisk > file > section).",
)
@click.option(
    "--max-nodes",
    type=click.IntRange(1, 10_000_000),
    default=20000,
    show_default=True,
    help="Stop adding differences after this many (the rest are counted).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the report to this file instead of stdout.",
)
@limit_options
@json_option
def diff(
    left: Path,
    right: Path,
    fmt: str,
    max_depth: int,
    max_nodes: int,
    output: Path | None,
    max_decompressed: int,
    max_memory: int,
    as_json: bool,
) -> None:
    """Explain why two EIFs, ramdisks, directories or files differ.

    Prints a tree of differences (image > section > cpio member > ELF section > symbol)
    with the PCRs each one moves.  Security-relevant changes (privilege bits, added
    executables, loader configuration, /init, cmd/env, keys, the cmdline) come first,
    then unexplained ones; a benign cause (timestamp, build path, file order, owner,
    toolchain...) is claimed only with evidence, shown with its confidence.  Ramdisks
    are read as the kernel unpacks them (every archive, compressed segments).  Exits 0
    when the inputs are identical, 1 when they differ or when a part could not be
    compared (INCONCLUSIVE: a budget was hit or data was unreadable).

    \b
    Example:
      enclave-audit diff a/enclave.eif b/enclave.eif --format markdown -o diff.md
    """
    from enclave_audit.limits import Limits
    from enclave_audit.progress import RichProgress
    from verifier.compare import compare_paths
    from verifier.compare.render import DiffFormat, render_template, render_text

    limits = Limits(decompressed=max_decompressed, memory=max_memory)
    with RichProgress() as progress:
        report = compare_paths(
            left,
            right,
            max_depth=max_depth,
            max_nodes=max_nodes,
            limits=limits,
            progress=progress,
        )
    chosen = DiffFormat.JSON if as_json else DiffFormat(fmt)
    match chosen:
        case DiffFormat.JSON:
            text = report.to_json() + "\n"
        case DiffFormat.HTML | DiffFormat.MARKDOWN:
            text = render_template(report, chosen)
        case DiffFormat.TEXT:
            if output is None:
                render_text(report, out_console)
                text = ""
            else:
                from rich.console import Console

                console = Console(record=True, width=120, file=io.StringIO())
                render_text(report, console)
                text = console.export_text()
    if output is not None:
        write_text_atomic(output, text)
    elif text:
        sys.stdout.write(text)
    sys.exit(0 if report.identical and report.complete else 1)
