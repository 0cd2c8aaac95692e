"""``enclave-audit gate``: k-of-n verified audits to a KMS key-policy update."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from enclave_audit.cli._common import err_console, json_option
from enclave_audit.errors import GateRefused, InvalidInput
from enclave_audit.fsutil import output_kind, read_bytes, read_json, write_text_atomic
from enclave_audit.model.digests import Digest, HashAlgorithm
from enclave_audit.model.measurements import PcrSet
from reports.gate import (
    GateResult,
    commit_gate,
    gate_report,
    kms_applier,
    load_gate_signer,
    plan_gate,
    read_vsa_files,
)
from reports.key_policy import parse_policy, policy_text
from reports.render import Format, render
from reports.trust import load_trust

_file = click.Path(path_type=Path, dir_okay=False)


@click.command("gate")
@click.option("--policy", "policy_path", type=_file, required=True, help="Current key policy JSON.")
@click.option("--measurements", type=_file, required=True, help="Candidate measurements.json.")
@click.option("--vsa", "vsas", type=_file, multiple=True, help="Signed VSA bundle (repeat).")
@click.option("--trust", "trust_path", type=_file, required=True, help="trust.toml.")
@click.option("--eif", type=_file, help="The candidate EIF: VSA subjects must name its sha256.")
@click.option("--eif-digest", help="The candidate EIF's digest as sha256:HEX (instead of --eif).")
@click.option("-o", "--output", type=_file, required=True, help="Where to write the new policy.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write report.{json,md,html} of the decision here.",
)
@click.option("--apply", is_flag=True, help="Write the policy to the KMS (default: dry run).")
@click.option("--kms-endpoint", help="KMS endpoint URL (default: AWS from the environment).")
@click.option("--key-id", help="KMS key id or ARN (with --apply).")
@click.option("--region", default="us-east-1", show_default=True)
@click.option("--now", "now_text", help="Evaluate at this ISO time instead of the clock (audits).")
@json_option
def gate(
    policy_path: Path,
    measurements: Path,
    vsas: tuple[Path, ...],
    trust_path: Path,
    eif: Path | None,
    eif_digest: str | None,
    output: Path,
    report_dir: Path | None,
    apply: bool,
    kms_endpoint: str | None,
    key_id: str | None,
    region: str,
    now_text: str | None,
    as_json: bool,
) -> None:
    """Allow new enclave measurements in a KMS key policy only after k-of-n audits.

    Verifies every VSA (signature, trusted auditor, subject = the candidate image,
    PASS verdict, PCRs equal to the candidate's, age), counts distinct agreeing
    auditors and, with k of them, writes the new key policy: Allow on the
    candidate's PCRs (and the current ones until the rollout window ends),
    explicit Deny for any other image, other statements untouched. Every decision
    is appended, signed with trust.toml's gate_key, to the decision log named there;
    the log must verify and hold the decision the current policy was written at
    (its Id) before anything happens. Refusals exit 1 and leave the output and the
    KMS untouched.

    \b
    Example:
      enclave-audit gate --policy current.json --measurements out/measurements.json \\
          --vsa alice.vsa.json --vsa bob.vsa.json --trust trust.toml -o new-policy.json
    """
    now = _now(now_text)
    trust = load_trust(trust_path)
    signer = load_gate_signer(trust)
    policy_bytes = read_bytes(policy_path, limit=32 << 10)
    current = parse_policy(policy_bytes, source=str(policy_path))
    candidate_bytes = read_bytes(measurements, limit=1 << 20)
    candidate = PcrSet.from_nitro_json(read_json(measurements), source=str(measurements))
    artifact = _artifact(eif, eif_digest)
    if not vsas:
        raise click.UsageError("give at least one --vsa")
    report_paths = (
        [report_dir / f"report{fmt.suffix}" for fmt in _REPORT_FORMATS] if report_dir else []
    )
    for target in (output, *report_paths):
        output_kind(target)  # a target that would be refused is refused before any effect
    applier = None
    if apply:
        if not key_id:
            raise click.UsageError("--apply needs --key-id")
        import boto3

        client = boto3.client("kms", endpoint_url=kms_endpoint, region_name=region)
        applier = kms_applier(client, key_id, current)
    # every check, and everything shown or written, is done before the first effect
    plan = plan_gate(
        current_policy=current,
        current_policy_bytes=policy_bytes,
        candidate=candidate,
        candidate_bytes=candidate_bytes,
        vsas=read_vsa_files(list(vsas)),
        trust=trust,
        artifact=artifact,
        now=now,
        signer=signer,
    )
    _outputs(plan.result, now, current, output, as_json, applied=apply)
    result = commit_gate(plan, apply=applier)
    texts, lines, json_text = _outputs(
        result, now, current, output, as_json, applied=result.applied
    )
    for path in report_paths:
        write_text_atomic(path, texts[path.suffix])
    if result.approved and result.new_policy is not None and result.apply_error is None:
        write_text_atomic(output, policy_text(result.new_policy))
    if as_json:
        sys.stdout.write(json_text)
        sys.stdout.flush()
    else:
        if result.diff:
            sys.stdout.write(result.diff)
        for line in lines:
            err_console.print(line, markup=False, highlight=False)
    if result.apply_error is not None:
        raise result.apply_error
    if not result.approved:
        raise GateRefused(f"gate refused: {result.reason}")


_REPORT_FORMATS = (Format.JSON, Format.MARKDOWN, Format.HTML)


def _outputs(
    result: GateResult,
    now: datetime,
    current: dict[str, object],
    output: Path,
    as_json: bool,
    *,
    applied: bool,
) -> tuple[dict[str, str], list[str], str]:
    """The report in every format, the terminal lines and the JSON, all in memory.

    Called once before the first effect (so that nothing that is shown or written
    can fail after the log or the KMS changed) and once after, with the outcome.
    """
    report = gate_report(result, now=now, current_policy=current, title="Enclave key-policy gate")
    texts = {fmt.suffix: render(report, fmt) for fmt in _REPORT_FORMATS}
    json_text = report.model_dump_json(indent=2, by_alias=True) + "\n" if as_json else ""
    lines = [
        f"  {o.status:<9} {o.source}: {o.auditor or '-'}: {o.detail}" for o in result.outcomes
    ]
    lines += [f"note: {n}" for n in result.notes]
    lines.append(
        f"gate {'APPROVED' if result.approved else 'REFUSED'}: {result.reason}"
        + (f"; new policy in {output}" if result.approved and result.apply_error is None else "")
        + ("; applied to the KMS" if applied else "")
    )
    return texts, lines, json_text


def _now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"--now {text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _artifact(eif: Path | None, digest: str | None) -> Digest | None:
    if eif is not None and digest is not None:
        raise click.UsageError("--eif and --eif-digest are alternatives")
    if eif is not None:
        from enclave_audit.fsutil import hash_file

        return Digest(algorithm=HashAlgorithm.SHA256, value=hash_file(eif)["sha256"])
    if digest is not None:
        return Digest.parse(digest)
    return None
