"""The KMS policy gate: k-of-n verified, agreeing audits before any key policy changes.

Fails closed: a VSA that cannot be verified never counts (a malformed one is a
rejection with its reason, whatever it holds); a trusted auditor who disagrees
(another verdict, other PCRs) blocks the change; too few agreeing auditors block it.

Order of effects: :func:`plan_gate` runs every check and builds everything (the
signed decision-log entry, the new policy with the log head in its ``Id``) without
writing anything; only then does :func:`commit_gate` write, in this order: the
decision to the log (write-ahead), the policy to the KMS (``--apply``), and the
outcome of that apply to the log.  A run that stops at any check has written nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from enclave_audit.errors import (
    EnclaveAuditError,
    PolicyApplyFailed,
    PolicyNotMet,
    SignatureInvalid,
)
from enclave_audit.fsutil import read_bytes
from enclave_audit.model.attestation import VSA_V1, VerificationResult
from enclave_audit.model.digests import Digest
from enclave_audit.model.findings import Verdict
from enclave_audit.model.measurements import PcrSet
from enclave_audit.model.report import AuditReport, GateSection, PcrRow, SignedStatementEntry
from enclave_runtime import strictjson
from reports import decision_log
from reports.key_policy import allowed_images, policy_diff, propose_policy, validate_policy
from reports.trust import Auditor, TrustConfig
from verifier.attest.signing import KeySigner
from verifier.attest.verify import VerifiedStatement, verify_bundle


@dataclass(frozen=True)
class VsaOutcome:
    source: str
    auditor: str | None
    status: str  # "agrees" | "dissents" | "rejected"
    detail: str
    verdict: str = ""
    subject: str = ""


@dataclass
class GateResult:
    approved: bool
    reason: str
    outcomes: list[VsaOutcome]
    threshold: int
    new_policy: dict[str, Any] | None
    diff: str
    candidate: PcrSet
    log_entry: decision_log.LoggedEntry | None = None
    applied: bool = False
    apply_error: EnclaveAuditError | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def agreeing(self) -> list[str]:
        return sorted({o.auditor for o in self.outcomes if o.status == "agrees" and o.auditor})

    @property
    def dissenting(self) -> list[str]:
        return sorted({o.auditor for o in self.outcomes if o.status == "dissents" and o.auditor})

    @property
    def rejected(self) -> list[str]:
        return [f"{o.source}: {o.detail}" for o in self.outcomes if o.status == "rejected"]


def _identify(
    bundle: bytes,
    auditors: Sequence[Auditor],
    *,
    artifact: Digest | None,
    trusted_root: Path | None,
    source: str,
) -> tuple[Auditor, VerifiedStatement]:
    """The auditor whose policy verifies the bundle; SignatureInvalid if none does."""
    last: EnclaveAuditError | None = None
    for auditor in auditors:
        try:
            verified = verify_bundle(
                bundle,
                auditor.policy,
                artifact_digest=artifact,
                trusted_root=trusted_root,
                predicate_type=VSA_V1,
                source=source,
            )
        except (SignatureInvalid, PolicyNotMet) as exc:
            last = exc
            continue
        return auditor, verified
    raise SignatureInvalid(
        f"{source}: not signed by any trusted auditor"
        + (f" (last: {last.message})" if last else "")
    )


def evaluate_vsa(
    bundle: bytes,
    trust: TrustConfig,
    *,
    candidate: PcrSet,
    artifact: Digest | None,
    now: datetime,
    source: str,
) -> VsaOutcome:
    """Verify one VSA and classify it: agrees, dissents (trusted but negative) or rejected.

    Whatever a VSA holds, it can only be rejected or counted: an input that makes any
    step of its evaluation fail (a value out of range, an unexpected type) is a
    rejection naming that failure, never an error that stops the gate.
    """
    source = strictjson.without_surrogates(source)
    try:
        return _evaluate_vsa(
            bundle, trust, candidate=candidate, artifact=artifact, now=now, source=source
        )
    except EnclaveAuditError as exc:
        return VsaOutcome(source, None, "rejected", exc.message)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        return VsaOutcome(
            source,
            None,
            "rejected",
            f"malformed VSA ({type(exc).__name__}: {str(exc)[:200]})",
        )


def _evaluate_vsa(
    bundle: bytes,
    trust: TrustConfig,
    *,
    candidate: PcrSet,
    artifact: Digest | None,
    now: datetime,
    source: str,
) -> VsaOutcome:
    """Verify one VSA and classify it: agrees, dissents (trusted but negative) or rejected."""
    try:
        auditor, verified = _identify(
            bundle,
            trust.auditors,
            artifact=artifact,
            trusted_root=trust.trusted_root,
            source=source,
        )
    except EnclaveAuditError as exc:
        return VsaOutcome(source, None, "rejected", exc.message)
    subject = ", ".join(
        f"{s.name or '_'}@{next(iter((s.digest or {}).values()), '')[:16]}"
        for s in verified.statement.subject
    )
    try:
        vsa = verified.vsa()
    except EnclaveAuditError as exc:
        return VsaOutcome(source, auditor.name, "rejected", exc.message, subject=subject)
    if trust.verifier_id is not None and vsa.verifier.id != trust.verifier_id:
        return VsaOutcome(
            source,
            auditor.name,
            "rejected",
            f"verifier.id {vsa.verifier.id!r} is not {trust.verifier_id!r}",
            subject=subject,
        )
    if vsa.time_verified is None:
        return VsaOutcome(
            source, auditor.name, "rejected", "VSA has no timeVerified", subject=subject
        )
    verified_at = vsa.time_verified.astimezone(UTC)
    age = now - verified_at
    if age > timedelta(hours=trust.max_vsa_age_hours):
        return VsaOutcome(
            source,
            auditor.name,
            "rejected",
            f"VSA expired: verified {verified_at:%Y-%m-%dT%H:%M:%SZ}, older than"
            f" {trust.max_vsa_age_hours:g} h",
            subject=subject,
        )
    if verified_at - now > timedelta(minutes=5):
        return VsaOutcome(
            source, auditor.name, "rejected", "VSA timeVerified is in the future", subject=subject
        )
    vsa_pcrs = vsa.pcrs()
    verdict = vsa.verdict.value if vsa.verdict else vsa.verification_result.value
    if artifact is None and vsa_pcrs is None:
        return VsaOutcome(
            source,
            auditor.name,
            "rejected",
            "VSA names no PCRs and no image digest was given",
            subject=subject,
        )
    if vsa.verification_result is not VerificationResult.PASSED or (
        vsa.verdict is not None and vsa.verdict is not Verdict.PASS
    ):
        return VsaOutcome(
            source, auditor.name, "dissents", f"verdict {verdict}", verdict=verdict, subject=subject
        )
    if vsa_pcrs is None:
        return VsaOutcome(source, auditor.name, "rejected", "VSA names no PCRs", subject=subject)
    differing = [
        i for i in trust.pinned_pcrs if vsa_pcrs.get(i) is None or vsa_pcrs[i] != candidate.get(i)
    ]
    if differing:
        return VsaOutcome(
            source,
            auditor.name,
            "dissents",
            "verified other measurements: PCR" + ", PCR".join(map(str, differing)),
            verdict=verdict,
            subject=subject,
        )
    missing = [level for level in trust.required_levels if level not in vsa.verified_levels]
    if missing:
        return VsaOutcome(
            source,
            auditor.name,
            "dissents",
            f"required checks not attested: {', '.join(missing)}",
            verdict=verdict,
            subject=subject,
        )
    return VsaOutcome(
        source,
        auditor.name,
        "agrees",
        "verified, PASS, same PCRs",
        verdict=verdict,
        subject=subject,
    )


def _sha256_text(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class GatePlan:
    """Everything one gate run decided, checked and built; nothing written yet."""

    result: GateResult
    trust: TrustConfig
    signer: KeySigner
    entry: decision_log.LoggedEntry

    @property
    def policy(self) -> dict[str, Any] | None:
        return self.result.new_policy


def load_gate_signer(trust: TrustConfig) -> KeySigner:
    """The gate's signing key (trust.toml ``gate_key``); KeyFileError when unusable."""
    return KeySigner.from_path(trust.gate_key)


