"""``enclave-audit build`` and ``enclave-audit repro-test``."""

from __future__ import annotations

import re
from pathlib import Path

import click

from enclave_audit.cli._common import emit_json, err_console, json_option, styled
from enclave_audit.cli.inputs import debian_mirror_option, inputs_option
from enclave_audit.progress import RichProgress

DEFAULT_SPEC = Path("reference_enclave/enclave.toml")


def _spec_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--spec",
        "spec",
        type=click.Path(path_type=Path, dir_okay=False),
        default=DEFAULT_SPEC,
        show_default=True,
        help="Build spec (TOML).",
    )(func)


@click.command("build")
@_spec_option
@click.option(
    "--backend",
    type=click.Choice(["native", "docker"]),
    default="native",
    show_default=True,
    help="How the root filesystem is made.",
)
@click.option(
    "-o", "--output", "output", type=click.Path(path_type=Path, file_okay=False), required=True,
    help="Output directory (written atomically).",
)  # fmt: skip
@click.option("--source-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Source tree (default: the directory above the spec's).")  # fmt: skip
@click.option("--source-date-epoch", type=int, default=None,
              help="Override SOURCE_DATE_EPOCH (default: git commit time).")  # fmt: skip
@click.option("--source-commit", default=None, hidden=True)
@click.option("--source-dirty", is_flag=True, hidden=True)
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              hidden=True)  # fmt: skip
@click.option(
    "--no-rootfs-cache",
    is_flag=True,
    help="Rebuild the root filesystem, init and application ramdisk (only the kernel is reused).",
)
@click.option("--rebuild-kernel", is_flag=True, help="Rebuild the kernel even if cached.")
@click.option("--update-lock", is_flag=True, hidden=True)  # enclave-audit lock update
@inputs_option
@debian_mirror_option
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Kernel make jobs.")
@json_option
def build(
    spec: Path,
    backend: str,
    output: Path,
    source_root: Path | None,
    source_date_epoch: int | None,
    source_commit: str | None,
    source_dirty: bool,
    work_dir: Path | None,
    no_rootfs_cache: bool,
    rebuild_kernel: bool,
    update_lock: bool,
    inputs: tuple[Path, ...],
    debian_mirrors: tuple[str, ...],
    jobs: int | None,
    as_json: bool,
) -> None:
    """Build the enclave image from pinned inputs, byte-identically on every rebuild.

    Writes enclave.eif, measurements.json (as nitro-cli build-enclave prints),
    build-manifest.json and provenance.json (in-toto SLSA v1) to OUTPUT.
    Every pinned input is located first (local store, --inputs, the spec's
    mirrors, the snapshot archive, PyPI) and checked against its sha256; the
    Debian packages are installed from a local repository of exactly the lock.

    \b
    Example:
      enclave-audit build --spec reference_enclave/enclave.toml -o out/
      enclave-audit build --inputs inputs.tar -o out/      # no network needed
    """
    from builder.pipeline import BuildOptions
    from builder.pipeline import build as run_build

    if source_commit and not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", source_commit):
        raise click.BadParameter(
            "must be a full commit id (40 or 64 lowercase hex digits)", param_hint="--source-commit"
        )
    if update_lock:  # the old spelling of `enclave-audit lock update`
        from enclave_audit.cli.lock import run_lock_update

        run_lock_update(
            spec,
            source_root=source_root,
            debian_mirrors=debian_mirrors,
            keyring=None,
            check=False,
            as_json=as_json,
        )
        return
    options = BuildOptions(
        backend=backend,
        source_root=source_root,
        source_date_epoch=source_date_epoch,
        source_commit=source_commit,
        source_dirty=source_dirty,
        use_rootfs_cache=not no_rootfs_cache,
        rebuild_kernel=rebuild_kernel,
        jobs=jobs,
        work_dir=work_dir,
        inputs=inputs,
        debian_mirrors=debian_mirrors,
    )
    with RichProgress() as progress:
        result = run_build(spec, output, options=options, progress=progress)
    if as_json:
        emit_json(
            {
                "output": str(result.out_dir),
                "eif": str(result.eif),
                "Measurements": result.pcrs.to_nitro(),
                "kernel_reused": result.kernel_reused,
                "rootfs_reused": result.rootfs_reused,
                "timings": {k: round(v, 3) for k, v in result.timings.items()},
            },
            schema="enclave-audit/build",
        )
        return
    from enclave_audit.model.measurements import measurements_json

    click.echo(measurements_json(result.pcrs), nl=False)
    err_console.print(
        f"wrote {result.out_dir}/ (enclave.eif, build-manifest.json, provenance.json)"
    )


@click.command("repro-test")
@_spec_option
@click.option("--runs", type=click.IntRange(min=2), default=2, show_default=True,
              help="Builds: control, all varied, then one variation each.")  # fmt: skip
@click.option("--full", is_flag=True, help="Rebuild the kernel too in every run.")
@click.option(
    "-o", "--output", "output", type=click.Path(path_type=Path, file_okay=False), required=True,
    help="Directory for the runs and repro-report.json.",
)  # fmt: skip
@click.option("--source-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Source tree (default: the directory above the spec's).")  # fmt: skip
@click.option("--source-date-epoch", type=int, default=None,
              help="Override SOURCE_DATE_EPOCH (default: git commit time).")  # fmt: skip
@json_option
def repro_test(
    spec: Path,
    runs: int,
    full: bool,
    output: Path,
    source_root: Path | None,
    source_date_epoch: int | None,
    as_json: bool,
) -> None:
    """Build repeatedly under varied environments and compare the EIFs and PCRs.

    Varies build path, HOME/USER and environment, TZ, locale, umask, hostname
    (UTS namespace), source file creation order and CPU count; exits 34 if any
    rebuild differs from the control.

    \b
    Example:
      enclave-audit repro-test --runs 3 -o repro/
    """
    from builder.repro import repro_test as run_repro
    from builder.repro import require_reproducible

    report = run_repro(
        spec,
        output,
        runs=runs,
        full=full,
        source_root=source_root,
        source_date_epoch_value=source_date_epoch,
        on_run=err_console.print,
    )
    if as_json:
        emit_json(report)
    else:
        for v in report.variations:
            if not v.tested:
                state = f"not tested ({v.note})" if v.note else "not tested"
            elif v.eif_identical and v.pcrs_equal:
                state = styled(("identical EIF, equal PCRs", "green"))
            elif v.pcrs_equal:
                state = styled(("EIF differs", "red"), ", PCRs equal")
            else:
                state = styled(("EIF and PCRs differ", "red"))
            err_console.print(styled(f"{v.name:<13} {v.varied:<48} "), state, sep="")
        for run in report.runs:
            if run.manifest_differences:
                fields = ", ".join(run.manifest_differences[:8])
                err_console.print(f"run {run.index} ({run.label}) differs in: {fields}")
        verdict = "reproducible" if report.reproducible else "NOT reproducible"
        click.echo(f"{verdict}: {len(report.runs)} builds, report in {output}/repro-report.json")
    require_reproducible(report)
