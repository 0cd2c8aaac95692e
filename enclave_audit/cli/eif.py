"""Verbs on EIF files: ``describe-eif``, ``pcr``, ``eif assemble``."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.table import Table

from builder.eif import (
    NITRO_DEFAULT_CMDLINE,
    extend_string,
    measure_parts,
    pcr8_from_certificate,
    tpm_extend,
    write_eif,
)
from builder.eif import (
    describe_eif as describe,
)
from builder.eif.describe import SectionSummary
from enclave_audit.cli._common import (
    emit_json,
    info,
    input_path,
    json_option,
    mark_json_written,
    out_console,
)
from enclave_audit.errors import EifCrcMismatch, EifSignatureInvalid, InvalidInput
from enclave_audit.fsutil import hash_file, read_bytes, read_json
from enclave_audit.model.measurements import measurements_json
from enclave_audit.output import visible
from enclave_audit.progress import RichProgress

_path = click.Path(path_type=Path, dir_okay=False)
_in = input_path()


@click.command("describe-eif")
@click.argument("image", type=input_path())
@json_option
def describe_eif(image: Path, as_json: bool) -> None:
    """Describe an EIF: PCRs, CRC, signature and metadata, as nitro-cli describe-eif.

    Reads the image once, hashing on both cores. Exits non-zero when the CRC or
    the signature does not check (the report is still printed).

    \b
    Example:
      enclave-audit describe-eif out/enclave.eif --json
    """
    with RichProgress() as progress:
        desc = describe(image, progress=progress)
    if as_json:
        sys.stdout.write(json.dumps(desc.to_nitro(), indent=2) + "\n")
        mark_json_written()  # nitro-cli's own format; a failure below adds no error document
    else:
        _print_table(desc.to_nitro(), desc.sections)
    if not desc.crc_ok:
        raise EifCrcMismatch(
            f"{image.name}: CRC-32 mismatch (stored {desc.stored_crc:08x},"
            f" computed {desc.computed_crc:08x}); CheckCRC: false"
        )
    if desc.is_signed and not desc.signature_ok:
        raise EifSignatureInvalid(f"{image.name}: SignatureCheck: false ({desc.signature_detail})")


def _print_table(nitro: dict[str, object], sections: list[SectionSummary]) -> None:
    table = Table(title="EIF", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    measurements = nitro["Measurements"]
    assert isinstance(measurements, dict)
    table.add_row("EifVersion", str(nitro["EifVersion"]))
    for key, value in measurements.items():
        if key != "HashAlgorithm":
            table.add_row(key, visible(value))
    for key in ("IsSigned", "CheckCRC", "SignatureCheck", "ImageName", "ImageVersion"):
        if key in nitro:
            table.add_row(key, visible(nitro[key]))
    metadata = nitro.get("Metadata")
    if isinstance(metadata, dict):
        for key in ("BuildTime", "BuildTool", "BuildToolVersion", "KernelVersion"):
            if key in metadata:
                table.add_row(key, visible(metadata[key]))
    out_console.print(table)
    sec = Table(title="Sections")
    for col in ("#", "type", "offset", "size", "PCRs"):
        sec.add_column(col)
    for s in sections:
        sec.add_row(
            str(s.index),
            visible(s.type),
            str(s.offset),
            str(s.size),
            ",".join(map(str, s.pcrs)) or "-",
        )
    out_console.print(sec)


@click.command("pcr")
@click.option("--kernel", type=_in, help="Kernel image (bzImage).")
@click.option("--cmdline", help="Kernel command line (default: nitro-cli's x86_64 line).")
@click.option("--ramdisk", "ramdisks", multiple=True, type=_in, help="Ramdisk, in order.")
@click.option("--signing-certificate", type=_in, help="PEM/DER certificate: print PCR8.")
@click.option("--role-arn", help="Parent instance IAM role ARN: print PCR3.")
@click.option("--instance-id", help="Parent instance id (i-...): print PCR4.")
@click.option("--input", "input_file", type=_in, help="Any file: extend(SHA384(file)).")
@json_option
def pcr(
    kernel: Path | None,
    cmdline: str | None,
    ramdisks: tuple[Path, ...],
    signing_certificate: Path | None,
    role_arn: str | None,
    instance_id: str | None,
    input_file: Path | None,
    as_json: bool,
) -> None:
    """Predict PCRs without building an EIF.

    From a kernel, command line and ramdisks: PCR0, PCR1, PCR2. From a signing
    certificate: PCR8. From the parent's role ARN or instance id: PCR3 / PCR4.

    \b
    Examples:
      enclave-audit pcr --kernel bzImage --ramdisk boot.cpio --ramdisk app.cpio
      enclave-audit pcr --role-arn arn:aws:iam::123456789012:role/Webserver
    """
    result: dict[str, str] = {}
    if kernel is not None or ramdisks:
        if kernel is None or not ramdisks:
            raise click.UsageError("--kernel and at least one --ramdisk go together")
        text = NITRO_DEFAULT_CMDLINE if cmdline is None else cmdline
        pcrs = measure_parts(kernel, text, list(ramdisks))
        result.update({f"PCR{i}": pcrs.hex(i) for i in pcrs.indices()})
    elif cmdline is not None:
        raise click.UsageError("--cmdline needs --kernel and --ramdisk")
    if signing_certificate is not None:
        result["PCR8"] = pcr8_from_certificate(read_bytes(signing_certificate, limit=1 << 20)).hex()
    if role_arn is not None:
        result["PCR3"] = extend_string(_check_role_arn(role_arn)).hex()
    if instance_id is not None:
        result["PCR4"] = extend_string(_check_instance_id(instance_id)).hex()
    if input_file is not None:
        result["PCR"] = tpm_extend(hash_file(input_file, ("sha384",))["sha384"]).hex()
    if not result:
        raise click.UsageError(
            "nothing to measure: give --kernel/--ramdisk, --signing-certificate,"
            " --role-arn, --instance-id or --input"
        )
    ordered = dict(sorted(result.items()))
    if as_json:
        emit_json(ordered, schema="enclave-audit/pcr")
    else:
        for key, value in ordered.items():
            out_console.print(f"{key}  {value}")


@click.group("eif")
def eif_group() -> None:
    """Assemble EIF files (describe them with describe-eif).

    \b
    Example:
      enclave-audit eif assemble --kernel bzImage --ramdisk boot.cpio -o enclave.eif
    """


@eif_group.command("assemble")
@click.option("--kernel", type=_in, required=True, help="Kernel image (bzImage).")
@click.option("--kernel-config", type=_in, help="Kernel .config (for KernelVersion metadata).")
@click.option("--cmdline", default=NITRO_DEFAULT_CMDLINE, show_default=True)
@click.option("--ramdisk", "ramdisks", multiple=True, type=_in, required=True)
@click.option("--name", default="enclave", show_default=True, help="ImageName metadata.")
@click.option("--version", "image_version", default="1.0", show_default=True)
@click.option(
    "--build-time",
    help="RFC 3339 BuildTime (default: from SOURCE_DATE_EPOCH, else 1970-01-01T00:00:00+00:00).",
)
@click.option("--metadata", "metadata_file", type=_in, help="Custom metadata JSON file.")
@click.option("--sign-cert", type=_in, help="PEM signing certificate (PCR8).")
@click.option("--sign-key", type=_in, help="PEM EC private key for the certificate.")
@click.option("-o", "--output", type=_path, required=True)
@json_option
def assemble(
    kernel: Path,
    kernel_config: Path | None,
    cmdline: str,
    ramdisks: tuple[Path, ...],
    name: str,
    image_version: str,
    build_time: str | None,
    metadata_file: Path | None,
    sign_cert: Path | None,
    sign_key: Path | None,
    output: Path,
    as_json: bool,
) -> None:
    """Write an EIF from a kernel, a command line and ramdisks.

    Byte-identical output for identical inputs and build time (signing uses
    deterministic ECDSA). Prints the measurements as nitro-cli build-enclave does.

    \b
    Example:
      enclave-audit eif assemble --kernel bzImage --ramdisk boot.cpio \\
          --ramdisk app.cpio --build-time 2025-01-01T00:00:00+00:00 -o enclave.eif
    """
    if (sign_cert is None) != (sign_key is None):
        raise click.UsageError("--sign-cert and --sign-key go together")
    custom = read_json(metadata_file, limit=4096) if metadata_file else None
    when = build_time or _default_build_time()
    _check_rfc3339(when)
    signing = (sign_cert, sign_key) if sign_cert and sign_key else None
    with RichProgress() as progress:
        pcrs = write_eif(
            output,
            kernel=kernel,
            cmdline=cmdline,
            ramdisks=list(ramdisks),
            name=name,
            version=image_version,
            build_time=when,
            custom_metadata=custom,
            kernel_config=kernel_config,
            signing=signing,
            progress=progress,
        ).pcrs
    sys.stdout.write(measurements_json(pcrs))
    mark_json_written()
    if not as_json:
        info(f"wrote {output}")


_ROLE_ARN = re.compile(
    r"arn:aws(?:-[a-z]+)*:iam::\d{12}:role/(?:[\x21-\x7e]{1,512}/)?[\w+=,.@-]{1,64}"
)
_INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")


def _check_role_arn(text: str) -> str:
    """PCR3 hashes the ARN's exact characters: a typo gives a wrong PCR, so refuse it."""
    if _ROLE_ARN.fullmatch(text):
        return text
    hint = "an IAM role ARN looks like arn:aws:iam::123456789012:role/NAME"
    if ":instance-profile/" in text:
        hint = "PCR3 is the role's ARN, not the instance profile's (…:role/NAME)"
    elif text.strip() != text:
        hint = "remove the surrounding whitespace"
    raise InvalidInput(f"--role-arn {visible(text)!s}: not an IAM role ARN", hint=hint)


def _check_instance_id(text: str) -> str:
    """PCR4 hashes the instance id's exact characters: refuse anything that is not one."""
    if _INSTANCE_ID.fullmatch(text):
        return text
    hint = "an EC2 instance id is i- and 8 or 17 lowercase hex digits, e.g. i-0123456789abcdef0"
    if _INSTANCE_ID.fullmatch(text.strip().lower()):
        hint = f"did you mean {text.strip().lower()}? (ids are lowercase, without spaces)"
    raise InvalidInput(f"--instance-id {visible(text)!s}: not an EC2 instance id", hint=hint)


def _default_build_time() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    seconds = int(epoch) if epoch and epoch.isdigit() else 0
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _check_rfc3339(text: str) -> None:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"--build-time {text!r} is not an RFC 3339 date-time") from None
