"""The ``audit`` verb: ELF hardening, permissions, tools, secrets, cmdline and SBOM of an image."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from enclave_audit.cli._common import emit_json, err_console, json_option, out_console
from enclave_audit.cli.inputs import debian_mirror_option
from enclave_audit.errors import AuditFailed
from enclave_audit.model.findings import Verdict
from enclave_audit.progress import RichProgress


@click.command("audit")
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML policy: fail_on, [severity] overrides, [allow] path globs.",
)
@click.option(
    "--sbom",
    "sbom_format",
    type=click.Choice(["spdx", "cyclonedx"]),
    help="Also write an SBOM (SPDX 2.3 or CycloneDX 1.5 JSON); needs -o.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the SBOM.",
)
@click.option(
    "--security-updates",
    "security_updates",
    type=click.Choice(["auto", "require", "off"]),
    default=None,
    help="Compare the image's Debian packages with its security suite: auto (default; an"
    " unreachable index skips the check), require (unreachable: INCONCLUSIVE), off.",
)
@click.option(
    "--security-suite",
    "security_suites",
    multiple=True,
    metavar="'deb URI SUITE COMPONENT'",
    help="Security suite to compare with (default: the -security lines of the image's"
    " /etc/apt/sources.list). Repeatable.",
)
@debian_mirror_option
@json_option
def audit(
    image: Path,
    policy_file: Path | None,
    sbom_format: str | None,
    output: Path | None,
    security_updates: str | None,
    security_suites: tuple[str, ...],
    debian_mirrors: tuple[str, ...],
    as_json: bool,
) -> None:
    """Audit the binaries and files of an EIF and list its packages.

    Checks every ELF (PIE, NX, RELRO/BIND_NOW, stack protector, FORTIFY, symbols,
    RPATH/RUNPATH, executable stack), setuid/setgid and world-writable files, shells and
    debug tools, embedded private keys and tokens, and the kernel command line, and
    reports every Debian package for which the image's security suite now serves a
    newer version (with both versions).  The
    policy decides which findings fail the audit (default: high and critical).
    Exits 0 only when the verdict is PASS.

    \b
    Example:
      enclave-audit audit out/enclave.eif --sbom spdx -o out/sbom.spdx.json
    """
    from verifier.audit import SbomFormat, audit_image, load_policy, write_sbom

    if sbom_format is not None and output is None:
        raise click.UsageError("--sbom needs -o FILE")
    if output is not None and sbom_format is None:
        raise click.UsageError("-o is the SBOM output: give --sbom spdx|cyclonedx")
    from builder.inputs.resolver import parse_mirror_map
    from verifier.audit.updates import UpdatesMode

    policy = load_policy(policy_file)
    with RichProgress() as progress:
        report = audit_image(
            image,
            policy,
            progress=progress,
            security_updates=UpdatesMode(security_updates) if security_updates else None,
            security_suites=security_suites,
            debian_mirrors=parse_mirror_map(debian_mirrors),
        )
    if sbom_format is not None and output is not None:
        write_sbom(report, SbomFormat(sbom_format), output)
        err_console.print(
            f"SBOM ({sbom_format}, {len(report.packages)} packages) written to {output}"
        )
    if as_json:
        emit_json(report)
    else:
        _print(report)
    if report.verdict is not Verdict.PASS:
        failing = report.failing()
        raise AuditFailed(
            f"audit {report.verdict.value} for {image.name}: "
            + (
                f"{len(failing)} finding(s) at or above {report.fail_on.value}, e.g."
                f" {failing[0].rule} at {failing[0].path}"
                if failing
                else "; ".join(c.detail for c in report.checks if c.outcome.value == "not-run")[
                    :300
                ]
            )
        )


def _print(report: object) -> None:
    from verifier.audit import ImageAuditReport

    assert isinstance(report, ImageAuditReport)
    colour = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "yellow"}[report.verdict.value]
    out_console.print(
        f"[bold {colour}]{report.verdict.value}[/] {report.image}"
        f"  (policy {report.policy}, fails on {report.fail_on.value} and above)"
    )
    out_console.print(f"kernel: {report.kernel_version or 'unknown'}; cmdline: {report.cmdline!r}")
    out_console.print(
        f"{report.files} files, {len(report.binaries)} ELF binaries,"
        f" {len(report.packages)} packages; {report.suppressed} finding(s) suppressed"
    )
    checks = Table(title="Checks", show_lines=False)
    for col in ("check", "outcome", "detail"):
        checks.add_column(col)
    for c in report.checks:
        checks.add_row(c.name, c.outcome.value, c.detail)
    out_console.print(checks)
    groups: dict[tuple[str, str], list[str]] = {}
    for f in report.findings:
        groups.setdefault((f.severity.value, f.rule), []).append(f"{f.path}: {f.message}")
    table = Table(title="Findings (most severe first)")
    for col in ("severity", "rule", "count", "examples"):
        table.add_column(col)
    for (severity, rule), items in groups.items():
        examples = "\n".join(items[:3]) + (f"\n… {len(items) - 3} more" if len(items) > 3 else "")
        table.add_row(severity, rule, str(len(items)), examples)
    out_console.print(table)
