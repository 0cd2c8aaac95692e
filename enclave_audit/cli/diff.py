"""The ``diff`` verb: explain the differences between two images, ramdisks, directories or files."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from enclave_audit.cli._common import F, input_path, note_json, out_console
from enclave_audit.fsutil import write_text_atomic
from enclave_audit.limits import limit_options

if TYPE_CHECKING:
    from enclave_audit.progress import ProgressSink

_FORMATS = ("text", "json", "html", "markdown")


def _also_write(flag: str, dest: str, what: str) -> Callable[[F], F]:
    """One of the extra report outputs (--text/--html/--markdown FILE), as diffoscope has."""
    return click.option(
        flag,
        dest,
        metavar="FILE",
        type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
        help=f"Also write the {what} report to FILE (- for stdout).",
    )


@click.command("diff")
@click.argument("left", type=input_path(dir_okay=True))
@click.argument("right", type=input_path(dir_okay=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(_FORMATS),
    default="text",
    show_default=True,
    help="Format of the report on stdout (or in -o FILE).",
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
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Leave out differences whose path (or name) matches GLOB, e.g. '*.pyc'; repeatable.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    help="Write the --format report to this file instead of stdout.",
)
@_also_write("--text", "text_file", "text")
@_also_write("--html", "html_file", "HTML")
@_also_write("--markdown", "markdown_file", "Markdown")
@click.option(
    "--json",
    "json_target",
    is_flag=False,
    flag_value="-",
    default=None,
    metavar="[FILE]",
    callback=note_json,
    help="JSON report on stdout, or to FILE (--json=FILE, or --json FILE after the inputs).",
)
@limit_options
def diff(
    left: Path,
    right: Path,
    fmt: str,
    max_depth: int,
    max_nodes: int,
    excludes: tuple[str, ...],
    output: Path | None,
    text_file: Path | None,
    html_file: Path | None,
    markdown_file: Path | None,
    json_target: str | None,
    max_decompressed: int,
    max_memory: int,
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

    Several reports in one run, as diffoscope does: --text FILE, --html FILE,
    --markdown FILE and --json FILE (give --json after the inputs, or --json=FILE;
    --json alone prints JSON on stdout).

    \b
    Examples:
      enclave-audit diff a/enclave.eif b/enclave.eif --format markdown -o diff.md
      enclave-audit diff a.eif b.eif --html diff.html --json=diff.json --exclude '*.pyc'
    """
    from enclave_audit.limits import Limits
    from enclave_audit.progress import RichProgress
    from verifier.compare import compare_paths
    from verifier.compare.exclude import exclude_paths
    from verifier.compare.render import DiffFormat

    as_json = json_target == "-"
    json_file = Path(json_target) if json_target not in (None, "-") else None
    targets = _targets(fmt, output, as_json, json_file, text_file, html_file, markdown_file)
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
        if excludes:
            report = exclude_paths(report, excludes)
        pcr_rows = _pcr_rows(left, right, progress) if _wants_pcrs(targets) else None
    for chosen, target in targets:
        if target is None:
            if chosen is DiffFormat.TEXT:
                from verifier.compare.render import render_text

                render_text(report, out_console)
            else:
                sys.stdout.write(_render(report, chosen, pcr_rows))
                sys.stdout.flush()
        else:
            write_text_atomic(target, _render(report, chosen, pcr_rows))
    sys.exit(0 if report.identical and report.complete else 1)


def _targets(
    fmt: str,
    output: Path | None,
    as_json: bool,
    json_file: Path | None,
    text_file: Path | None,
    html_file: Path | None,
    markdown_file: Path | None,
) -> list[tuple[object, Path | None]]:
    """(format, file or None for stdout) for every report asked for; one stdout at most."""
    from verifier.compare.render import DiffFormat

    def target(path: Path | None) -> Path | None:
        return None if path is None or str(path) == "-" else path

    wanted: list[tuple[DiffFormat, Path | None, str]] = []
    extra = [
        (DiffFormat.TEXT, text_file, "--text"),
        (DiffFormat.HTML, html_file, "--html"),
        (DiffFormat.MARKDOWN, markdown_file, "--markdown"),
        (DiffFormat.JSON, json_file, "--json FILE"),
    ]
    for chosen, path, flag in extra:
        if path is not None:
            wanted.append((chosen, target(path), flag))
    if as_json:
        wanted.append((DiffFormat.JSON, None, "--json"))
    main_needed = output is not None or not wanted or fmt != "text"
    if main_needed:
        if as_json and fmt != "json" and output is None:
            raise click.UsageError(
                f"--format {fmt} and --json both write to stdout: give -o FILE for the"
                f" {fmt} report, or --json=FILE"
            )
        wanted.insert(0, (DiffFormat(fmt), target(output), "--format"))
    to_stdout = [flag for _, path, flag in wanted if path is None]
    if len(to_stdout) > 1:
        raise click.UsageError(
            f"{' and '.join(to_stdout)} would all write to stdout: give files for all but one"
        )
    seen: dict[Path, str] = {}
    for _, path, flag in wanted:
        if path is not None:
            if path in seen:
                raise click.UsageError(f"{seen[path]} and {flag} name the same file {path}")
            seen[path] = flag
    # one report per format on stdout: --format json with --json is the same document
    unique: list[tuple[object, Path | None]] = []
    for chosen, path, _ in wanted:
        if (chosen, path) not in unique:
            unique.append((chosen, path))
    return unique


def _wants_pcrs(targets: list[tuple[object, Path | None]]) -> bool:
    from verifier.compare.render import DiffFormat

    return any(chosen in (DiffFormat.HTML, DiffFormat.MARKDOWN) for chosen, _ in targets)


def _pcr_rows(
    left: Path, right: Path, progress: ProgressSink
) -> list[tuple[int, str | None, str | None]]:
    """Both sides' PCR0/1/2/8 when both inputs are EIFs (for the measurements table)."""
    from builder.eif import describe_eif
    from builder.eif.format import MAGIC
    from enclave_audit.errors import EnclaveAuditError

    sides = []
    for path in (left, right):
        try:
            with path.open("rb") as fh:
                if fh.read(4) != MAGIC:
                    return []
            sides.append(describe_eif(path, progress=progress).pcrs)
        except (OSError, EnclaveAuditError):
            return []  # the difference tree already says what is wrong with the image
    indices = sorted(set(sides[0].indices()) | set(sides[1].indices()))
    return [
        (i, sides[0].hex(i) if i in sides[0].indices() else None,
         sides[1].hex(i) if i in sides[1].indices() else None)
        for i in indices
    ]  # fmt: skip


def _render(
    report: object,
    chosen: object,
    pcr_rows: list[tuple[int, str | None, str | None]] | None = None,
) -> str:
    from enclave_audit.model.difference import DiffReport
    from enclave_audit.output import make_console
    from verifier.compare.render import DiffFormat, render_template, render_text

    assert isinstance(report, DiffReport) and isinstance(chosen, DiffFormat)
    match chosen:
        case DiffFormat.JSON:
            return report.to_json() + "\n"
        case DiffFormat.HTML | DiffFormat.MARKDOWN:
            return render_template(report, chosen, pcr_rows=pcr_rows)
        case DiffFormat.TEXT:
            console = make_console(file=io.StringIO(), record=True)
            render_text(report, console)
            return str(console.export_text())
    raise AssertionError(chosen)
