"""``enclave-audit report``: re-render a saved JSON report without recomputing."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from enclave_audit.fsutil import read_bytes, write_text_atomic
from enclave_audit.model.report import AuditReport
from reports.render import Format, render


@click.command("report")
@click.argument("report_json", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in Format]),
    default="html",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write here (default: stdout).",
)
def report(report_json: Path, fmt: str, output: Path | None) -> None:
    """Re-render a saved audit report (report.json) as HTML, Markdown, JSON or text.

    The JSON is schema-versioned; an unknown version is refused with one line.

    \b
    Example:
      enclave-audit report out/report.json --format markdown -o comment.md
    """
    saved = AuditReport.from_json(read_bytes(report_json, limit=64 << 20), source=str(report_json))
    text = render(saved, Format(fmt))
    if output is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(output, text)