def plan_gate(
    *,
    current_policy: Mapping[str, Any],
    current_policy_bytes: bytes,
    candidate: PcrSet,
    candidate_bytes: bytes,
    vsas: Sequence[tuple[str, bytes]],
    trust: TrustConfig,
    artifact: Digest | None,
    now: datetime,
    signer: KeySigner,
) -> GatePlan:
    """Run every check and decide; build the signed log entry and the new policy.

    Writes nothing.  Raises before deciding when the log does not verify (signature,
    types, chain) or does not hold the decision the current policy was written at
    (truncated or rolled back), when the current policy is malformed, or when the
    candidate lacks a pinned PCR.
    """
    validate_policy(current_policy, source="current key policy")
    public = signer.public_key()
    entries = decision_log.read_log(trust.decision_log, public)
    head = decision_log.check_head(
        dict(current_policy), entries, where=f"decision log {trust.decision_log}"
    )
    for index in trust.pinned_pcrs:
        if candidate.get(index) is None:
            raise PolicyNotMet(f"candidate measurements lack PCR{index}, which trust.toml pins")
    notes: list[str] = []
    if head is None and any(e.decision == "approved" for e in entries):
        notes.append(
            "the current key policy carries no decision-log head: it was not written by this gate"
        )
    if candidate.is_debug():
        outcomes: list[VsaOutcome] = []
        reason = "candidate measurements are all-zero (debug mode) and are never allowed"
        result = GateResult(False, reason, outcomes, trust.threshold, None, "", candidate)
    else:
        outcomes = [
            evaluate_vsa(data, trust, candidate=candidate, artifact=artifact, now=now, source=name)
            for name, data in vsas
        ]
        result = GateResult(False, "", outcomes, trust.threshold, None, "", candidate)
        if result.dissenting:
            result.reason = "dissent from trusted auditor(s): " + ", ".join(result.dissenting)
        elif len(result.agreeing) < trust.threshold:
            result.reason = (
                f"only {len(result.agreeing)} of the required {trust.threshold} distinct trusted"
                " auditors agree"
            )
        else:
            until = now + timedelta(hours=trust.rollout_hours) if trust.rollout_hours > 0 else None
            result.new_policy = propose_policy(
                current_policy,
                candidate=candidate,
                principal=trust.principal,
                pinned_pcrs=trust.pinned_pcrs,
                now=now,
                rollout_until=until,
                actions=trust.actions,
            )
            result.approved = True
            result.reason = (
                f"{len(result.agreeing)} of {trust.threshold} required auditors agree: "
                + ", ".join(result.agreeing)
            )
    result.notes.extend(notes)
    inputs = {
        "current_policy": _sha256_text(current_policy_bytes),
        "measurements": _sha256_text(candidate_bytes),
        **{f"vsa:{strictjson.without_surrogates(n)}": _sha256_text(d) for n, d in vsas},
    }
    if artifact is not None:
        inputs["image"] = str(artifact)
    entry = decision_log.DecisionEntry(
        seq=0,
        time=now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        decision="approved" if result.approved else "refused",
        reason=result.reason,
        candidate_pcrs={str(i): candidate.hex(i) for i in candidate.indices()},
        inputs=inputs,
        agreeing=result.agreeing,
        dissenting=result.dissenting,
        rejected=[strictjson.without_surrogates(r) for r in result.rejected],
        threshold=trust.threshold,
        policy_sha256=(
            decision_log.policy_sha256(result.new_policy) if result.new_policy else None
        ),
        prev_sha256=decision_log.GENESIS,
    )
    logged = decision_log.next_entry(entries, entry, signer)
    if result.new_policy is not None:
        result.new_policy = _with_head(result.new_policy, decision_log.head_id(logged))
        validate_policy(result.new_policy, source="proposed key policy")
        result.diff = policy_diff(current_policy, result.new_policy)
    result.log_entry = logged
    return GatePlan(result, trust, signer, logged)


