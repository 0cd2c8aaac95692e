"""``enclave-audit attestation verify|show``: judge or display a Nitro attestation document."""

from __future__ import annotations

import re
import sys
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import click

from enclave_audit.cli._common import at_option, emit_json, input_path, json_option, parse_time
from enclave_audit.errors import AttestationExpired, AttestationMalformed, InvalidInput
from enclave_audit.fsutil import read_bytes
from enclave_audit.model.attestation_doc import (
    AttestationDocument,
    AttestationResult,
    iso_utc,
)
from enclave_audit.model.checks import Verdict
from enclave_audit.model.hexdata import parse_hex
from enclave_audit.model.measurements import PcrSet
from enclave_audit.output import columns, visible, write_lines
from verifier.nitro.certs import parse_der, summarize
from verifier.nitro.document import MAX_TEXT_BYTES, parse_attestation, unwrap_transport
from verifier.nitro.roots import TrustRoot
from verifier.nitro.verify import require_pass, verify_attestation

# pyca warns (on stderr) about odd-but-parseable certificate fields; such certificates are
# judged by the profile checks, and the CLI's contract is one error line, so keep them quiet.
warnings.filterwarnings("ignore", module=r"verifier\.nitro\.")

_DOC = click.Path(dir_okay=False, path_type=Path, allow_dash=True)


@click.group(name="attestation")
def attestation_group() -> None:
    """Verify or show Nitro attestation documents (COSE_Sign1, raw CBOR or base64).

    \b
    Example:
      enclave-audit attestation verify doc.cbor --at document --expect measurements.json
    """


@attestation_group.command(name="verify")
@click.argument("doc", type=_DOC)
@click.option(
    "--root",
    "root_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trust this root CA (PEM) instead of the pinned AWS Nitro root; repeatable.",
)
@at_option(
    document=True,
    help_text="Time the certificates must be valid at: now, the document's own timestamp "
    "(archived documents), or an ISO 8601 time (UTC if no offset).",
)
@click.option(
    "--expect",
    "expect_path",
    type=input_path(),
    metavar="MEASUREMENTS.json",
    help="Expected PCRs: nitro-cli build-enclave output, describe-eif --json, or verify --json.",
)
@click.option("--nonce", "nonce_hex", metavar="HEX", help="Require this nonce (hex).")
@click.option(
    "--max-age",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Refuse documents older than this (relative to the current time).",
)
@click.option("--allow-debug", is_flag=True, help="Accept debug-mode documents (PCR0/1/2 zero).")
@json_option
def verify(
    doc: Path,
    root_paths: tuple[Path, ...],
    at_text: str,
    expect_path: Path | None,
    nonce_hex: str | None,
    max_age: float | None,
    allow_debug: bool,
    as_json: bool,
) -> None:
    """Verify an attestation document: signature, chain to the pinned root, policy.

    DOC is a file or - (standard input).  Exits 0 only when the verdict is PASS.

    \b
    Examples:
      enclave-audit attestation verify doc.b64 --at document --allow-debug --json
      curl -s https://enclave.example/attestation | enclave-audit attestation verify -
    """
    now = datetime.now(UTC)  # the only clock read: the library takes time as an argument
    roots = tuple(TrustRoot.from_file(p) for p in root_paths) or None
    result = verify_attestation(
        _read_document(doc),
        roots=roots,
        at=_parse_at(at_text),
        expected_pcrs=None if expect_path is None else PcrSet.load(expect_path),
        nonce=None if nonce_hex is None else parse_hex(nonce_hex, what="--nonce"),
        max_age=None if max_age is None else timedelta(seconds=max_age),
        allow_debug=allow_debug,
        now=now,
    )
    if as_json:
        emit_json(result)
    else:
        _render_result(result)
    try:
        require_pass(result)
    except AttestationExpired as exc:
        raise _expired(result, at_text) from exc


@attestation_group.command(name="show")
@click.argument("doc", type=_DOC)
@json_option
def show(doc: Path, as_json: bool) -> None:
    """Print a decoded attestation document without judging it.

    \b
    Example:
      enclave-audit attestation show doc.cbor --json
    """
    document = parse_attestation(_read_document(doc))
    if as_json:
        emit_json(document)
    else:
        _render_document(document)


