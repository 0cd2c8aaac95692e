"""Verify a Nitro attestation document: bytes in, typed result out, time passed in.

Order of work: parse and type-check (malformed input raises
:class:`AttestationMalformed`), refuse unsigned emulator documents unless the
policy allows them (:class:`AttestationUnsigned`), then run every check and
record it: COSE algorithm, chain root/profile/signatures/validity, COSE
signature, and the policy (debug, PCRs, nonce, age).  Trust and policy
failures do not raise: they are FAIL checks in the returned result, whose
verdict is PASS only when every check that was asked for ran and passed.
:func:`require_pass` turns a non-PASS result into the matching error.

Nothing here reads the clock: pass ``now`` (the caller's current time) and/or
``at`` (``"document"`` to judge certificate validity at the document's own
timestamp, for archived documents, or an explicit datetime).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final, Literal

from enclave_audit.cose import Sign1, signature_problem
from enclave_audit.errors import (
    AttestationChainInvalid,
    AttestationExpired,
    AttestationPolicyFailed,
    AttestationSignatureInvalid,
    AttestationUnsigned,
    AuditFailed,
    EnclaveAuditError,
    InvalidInput,
)
from enclave_audit.model.attestation_doc import (
    AttestationDocument,
    AttestationResult,
    CertificateSummary,
    TimeSource,
)
from enclave_audit.model.checks import Check, CheckOutcome, Verdict, verdict_of
from enclave_audit.model.measurements import PcrSet
from verifier.nitro import chain as chain_checks
from verifier.nitro.chain import ChainCache, validate_chain
from verifier.nitro.document import ALG_ES384, ALG_QEMU_UNSIGNED, parse_attestation
from verifier.nitro.policy import AttestationPolicy, policy_checks
from verifier.nitro.roots import TrustRoot, default_roots

CHECK_STRUCTURE: Final = "document.structure"
CHECK_ALGORITHM: Final = "cose.algorithm"
CHECK_SIGNATURE: Final = "cose.signature"

#: shared by every call that does not pass its own cache: content-addressed, so safe to share.
DEFAULT_CHAIN_CACHE: Final = ChainCache()

#: which error a failing check maps to, most fundamental first.
_ERROR_FOR_CHECK: Final[tuple[tuple[str, type[EnclaveAuditError]], ...]] = (
    (chain_checks.CHECK_ROOT, AttestationChainInvalid),
    (chain_checks.CHECK_PROFILE, AttestationChainInvalid),
    (chain_checks.CHECK_SIGNATURES, AttestationChainInvalid),
    (CHECK_ALGORITHM, AttestationSignatureInvalid),
    (CHECK_SIGNATURE, AttestationSignatureInvalid),
    (chain_checks.CHECK_VALIDITY, AttestationExpired),
)


def verify_attestation(
    document: bytes,
    *,
    roots: Sequence[TrustRoot] | None = None,
    at: datetime | Literal["document"] | None = None,
    expected_pcrs: PcrSet | None = None,
    nonce: bytes | None = None,
    max_age: timedelta | None = None,
    allow_debug: bool = False,
    now: datetime | None = None,
    unsigned_emulator: bool = False,
    chain_cache: ChainCache | None = None,
) -> AttestationResult:
    """Verify a raw COSE_Sign1 attestation document against trust roots and a policy.

    ``roots`` defaults to the pinned AWS Nitro root.  ``at`` chooses the time
    certificates must be valid at: ``None`` = ``now``; ``"document"`` = the
    document's timestamp; or a datetime.  ``now`` is also the reference for
    ``max_age``.  Raises :class:`AttestationMalformed` for input that is not a
    well-formed document and :class:`AttestationUnsigned` for an emulator
    document when ``unsigned_emulator`` is false; everything else is reported
    in the result.
    """
    policy = AttestationPolicy(
        expected_pcrs=expected_pcrs,
        nonce=nonce,
        max_age=max_age,
        allow_debug=allow_debug,
        unsigned_emulator=unsigned_emulator,
    )
    return verify_with_policy(
        document,
        policy,
        roots=default_roots() if roots is None else tuple(roots),
        at=at,
        now=now,
        chain_cache=DEFAULT_CHAIN_CACHE if chain_cache is None else chain_cache,
    )


def verify_with_policy(
    document: bytes,
    policy: AttestationPolicy,
    *,
    roots: Sequence[TrustRoot],
    at: datetime | Literal["document"] | None,
    now: datetime | None,
    chain_cache: ChainCache,
) -> AttestationResult:
    _require_aware(now, "now")
    if isinstance(at, datetime):
        _require_aware(at, "at")
    elif at is not None and at != "document":
        raise InvalidInput(f"at: expected a datetime, 'document' or None, got {at!r}")
    doc = parse_attestation(document)
    when, source = _verification_time(doc, at, now)
    checks = [_structure(doc)]

    if doc.cose_algorithm == ALG_QEMU_UNSIGNED:
        if not policy.unsigned_emulator:
            raise AttestationUnsigned(
                f"attestation {doc.module_id}: unsigned emulator document (COSE algorithm -1, "
                "no signature or certificate chain) refused; QEMU's NSM does not sign"
            )
        skipped = "not checked: unsigned emulator document accepted in insecure mode"
        checks += [
            Check(name=name, outcome=CheckOutcome.SKIPPED, detail=skipped)
            for name in (
                CHECK_ALGORITHM,
                chain_checks.CHECK_ROOT,
                chain_checks.CHECK_PROFILE,
                chain_checks.CHECK_SIGNATURES,
                chain_checks.CHECK_VALIDITY,
                CHECK_SIGNATURE,
            )
        ]
        checks += policy_checks(doc, policy, now=now)
        return _result(doc, checks, None, [], when, source, insecure=True)

    checks.append(_algorithm(doc))
    found = validate_chain(doc.certificate, doc.cabundle, roots=roots, at=when, cache=chain_cache)
    checks += found.checks
    checks.append(_signature(doc, found.leaf.public_key()))
    checks += policy_checks(doc, policy, now=now)
    return _result(doc, checks, found.root, found.summaries, when, source, insecure=False)


def require_pass(result: AttestationResult) -> AttestationResult:
    """Return ``result`` if its verdict is PASS, else raise the error for its first failure."""
    if result.verdict is Verdict.PASS:
        return result
    failed = {c.name: c for c in result.failed()}
    for name, error in _ERROR_FOR_CHECK:
        if name in failed:
            raise error(f"attestation {result.module_id}: {name}: {failed[name].detail}")
    if result.failed():
        first = result.failed()[0]
        raise AttestationPolicyFailed(
            f"attestation {result.module_id}: {first.name}: {first.detail}"
        )
    reasons = "; ".join(f"{c.name}: {c.detail}" for c in result.not_run()) or "no checks ran"
    raise AuditFailed(f"attestation {result.module_id}: verdict INCONCLUSIVE: {reasons}")


def _verification_time(
    doc: AttestationDocument, at: datetime | Literal["document"] | None, now: datetime | None
) -> tuple[datetime | None, TimeSource]:
    if at == "document":
        return doc.timestamp, TimeSource.DOCUMENT
    if isinstance(at, datetime):
        return at, TimeSource.EXPLICIT
    if now is not None:
        return now, TimeSource.NOW
    return None, TimeSource.NONE


def _structure(doc: AttestationDocument) -> Check:
    extra = f"; unknown fields kept: {', '.join(doc.unknown_fields)}" if doc.unknown_fields else ""
    return Check(
        name=CHECK_STRUCTURE,
        outcome=CheckOutcome.PASS,
        detail=(
            f"{'tagged' if doc.tagged else 'untagged'} COSE_Sign1, {doc.payload_map}-length"
            f" payload map, {len(doc.pcrs.indices())} PCRs, {len(doc.cabundle)} CA certificates"
            f"{extra}"
        ),
    )


def _algorithm(doc: AttestationDocument) -> Check:
    if doc.cose_algorithm == ALG_ES384:
        return Check(name=CHECK_ALGORITHM, outcome=CheckOutcome.PASS, detail="ES384 (-35)")
    return Check(
        name=CHECK_ALGORITHM,
        outcome=CheckOutcome.FAIL,
        detail=f"COSE algorithm {doc.cose_algorithm} is not ES384 (-35), the only one Nitro uses",
    )


def _signature(doc: AttestationDocument, key: object) -> Check:
    if doc.cose_algorithm != ALG_ES384:
        return Check(
            name=CHECK_SIGNATURE,
            outcome=CheckOutcome.FAIL,
            detail=f"cannot verify a signature with COSE algorithm {doc.cose_algorithm}",
        )
    problem = signature_problem(
        key, ALG_ES384, Sign1(doc.protected_header, doc.payload, doc.signature)
    )
    if problem is not None:
        return Check(name=CHECK_SIGNATURE, outcome=CheckOutcome.FAIL, detail=problem)
    return Check(
        name=CHECK_SIGNATURE,
        outcome=CheckOutcome.PASS,
        detail="ES384 signature by the leaf key over the original payload bytes",
    )


def _result(
    doc: AttestationDocument,
    checks: list[Check],
    root: TrustRoot | None,
    chain: list[CertificateSummary],
    when: datetime | None,
    source: TimeSource,
    *,
    insecure: bool,
) -> AttestationResult:
    return AttestationResult(
        verdict=verdict_of(checks),
        module_id=doc.module_id,
        timestamp=doc.timestamp,
        digest=doc.digest,
        pcrs=doc.pcrs,
        public_key=doc.public_key,
        user_data=doc.user_data,
        nonce=doc.nonce,
        root_sha256=None if root is None else root.sha256,
        root_name=None if root is None else root.name,
        verification_time=when,
        time_source=source,
        insecure_unsigned=insecure,
        chain=chain,
        checks=checks,
    )


def _require_aware(value: datetime | None, name: str) -> None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput(f"{name}: datetime must be timezone-aware (e.g. datetime.now(UTC))")