def _with_head(policy: dict[str, Any], head: str) -> dict[str, Any]:
    """``policy`` with its ``Id`` set to the log head (Version, Id, then the rest)."""
    out: dict[str, Any] = {}
    if "Version" in policy:
        out["Version"] = policy["Version"]
    out["Id"] = head
    out.update((k, v) for k, v in policy.items() if k not in ("Version", "Id"))
    return out


def commit_gate(
    plan: GatePlan, *, apply: Callable[[dict[str, Any]], None] | None = None
) -> GateResult:
    """The effects, in order: the decision to the log, the policy to the KMS, the outcome.

    An apply that fails is logged (``apply-failed``) and kept in ``result.apply_error``.
    """
    result = plan.result
    public = plan.signer.public_key()
    decision_log.append(plan.trust.decision_log, plan.entry, public)
    if not (result.approved and apply is not None and result.new_policy is not None):
        return result
    try:
        apply(result.new_policy)
        result.applied = True
        outcome, reason = "applied", "written to the KMS and read back"
    except EnclaveAuditError as exc:
        result.apply_error = exc
        result.reason += f"; NOT applied: {exc.message}"
        outcome, reason = "apply-failed", exc.message
    entries = decision_log.read_log(plan.trust.decision_log, public)
    follow = plan.entry.entry.model_copy(
        update={
            "decision": outcome,
            "reason": strictjson.without_surrogates(reason),
            "applies": plan.entry.seq,
        }
    )
    decision_log.append(
        plan.trust.decision_log, decision_log.next_entry(entries, follow, plan.signer), public
    )
    return result


