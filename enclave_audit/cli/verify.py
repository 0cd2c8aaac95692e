"""The ``verify`` verb: rebuild from a build manifest and compare PCR0/1/2 and the EIF digest."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from enclave_audit.cli._common import (
    emit_json,
    err_console,
    input_path,
    json_option,
    out_console,
    styled,
)
from enclave_audit.cli.inputs import debian_mirror_option, inputs_option
from enclave_audit.errors import AuditFailed
from enclave_audit.model.findings import Verdict
from enclave_audit.progress import RichProgress
from verifier.rebuild import VerifyResult

_file = input_path()


def _write_reports(
    result: VerifyResult,
    manifest: Path,
    output: Path,
    *,
    with_audit: bool,
    progress: RichProgress,
) -> None:
    """report.{json,md,html} beside verify.json: verdict, PCR table, differences, findings.

    ``output`` is the staging directory of the atomic output (the reports are committed
    with everything else, or not at all)."""
    from enclave_audit.errors import EnclaveAuditError
    from enclave_audit.fsutil import write_text_atomic
    from enclave_audit.model.manifest import BuildManifest
    from reports.audit_report import verify_report
    from reports.render import Format, render
    from verifier.audit import audit_image, load_policy

    image_audit = None
    staged = output / "rebuild" / Path(result.rebuilt_eif).name if result.rebuilt_eif else None
    if with_audit and staged is not None and staged.exists():
        image_audit = audit_image(staged, load_policy(None), progress=progress)
    try:
        loaded = BuildManifest.load(manifest)
    except EnclaveAuditError:
        loaded = None  # verify already reported why the manifest is unusable
    report = verify_report(result, manifest=loaded, audit=image_audit)
    for fmt in (Format.JSON, Format.MARKDOWN, Format.HTML):
        write_text_atomic(output / f"report{fmt.suffix}", render(report, fmt))


@click.command("verify")
@click.option(
    "--manifest",
    "manifest",
    type=_file,
    required=True,
    help="build-manifest.json written by the build.",
)
@click.option(
    "--source",
    type=click.Path(path_type=Path, file_okay=False),
    help="A git checkout of the manifest's source commit (HEAD and every file the build"
    " reads must be that commit's).",
)
@click.option(
    "--git",
    "git_ref",
    metavar="URL@COMMIT",
    help="Fetch COMMIT (a commit id, never a tag or branch name) from URL and check it out.",
)
@click.option(
    "--allow-other-commit",
    is_flag=True,
    help="With --source: rebuild even when the checkout is not exactly the manifest's"
    " commit; the verdict is then INCONCLUSIVE at best.",
)
@click.option("--expected", type=_file, help="Expected measurements (nitro-cli JSON).")
@click.option("--eif", type=_file, help="The image to compare with (and diff against).")
@click.option("--backend", default=None, help="Rootfs backend (default: the manifest's).")
@click.option(
    "--no-rootfs-cache",
    is_flag=True,
    help="Rebuild the root filesystem, init and application ramdisk too.",
)
@click.option(
    "--audit/--no-audit",
    default=True,
    show_default=True,
    help="Also run the binary audit on the rebuilt image for the report.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Output directory: verify.json, rebuild/, diff.json and diff.txt on mismatch.",
)
@inputs_option
@debian_mirror_option
@json_option
def verify(
    manifest: Path,
    source: Path | None,
    git_ref: str | None,
    allow_other_commit: bool,
    expected: Path | None,
    eif: Path | None,
    backend: str | None,
    no_rootfs_cache: bool,
    audit: bool,
    output: Path,
    inputs: tuple[Path, ...],
    debian_mirrors: tuple[str, ...],
    as_json: bool,
) -> None:
    """Rebuild an image from its manifest alone and compare it with the claim.

    Rebuilds in a fresh directory (pinned inputs fetched into the cache, digests
    checked), then compares PCR0, PCR1, PCR2 and the EIF digest with --expected, --eif
    or the manifest's record.  On a mismatch the two images are diffed down to the file,
    ELF section and symbol, with likely causes.  Writes verify.json and an audit report
    (report.json, report.md, report.html).  Exits 0 only on PASS.

    The verdict binds to one exact commit: the manifest's full source.git_commit.  The
    audited party's repository, spec, Dockerfile and manifest are treated as hostile:
    git never reads the repository's own config or hooks, spec and manifest paths must
    stay inside the checkout and the manifest's directory, and the steps that run
    audited inputs run in the build sandbox (bubblewrap).

    \b
    Example:
      enclave-audit verify --manifest out/build-manifest.json --source . -o verify/
      enclave-audit verify --manifest M.json --git https://host/repo.git@3f2a9c1 -o verify/
      enclave-audit verify --manifest m.json --source . --inputs inputs.tar -o verify/
    """
    from verifier.rebuild import PipelineRebuilder
    from verifier.rebuild import verify as run_verify

    rebuilder = PipelineRebuilder(
        backend=backend,
        use_rootfs_cache=not no_rootfs_cache,
        inputs=inputs,
        debian_mirrors=debian_mirrors,
    )
    with RichProgress() as progress:
        result = run_verify(
            manifest,
            output,
            source=source,
            git=git_ref,
            expected=expected,
            eif=eif,
            rebuilder=rebuilder,
            progress=progress,
            allow_other_commit=allow_other_commit,
            backend=backend,
            finish=lambda done, staging: _write_reports(
                done, manifest, staging, with_audit=audit, progress=progress
            ),
        )
    if as_json:
        emit_json(result)
    else:
        colour = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "yellow"}[result.verdict.value]
        out_console.print(
            styled(
                (result.verdict.value, f"bold {colour}"),
                f" {result.name} {result.version} (expected from {result.expected_from})",
            )
        )
        table = Table()
        for col in ("check", "outcome", "detail"):
            table.add_column(col)
        for c in result.checks:
            table.add_row(c.name, c.outcome.value, c.detail)
        out_console.print(table)
        for note in result.notes:
            err_console.print(f"note: {note}")
        if result.diff is not None:
            from verifier.compare.render import headlines

            out_console.print(f"differences (full tree in {output}/diff.txt):")
            for leaf in headlines(result.diff, 5):
                out_console.print(f"  {' › '.join(leaf.path[1:])}: {leaf.summary}")
    if result.verdict is not Verdict.PASS:
        failed = [c for c in result.checks if c.outcome.value != "pass"]
        raise AuditFailed(
            f"verify {result.verdict.value}: "
            + (
                "; ".join(f"{c.name}: {c.detail}" for c in failed[:2])
                if failed
                else "no checks ran"
            )
        )
