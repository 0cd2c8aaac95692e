"""``enclave-audit report``: re-render a saved JSON report without recomputing."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from enclave_audit.cli._common import emit_json, input_path, json_option, mark_json_written
from enclave_audit.fsutil import read_bytes, write_text_atomic
from enclave_audit.model.report import AuditReport
from reports.render import Format, render


@click.command("report")
@click.argument("report_json", type=input_path())
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
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    help="Write here (default: stdout).",
)
@json_option
def report(report_json: Path, fmt: str, output: Path | None, as_json: bool) -> None:
    """Re-render a saved audit report (report.json) as HTML, Markdown, JSON or text.

    The JSON is schema-versioned; an unknown version is refused with one line.
    --json prints the report as JSON on stdout (with -o, besides the --format file).

    \b
    Example:
      enclave-audit report out/report.json --format markdown -o comment.md
    """
    saved = AuditReport.from_json(read_bytes(report_json, limit=64 << 20), source=str(report_json))
    chosen = Format(fmt)
    if as_json:
        explicit = click.get_current_context().get_parameter_source("fmt") not in (
            click.core.ParameterSource.DEFAULT,
            None,
        )
        if output is None and chosen is not Format.JSON and explicit:
            raise click.UsageError(f"--json and --format {fmt} both write to stdout: add -o FILE")
        if output is None:
            chosen = Format.JSON
    text = render(saved, chosen)
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        if chosen is Format.JSON:
            mark_json_written()
    else:
        write_text_atomic(output, text)
        if as_json:
            emit_json(saved)