def run_gate(
    *,
    current_policy: Mapping[str, Any],
    current_policy_bytes: bytes,
    candidate: PcrSet,
    candidate_bytes: bytes,
    vsas: Sequence[tuple[str, bytes]],
    trust: TrustConfig,
    artifact: Digest | None,
    now: datetime,
    signer: KeySigner,
    apply: Callable[[dict[str, Any]], None] | None = None,
) -> GateResult:
    """:func:`plan_gate` then :func:`commit_gate`; raises the apply error, if any, last."""
    plan = plan_gate(
        current_policy=current_policy,
        current_policy_bytes=current_policy_bytes,
        candidate=candidate,
        candidate_bytes=candidate_bytes,
        vsas=vsas,
        trust=trust,
        artifact=artifact,
        now=now,
        signer=signer,
    )
    result = commit_gate(plan, apply=apply)
    if result.apply_error is not None:
        raise result.apply_error
    return result


def kms_applier(
    client: Any, key_id: str, expected_current: Mapping[str, Any]
) -> Callable[[dict[str, Any]], None]:
    """PutKeyPolicy through boto3, refusing if the live policy is not the one audited."""

    def apply(policy: dict[str, Any]) -> None:
        try:
            live = json.loads(client.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
        except Exception as exc:  # botocore errors are foreign: one line
            raise PolicyApplyFailed(f"reading the key policy of {key_id}: {exc}") from None
        if live != expected_current:
            raise PolicyApplyFailed(
                f"the live key policy of {key_id} is not the --policy file the gate evaluated;"
                " refusing to overwrite a policy that changed underneath"
            )
        try:
            client.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(policy))
            back = json.loads(client.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
        except Exception as exc:
            raise PolicyApplyFailed(f"PutKeyPolicy on {key_id}: {exc}") from None
        if back != policy:
            raise PolicyApplyFailed(f"{key_id}: the policy read back differs from the one written")

    return apply


def read_vsa_files(paths: Sequence[Path]) -> list[tuple[str, bytes]]:
    return [(p.name, read_bytes(p, limit=16 << 20)) for p in paths]


def gate_report(
    result: GateResult, *, now: datetime, current_policy: Mapping[str, Any], title: str
) -> AuditReport:
    """The audit report of one gate run (what the CI job posts)."""
    rows = [
        PcrRow(
            source="candidate",
            role="candidate",
            pcrs={str(i): result.candidate.hex(i) for i in result.candidate.indices()},
        )
    ]
    for number, image in enumerate(allowed_images(current_policy)):
        rows.append(
            PcrRow(
                source=f"current policy #{number}",
                role="policy",
                pcrs={str(i): image.pcrs.hex(i) for i in image.pcrs.indices()},
            )
        )
    statements = [
        SignedStatementEntry(
            kind="vsa",
            source=o.source,
            signer=o.auditor or "untrusted",
            subject=o.subject,
            verdict=o.verdict or "-",
            accepted=o.status == "agrees",
            detail=f"{o.status}: {o.detail}",
        )
        for o in result.outcomes
    ]
    verdict = Verdict.PASS if result.approved else Verdict.FAIL
    return AuditReport(
        title=title,
        generated_at=now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        verdict=verdict,
        summary=result.reason,
        pcr_table=rows,
        attestations=statements,
        policy_diff=result.diff or None,
        gate=GateSection(
            decision="approved" if result.approved else "refused",
            reason=result.reason,
            threshold=result.threshold,
            agreeing=result.agreeing,
            dissenting=result.dissenting,
            rejected=result.rejected,
            applied=result.applied,
            log_entry_hash=result.log_entry.sha256 if result.log_entry else None,
        ),
        notes=result.notes,
    )
