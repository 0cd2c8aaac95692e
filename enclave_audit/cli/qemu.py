"""``enclave-audit enclave qemu-setup`` and ``enclave run --qemu``: boot an EIF under QEMU.

The ``enclave`` group wires these in; :func:`run_qemu` is what ``enclave run
IMAGE.eif --qemu`` calls, :data:`qemu_run` is the same as a standalone command.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from enclave_audit.cli._common import emit_json, err_console, json_option, out_console, styled
from enclave_audit.errors import AuditFailed
from enclave_audit.model.digests import parse_hex
from enclave_audit.model.findings import CheckOutcome, Verdict
from enclave_audit.model.measurements import PcrSet
from enclave_audit.progress import RichProgress


@click.command(name="qemu-setup")
@click.option("--force", is_flag=True, help="Rebuild even when a cached build exists.")
@click.option(
    "--jobs", "-j", type=click.IntRange(1, 64), default=2, show_default=True, help="ninja -j."
)
@json_option
def qemu_setup(force: bool, jobs: int, as_json: bool) -> None:
    """Build QEMU with the nitro-enclave machine from Debian's source (cached; ~5 min).

    Debian's qemu-system-x86 lacks the machine (it is built without libcbor);
    this builds the same release from Debian's bookworm-backports source package,
    x86_64 only, under nice, and caches the binary by the source's digest.

    \b
    Example:
      enclave-audit enclave qemu-setup
    """
    from verifier.qemu.build import build_qemu

    with RichProgress(bytes_mode=False) as progress:
        install = build_qemu(jobs=jobs, force=force, progress=progress)
    if as_json:
        emit_json(
            {
                "binary": str(install.binary),
                "firmware_dir": str(install.firmware_dir),
                "version": install.version,
                "source": install.source,
                "build_seconds": install.build_seconds,
            },
            schema="enclave-audit/qemu-build",
        )
        return
    out_console.print(f"{install.version}: {install.binary} ({install.source})")


def run_qemu(
    image: Path,
    *,
    parent_role: str | None,
    parent_id: str | None,
    nonce_hex: str | None,
    timeout: float,
    as_json: bool,
    expect_path: Path | None = None,
) -> None:
    """Boot ``image`` under QEMU, print guest PCRs next to ours; AuditFailed on a difference.

    ``expect_path``: measurements JSON (nitro-cli/describe-eif style) whose PCR0/1/2/8
    the guest must report instead of describe-eif's values for ``image``.
    """
    from verifier.qemu.boot import boot_and_attest

    nonce = parse_hex(nonce_hex, what="--nonce") if nonce_hex else None
    expected = PcrSet.load(expect_path) if expect_path is not None else None
    with RichProgress(bytes_mode=False) as progress:
        result = boot_and_attest(
            image,
            parent_role=parent_role,
            parent_id=parent_id,
            nonce=nonce,
            timeout=timeout,
            progress=progress,
            expected=expected,
        )
    if as_json:
        emit_json(result.json_dict())
    else:
        table = Table(title=f"{image.name} under QEMU ({result.qemu_version})", show_lines=False)
        table.add_column("PCR")
        table.add_column("ours", overflow="fold")
        table.add_column("guest (QEMU NSM)", overflow="fold")
        table.add_column("from")
        table.add_column("")
        for c in result.comparisons:
            mark = styled(("match", "green")) if c.match else styled(("DIFFERS", "bold red"))
            table.add_row(str(c.index), c.expected, c.guest or "(absent)", c.source, mark)
        out_console.print(table)
        for check in result.checks:
            if check.outcome is CheckOutcome.FAIL:
                out_console.print(styled(("FAIL", "bold red"), f" {check.name}: {check.detail}"))
        t = result.timings
        vsock = {True: "document copy matched", False: "DOCUMENT COPY DIFFERS", None: "no copy"}
        out_console.print(
            f"attestation after {t.attestation_s:.1f} s under TCG; nonce {result.nonce}"
        )
        asked = {True: "answered", False: "ANSWER WRONG", None: "not served"}
        out_console.print(
            f"vsock: guest -> host {vsock[result.vsock_document_match]};"
            f" host -> guest request {asked[result.vsock_request_ok]};"
            f" boot heartbeat {'acknowledged' if result.vsock_heartbeat else 'not seen'}"
            + (f" ({result.vsock_error})" if result.vsock_error else "")
        )
        out_console.print(f"verdict: {result.verdict.value}")
    err_console.print(
        styled(
            ("INSECURE (emulator):", "bold yellow"),
            " the document is unsigned; not checked: " + "; ".join(result.not_checked),
        )
    )
    if result.verdict is not Verdict.PASS:
        differing = ", ".join(f"PCR{i}" for i in result.mismatched()) or "checks failed"
        raise AuditFailed(f"{image}: guest measurements under QEMU differ from ours ({differing})")


@click.command(name="qemu-run")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--parent-role", metavar="ARN", help="IAM role ARN of the parent (PCR3).")
@click.option("--parent-id", metavar="ID", help="Parent instance id (PCR4).")
@click.option("--nonce", "nonce_hex", metavar="HEX", help="Nonce (hex; default: 32 random bytes).")
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds."
)
@click.option(
    "--expect",
    "expect_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="MEASUREMENTS.json",
    help="PCR0/1/2(/8) the guest must report (default: describe-eif of IMAGE).",
)
@json_option
def qemu_run(
    image: Path,
    parent_role: str | None,
    parent_id: str | None,
    nonce_hex: str | None,
    timeout: float,
    expect_path: Path | None,
    as_json: bool,
) -> None:
    """Boot IMAGE under QEMU's nitro-enclave machine (TCG) and compare its PCRs with ours.

    Exits 1 when any guest PCR differs from describe-eif's (PCR0/1/2/8) or from
    the parent role/instance PCRs (3/4).  The emulated document is unsigned:
    its signature and certificate chain are not checked.

    \b
    Example:
      enclave-audit enclave qemu-run out/enclave.eif --parent-id i-0123456789abcdef0
    """
    run_qemu(
        image,
        parent_role=parent_role,
        parent_id=parent_id,
        nonce_hex=nonce_hex,
        timeout=timeout,
        as_json=as_json,
        expect_path=expect_path,
    )