def _read_document(path: Path) -> bytes:
    data = (
        sys.stdin.buffer.read(MAX_TEXT_BYTES + 1)
        if str(path) == "-"
        else read_bytes(path, limit=MAX_TEXT_BYTES)
    )
    if len(data) > MAX_TEXT_BYTES:
        raise InvalidInput(
            f"{path}: larger than {MAX_TEXT_BYTES} bytes, not an attestation document"
        )
    return unwrap_transport(data)


def _parse_at(text: str) -> datetime | Literal["document"] | None:
    if text == "now":
        return None
    if text == "document":
        return "document"
    return parse_time(text, flag="--at (now, document or ISO 8601)")


def _expired(result: AttestationResult, at_text: str) -> AttestationExpired:
    """The expiry error in one short line, with the way out for archived documents."""
    failing = next((c for c in result.failed() if "valid" in c.name), None)
    detail = failing.detail if failing is not None else "a certificate is not valid"
    bounds = re.findall(r"\((not(?:After|Before) [^)]+)\)", detail)
    count = len(bounds) or 1
    state = "not yet valid" if bounds and bounds[0].startswith("notBefore") else "expired"
    role = detail.split(" ", 1)[0] if detail.split(" ", 1)[0].isalpha() else "certificate"
    first = f"{count} certificate(s) {state}, first the {role}" + (
        f" ({bounds[0]})" if bounds else ""
    )
    when = iso_utc(result.verification_time) if result.verification_time else "now"
    hint = None
    if at_text == "now":
        hint = (
            "Nitro certificates live for hours; to check an archived document as of its own"
            f" timestamp ({iso_utc(result.timestamp)}), add --at document"
        )
    return AttestationExpired(
        f"attestation {result.module_id}: certificate chain not valid at {when}: {first}",
        hint=hint,
    )


def _opt(value: bytes | None) -> str:
    return "(none)" if value is None else f"{value.hex()} ({len(value)} bytes)"


def _fields(
    module_id: str, timestamp: datetime, pcrs: PcrSet, extra: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    rows = [("module_id", module_id), ("timestamp", iso_utc(timestamp))]
    rows += [(f"PCR{index}", pcrs.hex(index)) for index in pcrs.indices()]
    return rows + extra


_VERDICT_STYLE = {Verdict.PASS: "bold green", Verdict.FAIL: "bold red"}


def _render_result(result: AttestationResult) -> None:
    write_lines(
        [f"{result.verdict} {visible(result.module_id)}"],
        style=_VERDICT_STYLE.get(result.verdict, "bold yellow"),
    )
    rows = _fields(
        result.module_id,
        result.timestamp,
        result.pcrs,
        [
            ("public_key", _opt(result.public_key)),
            ("user_data", _opt(result.user_data)),
            ("nonce", _opt(result.nonce)),
            (
                "root",
                f"{result.root_name} ({result.root_sha256})" if result.root_name else "(none)",
            ),
            (
                "verified at",
                f"{iso_utc(result.verification_time)} ({result.time_source})"
                if result.verification_time
                else "(no time)",
            ),
        ],
    )
    write_lines(columns(rows))
    write_lines(
        columns(
            [("check", "outcome", "detail")]
            + [(c.name, str(c.outcome), c.detail) for c in result.checks]
        )
    )


def _describe_cert(der: bytes) -> str:
    try:
        summary = summarize(parse_der(der, what="certificate"))
    except AttestationMalformed:
        return f"{len(der)} bytes, not a parseable X.509 certificate"
    return (
        f"{summary.subject} (valid {iso_utc(summary.not_before)} .. {iso_utc(summary.not_after)},"
        f" sha256 {summary.sha256[:16]}...)"
    )


def _render_document(document: AttestationDocument) -> None:
    rows = _fields(
        document.module_id,
        document.timestamp,
        document.pcrs,
        [
            ("digest", document.digest),
            ("public_key", _opt(document.public_key)),
            ("user_data", _opt(document.user_data)),
            ("nonce", _opt(document.nonce)),
            ("certificate", _describe_cert(document.certificate)),
            *((f"cabundle[{i}]", _describe_cert(der)) for i, der in enumerate(document.cabundle)),
            ("cose algorithm", str(document.cose_algorithm)),
            ("envelope", ("tagged" if document.tagged else "untagged") + " COSE_Sign1"),
            ("payload map", f"{document.payload_map}-length"),
            ("unknown fields", ", ".join(document.unknown_fields) or "(none)"),
        ],
    )
    write_lines(columns(rows))
    write_lines(["not verified: use 'enclave-audit attestation verify'"])
