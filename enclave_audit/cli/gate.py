"""``enclave-audit gate``: k-of-n verified audits to a KMS key-policy update."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from enclave_audit.cli._common import (
    at_option,
    err_console,
    input_path,
    json_document,
    json_option,
    parse_time,
    write_json_text,
)
from enclave_audit.errors import (
    EnvironmentProblem,
    GateRefused,
    InvalidInput,
    KmsRefused,
    ServiceUnavailable,
)
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
_in = input_path()


@click.command("gate")
@click.option("--policy", "policy_path", type=_in, required=True, help="Current key policy JSON.")
@click.option("--measurements", type=_in, required=True, help="Candidate measurements.json.")
@click.option("--vsa", "vsas", type=_in, multiple=True, help="Signed VSA bundle (repeat).")
@click.option("--trust", "trust_path", type=_in, required=True, help="trust.toml.")
@click.option("--eif", type=_in, help="The candidate EIF: VSA subjects must name its sha256.")
@click.option("--eif-digest", help="The candidate EIF's digest as sha256:HEX (instead of --eif).")
@click.option("-o", "--output", type=_file, required=True, help="Where to write the new policy.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write report.{json,md,html} of the decision here.",
)
@click.option("--apply", is_flag=True, help="Write the policy to the KMS (default: dry run).")
@click.option(
    "--kms-endpoint",
    help="KMS endpoint URL (default: AWS_ENDPOINT_URL_KMS / AWS_ENDPOINT_URL, else AWS).",
)
@click.option("--key-id", help="KMS key id or ARN (with --apply).")
@click.option(
    "--region",
    default=None,
    help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's).",
)
@click.option("--profile", default=None, help="AWS named profile (default: AWS_PROFILE).")
@at_option(
    document=False,
    help_text="Evaluate VSA ages and the rollout window at this time: now or an ISO 8601"
    " time (UTC if no offset), to re-run an audit.",
)
@click.option("--now", "now_text", hidden=True, help="Old spelling of --at.")
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
    region: str | None,
    profile: str | None,
    at_text: str,
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
    now = _now(now_text if now_text is not None else at_text)
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
        client = _kms_client(kms_endpoint, region, profile)
        _probe(client, key_id)
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
        write_json_text(json_text)
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
    json_text = json_document(report) if as_json else ""
    lines = [f"  {o.status:<9} {o.source}: {o.auditor or '-'}: {o.detail}" for o in result.outcomes]
    lines += [f"note: {n}" for n in result.notes]
    lines.append(
        f"gate {'APPROVED' if result.approved else 'REFUSED'}: {result.reason}"
        + (f"; new policy in {output}" if result.approved and result.apply_error is None else "")
        + ("; applied to the KMS" if applied else "")
    )
    return texts, lines, json_text


def _now(text: str | None) -> datetime:
    if text is None or text == "now":
        return datetime.now(UTC)
    return parse_time(text, flag="--at")


def _kms_client(endpoint: str | None, region: str | None, profile: str | None) -> Any:
    """A boto3 KMS client configured as boto3 users expect (environment, profile, flags)."""
    import boto3
    from botocore.exceptions import BotoCoreError, NoRegionError, ProfileNotFound

    # AWS_REGION first, as the AWS SDKs and CLI v2 read it (botocore reads only
    # AWS_DEFAULT_REGION and the profile)
    region = region or os.environ.get("AWS_REGION") or None
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
        return session.client("kms", endpoint_url=endpoint)
    except ProfileNotFound as exc:
        raise InvalidInput(f"--profile: {exc}") from None
    except NoRegionError:
        raise EnvironmentProblem(
            "no AWS region for the KMS",
            hint="give --region, set AWS_REGION, or use a profile that names a region",
        ) from None
    except BotoCoreError as exc:
        raise EnvironmentProblem(f"AWS configuration: {exc}") from None


def _probe(client: Any, key_id: str) -> None:
    """Reach the KMS before deciding anything: an unreachable KMS exits 53, nothing logged."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
    )

    try:
        client.describe_key(KeyId=key_id)
    except (EndpointConnectionError, ConnectionError, HTTPClientError) as exc:
        endpoint = getattr(getattr(client, "meta", None), "endpoint_url", "the KMS")
        raise ServiceUnavailable(
            f"KMS at {endpoint} unreachable: {exc}",
            hint="check --kms-endpoint / AWS_ENDPOINT_URL_KMS and --region; nothing was changed",
        ) from None
    except NoCredentialsError:
        raise EnvironmentProblem(
            "no AWS credentials for the KMS",
            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or use --profile",
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise KmsRefused(
            f"KMS DescribeKey {key_id}: {error.get('Code', 'error')}: {error.get('Message', '')}"
        ) from None


def _artifact(eif: Path | None, digest: str | None) -> Digest | None:
    if eif is not None and digest is not None:
        raise click.UsageError("--eif and --eif-digest are alternatives")
    if eif is not None:
        from enclave_audit.fsutil import hash_file

        return Digest(algorithm=HashAlgorithm.SHA256, value=hash_file(eif)["sha256"])
    if digest is not None:
        return Digest.parse(digest)
    return None
