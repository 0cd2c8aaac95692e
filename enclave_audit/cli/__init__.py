"""The ``enclave-audit`` command: a lazy click group and the single error catch.

Each verb lives in its own module under :mod:`enclave_audit.cli` and is imported
only when it is used, so ``enclave-audit pcr`` does not pay for lief or boto3.
This is the only place where exceptions become exit codes.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from enclave_audit import __version__
from enclave_audit.errors import EnclaveAuditError, Internal, exit_code_table

#: verb -> (module under enclave_audit.cli, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("demo", "demo", "Run the end-to-end confidential-inference demo."),
    "build": ("build", "build", "Build the reference enclave image deterministically."),
    "repro-test": (
        "build",
        "repro_test",
        "Build repeatedly under varied environments and compare.",
    ),
    "describe-eif": (
        "eif",
        "describe_eif",
        "Describe an EIF as nitro-cli does (PCRs, CRC, signature).",
    ),
    "pcr": ("eif", "pcr", "Predict PCRs from inputs, a signing certificate, a role or instance."),
    "eif": ("eif", "eif_group", "Assemble EIF files."),
    "attestation": (
        "attestation",
        "attestation_group",
        "Verify or show Nitro attestation documents.",
    ),
    "verify": ("verify", "verify", "Rebuild from a manifest and compare measurements."),
    "diff": ("diff", "diff", "Explain the differences between two images, ramdisks or files."),
    "audit": ("audit", "audit", "Audit the binaries, files and SBOM of an image."),
    "attest": ("attest", "attest_group", "Write and verify signed in-toto attestations."),
    "keys": ("keys", "keys_group", "Generate signing keys."),
    "report": ("report", "report", "Re-render a saved audit report."),
    "gate": ("gate", "gate", "Turn k-of-n verified rebuilds into a KMS key-policy update."),
    "enclave": ("enclave", "enclave_group", "Run an enclave image (simulation or QEMU)."),
    "kms": ("kms", "kms_group", "Run the reference AWS-compatible KMS."),
    "proxy": ("proxy", "proxy_group", "Run the host proxy."),
    "client": ("client", "client_group", "Ask an attested enclave a question."),
    "model": ("model", "model_group", "Encrypt and inspect model files."),
    "accelerator": ("accelerator", "accelerator_group", "Run the attested accelerator service."),
    "inputs": ("inputs", "inputs_group", "Export and check the pinned inputs of a build."),
    "lock": ("lock", "lock_group", "Update the Debian lock of a build spec."),
}


def _exit_code_epilog() -> str:
    lines = ["Exit codes:"]
    for code, meaning, _ in exit_code_table():
        lines.append(f"  {code:>3}  {meaning}")
    return "\n".join(lines)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr, _ = entry
        module = importlib.import_module(f"enclave_audit.cli.{module_name}")
        command = getattr(module, attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{attr} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # short help from the table, so --help imports nothing heavy
        rows = [(name, COMMANDS[name][2]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_exit_code_epilog(),
)
@click.version_option(__version__, prog_name="enclave-audit")
@click.option("--debug", is_flag=True, envvar="ENCLAVE_AUDIT_DEBUG", help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Make confidential-AI enclaves auditable: build, measure, verify, attest, gate.

    \b
    Example:
      enclave-audit build -o out/ && enclave-audit describe-eif out/enclave.eif
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the group, map errors to exit codes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(
        os.environ.get("ENCLAVE_AUDIT_DEBUG")
    )
    try:
        cli.main(args=argv, prog_name="enclave-audit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if debug:
            raise
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except EnclaveAuditError as exc:
        if debug:
            raise
        click.echo(exc.diagnostic(), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"error: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", err=True
        )
        sys.exit(Internal.exit_code)
    sys.exit(0)
