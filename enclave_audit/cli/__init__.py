"""The ``enclave-audit`` command: a lazy click group and the single error catch.

Each verb lives in its own module under :mod:`enclave_audit.cli` and is imported
only when it is used, so ``enclave-audit pcr`` does not pay for lief or boto3.
This is the only place where exceptions become exit codes.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import NoReturn

import click

from enclave_audit import __version__
from enclave_audit.errors import (
    EnclaveAuditError,
    EnvironmentProblem,
    Internal,
    exit_code_table,
)

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
    # "\b" keeps click from reflowing the table into a paragraph
    lines = ["\b", "Exit codes:"]
    for code, meaning, _ in exit_code_table():
        lines.append(f"  {code:>3}  {meaning}")
    lines += [
        "",
        "\b",
        "Shell completion (bash; zsh and fish likewise):",
        '  eval "$(_ENCLAVE_AUDIT_COMPLETE=bash_source enclave-audit)"',
        "",
        "Flags mean the same in every verb: see README.md, section Flags.",
    ]
    return "\n".join(lines)


def _quiet_callback(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        from enclave_audit.progress import set_quiet

        set_quiet(True)
    return value


def _quiet_option() -> click.Option:
    return click.Option(
        ["-q", "--quiet"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_quiet_callback,
        help="No progress bars, stage lines or notes on stderr.",
    )


def _with_common_options(command: click.Command) -> click.Command:
    """Give every verb (and sub-verb) the options that mean the same everywhere."""
    if not any(p.name == "quiet" for p in command.params):
        command.params.append(_quiet_option())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _with_common_options(sub)
    return command


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
        return _with_common_options(command)

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
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_quiet_callback,
    help="No progress bars, stage lines or notes on stderr (also after any verb).",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Make confidential-AI enclaves auditable: build, measure, verify, attest, gate.

    \b
    Examples:
      enclave-audit attestation verify doc.cbor --at document
      enclave-audit build -o out/ && enclave-audit describe-eif out/enclave.eif
      enclave-audit VERB --help     (each verb explained, with an example)
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _fail(code: int, error_class: str, message: str, hint: str | None = None) -> NoReturn:
    """One line on stderr (plus a hint line), the JSON error document if --json, exit."""
    from enclave_audit.cli._common import emit_json, error_document, json_requested, json_written
    from enclave_audit.output import visible

    line = visible(message)
    if not line.startswith("error: "):
        line = f"error: {line}"
    _stderr_line(line)
    if hint:
        _stderr_line(f"hint: {visible(hint)}")
    if json_requested() and not json_written():
        with contextlib.suppress(OSError, ValueError):
            emit_json(error_document(code, error_class, line.removeprefix("error: ")))
    sys.exit(code)


def _stderr_line(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the group, map errors to exit codes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(
        os.environ.get("ENCLAVE_AUDIT_DEBUG")
    )
    try:
        cli.main(args=argv, prog_name="enclave-audit", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        # a group without its subcommand: the normal help, as --help prints it
        assert exc.ctx is not None
        sys.stdout.write(exc.ctx.get_help() + "\n")
        sys.stdout.flush()
        sys.exit(0)
    except click.exceptions.Abort:
        _fail(130, "Aborted", "aborted")
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if debug:
            raise
        where = ""
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, click.UsageError) and ctx is not None:
            where = f"Try '{ctx.command_path} --help'."
        _fail(exc.exit_code, "UsageError", " ".join(exc.format_message().split()), where or None)
    except EnclaveAuditError as exc:
        if debug:
            raise
        _fail(exc.exit_code, type(exc).__name__, exc.diagnostic(), exc.hint)
    except KeyboardInterrupt:
        _fail(130, "KeyboardInterrupt", "interrupted")
    except BrokenPipeError:
        # the reader went away (| head): nothing more to say, and no traceback at exit
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except ModuleNotFoundError as exc:
        if debug:
            raise
        from enclave_audit.extras import extras_bringing, install_hint

        extras = extras_bringing(exc.name or "")
        if not extras:
            _internal(exc)
        _fail(
            EnvironmentProblem.exit_code,
            "EnvironmentProblem",
            f"this verb needs the Python package {exc.name!r}, which is not installed"
            f" (it comes with the {' or '.join(f'[{e}]' for e in extras)} extra)",
            install_hint(extras),
        )
    except Exception as exc:
        if debug:
            raise
        _internal(exc)
    sys.exit(0)


def _internal(exc: BaseException) -> NoReturn:
    _fail(
        Internal.exit_code,
        "Internal",
        f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
    )
