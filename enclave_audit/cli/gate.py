"""``enclave-audit gate``: k-of-n verified audits to a KMS key-policy update."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from enclave_audit.cli._common import emit_json, err_console, json_option
from enclave_audit.errors import GateRefused, InvalidInput
from enclave_audit.fsutil import read_bytes, read_json, write_text_atomic
from enclave_audit.model.digests import Digest, HashAlgorithm
from enclave_audit.model.measurements import PcrSet
from reports.gate import gate_report, kms_applier, read_vsa_files, run_gate
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
    is appended to the hash-chained decision log named in trust.toml. Refusals
    exit 1 and leave the output and the KMS untouched.

    \b
    Example:
      enclave-audit gate --policy current.json --measurements out/measurements.json \\
          --vsa alice.vsa.json --vsa bob.vsa.json --trust trust.toml -o new-policy.json
    """
    now = _now(now_text)
    trust = load_trust(trust_path)
    policy_bytes = read_bytes(policy_path, limit=32 << 10)
    current = parse_policy(policy_bytes, source=str(policy_path))
    candidate_bytes = read_bytes(measurements, limit=1 << 20)
    candidate = PcrSet.from_nitro_json(read_json(measurements), source=str(measurements))
    artifact = _artifact(eif, eif_digest)
    if not vsas:
        raise click.UsageError("give at least one --vsa")
    applier = None
    if apply:
        if not key_id:
            raise click.UsageError("--apply needs --key-id")
        import boto3

        client = boto3.client("kms", endpoint_url=kms_endpoint, region_name=region)
        applier = kms_applier(client, key_id, current)
    result = run_gate(
        current_policy=current,
        current_policy_bytes=policy_bytes,
        candidate=candidate,
        candidate_bytes=candidate_bytes,
        vsas=read_vsa_files(list(vsas)),
        trust=trust,
        artifact=artifact,
        now=now,
        apply=applier,
    )
    report = gate_report(result, now=now, current_policy=current, title="Enclave key-policy gate")
    if report_dir is not None:
        for fmt in (Format.JSON, Format.MARKDOWN, Format.HTML):
            write_text_atomic(report_dir / f"report{fmt.suffix}", render(report, fmt))
    if result.approved and result.new_policy is not None:
        write_text_atomic(output, policy_text(result.new_policy))
    if as_json:
        emit_json(report)
    else:
        for o in result.outcomes:
            err_console.print(f"  {o.status:<9} {o.source}: {o.auditor or '-'}: {o.detail}")
        if result.diff:
            sys.stdout.write(result.diff)
        err_console.print(
            f"gate {'APPROVED' if result.approved else 'REFUSED'}: {result.reason}"
            + (f"; new policy in {output}" if result.approved else "")
            + ("; applied to the KMS" if result.applied else "")
        )
    if not result.approved:
        raise GateRefused(f"gate refused: {result.reason}")


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
