"""The ``audit`` verb: ELF hardening, permissions, tools, secrets, cmdline and SBOM of an image."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from enclave_audit.cli._common import (
    emit_json,
    info,
    input_path,
    json_document,
    json_option,
    mark_json_written,
    out_console,
    styled,
    warn,
)
from enclave_audit.cli.inputs import debian_mirror_option
from enclave_audit.errors import AuditFailed
from enclave_audit.fsutil import write_text_atomic
from enclave_audit.limits import limit_options
from enclave_audit.model.findings import Verdict
from enclave_audit.output import visible
from enclave_audit.progress import RichProgress


def _sbom_format(path: Path, given: str | None) -> str:
    if given is not None:
        return given
    name = path.name.lower()
    return "cyclonedx" if ("cdx" in name or "cyclonedx" in name) else "spdx"


@click.command("audit")
@click.argument("image", type=input_path())
@click.option(
    "--policy",
    "policy_file",
    type=input_path(),
    help="TOML policy: fail_on, [severity] overrides, [allow] path globs (README: Audit policy).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "sarif"]),
    default="text",
    show_default=True,
    help="Report format on stdout or in -o FILE (sarif: SARIF 2.1.0 for code scanning).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    help="Write the --format report to FILE (default: stdout).",
)
@click.option(
    "--sbom",
    "sbom_path",
    metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write an SBOM (SPDX 2.3 JSON; CycloneDX 1.5 when FILE names cdx/cyclonedx).",
)
@click.option(
    "--sbom-format",
    type=click.Choice(["spdx", "cyclonedx"]),
    help="SBOM format, whatever --sbom's file name says.",
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
@limit_options
@json_option
def audit(
    image: Path,
    policy_file: Path | None,
    fmt: str,
    output: Path | None,
    sbom_path: Path | None,
    sbom_format: str | None,
    max_decompressed: int,
    max_memory: int,
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
    newer version (with both versions).  The ramdisks are read as the kernel unpacks
    them: every archive (also after a TRAILER!!!), compressed segments, normalised
    paths, hard links.  The policy decides which findings fail the audit (default: high
    and critical).  What cannot be read, or a budget that is hit, makes the verdict
    INCONCLUSIVE.  Exits 0 only when the verdict is PASS.

    \b
    Examples:
      enclave-audit audit out/enclave.eif --sbom out/sbom.spdx.json
      enclave-audit audit out/enclave.eif --format sarif -o audit.sarif
    """
    from verifier.audit import SbomFormat, audit_image, load_policy, write_sbom

    if as_json and fmt not in ("text", "json") and output is None:
        raise click.UsageError(f"--json and --format {fmt} both write to stdout: add -o FILE")
    if sbom_format is not None and sbom_path is None:
        raise click.UsageError("--sbom-format needs --sbom FILE")
    from builder.inputs.resolver import parse_mirror_map
    from enclave_audit.limits import Limits
    from verifier.audit.updates import UpdatesMode

    policy = load_policy(policy_file)
    limits = Limits(decompressed=max_decompressed, memory=max_memory)
    with RichProgress() as progress:
        report = audit_image(
            image,
            policy,
            progress=progress,
            security_updates=UpdatesMode(security_updates) if security_updates else None,
            security_suites=security_suites,
            debian_mirrors=parse_mirror_map(debian_mirrors),
            limits=limits,
        )
    if sbom_path is not None:
        chosen = _sbom_format(sbom_path, sbom_format)
        write_sbom(report, SbomFormat(chosen), sbom_path)
        info(f"SBOM ({chosen}, {len(report.packages)} packages) written to {sbom_path}")
    rendered = _rendered(report, "json" if as_json and output is None else fmt)
    if output is not None and str(output) != "-":
        write_text_atomic(output, rendered if rendered is not None else _plain(report))
        info(f"{fmt} report written to {output}")
        if as_json:
            emit_json(report)
    elif rendered is not None:
        sys.stdout.write(rendered)
        sys.stdout.flush()
        if as_json or fmt == "json":
            mark_json_written()
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


def _rendered(report: object, fmt: str) -> str | None:
    """The report as JSON or SARIF text (None for the text view)."""
    import json

    from enclave_runtime.strictjson import json_safe
    from verifier.audit import ImageAuditReport

    assert isinstance(report, ImageAuditReport)
    if fmt == "json":  # labelled, with undecodable names written visibly (\\xNN)
        return json_document(report)
    if fmt == "sarif":
        from verifier.audit.sarif import sarif_log

        return json.dumps(json_safe(sarif_log(report)), indent=2) + "\n"
    return None


def _plain(report: object) -> str:
    import io

    from enclave_audit.output import make_console

    buffer = io.StringIO()
    _print(report, make_console(file=buffer))
    return buffer.getvalue()


def _print(report: object, console: Any = None) -> None:
    from verifier.audit import ImageAuditReport

    assert isinstance(report, ImageAuditReport)
    out = console if console is not None else out_console
    colour = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "yellow"}[report.verdict.value]
    out.print(
        styled(
            (report.verdict.value, f"bold {colour}"),
            f" {visible(report.image)}  (policy {visible(report.policy)},"
            f" fails on {report.fail_on.value} and above)",
        )
    )
    out.print(
        f"kernel: {visible(report.kernel_version or 'unknown')}; cmdline: {visible(report.cmdline)}"
    )
    out.print(
        f"{report.files} files, {len(report.binaries)} ELF binaries,"
        f" {len(report.packages)} packages; {report.suppressed} finding(s) suppressed"
    )
    out.print(f"findings: {report.summary()}")
    checks = Table(title="Checks", show_lines=False)
    for col in ("check", "outcome", "detail"):
        checks.add_column(col)
    for c in report.checks:
        checks.add_row(c.name, c.outcome.value, visible(c.detail))
    out.print(checks)
    groups: dict[tuple[str, str], list[str]] = {}
    for f in report.findings:
        groups.setdefault((f.severity.value, f.rule), []).append(visible(f"{f.path}: {f.message}"))
    table = Table(title="Findings (most severe first)")
    for col in ("severity", "rule", "count", "examples"):
        table.add_column(col)
    for (severity, rule), items in groups.items():
        examples = "\n".join(items[:3]) + (f"\n… {len(items) - 3} more" if len(items) > 3 else "")
        table.add_row(severity, rule, str(len(items)), examples)
    out.print(table)
    if report.waived:
        waived = Table(title=f"Waived by {visible(report.policy)} (reported, not failing)")
        for col in ("severity", "rule", "count", "reason", "examples"):
            waived.add_column(col)
        by_reason: dict[tuple[str, str, str], list[str]] = {}
        for item in report.waived:
            key = (item.finding.severity.value, item.finding.rule, item.reason)
            by_reason.setdefault(key, []).append(visible(item.finding.path))
        for (severity, rule, reason), paths in by_reason.items():
            more = f"\n… {len(paths) - 2} more" if len(paths) > 2 else ""
            examples = "\n".join(paths[:2]) + more
            waived.add_row(severity, visible(rule), str(len(paths)), visible(reason), examples)
        out.print(waived)
    for unused in report.unused_waivers:
        warn(
            f"unused waiver: {visible(unused.rule)} {visible(unused.path)}"
            " (matched nothing; remove it?)"
        )
