"""What a relying party requires of an authentic document: PCRs, nonce, age, debug mode.

:class:`AttestationPolicy` is plain data; :func:`policy_checks` turns it into
checks.  A requirement that was not asked for is SKIPPED (it does not count
towards the verdict); one that was asked for but could not be evaluated (e.g.
a maximum age without a current time) is NOT_RUN, which makes the verdict
INCONCLUSIVE.

``unsigned_emulator`` is the explicit insecure mode for QEMU's ``nitro-enclave``
NSM, whose documents are unsigned placeholders (COSE algorithm -1, zero
signature and certificates).  Off by default: such documents are refused with
:class:`~enclave_audit.errors.AttestationUnsigned`.  When on, the signature and
chain checks are reported as SKIPPED with the reason and the result carries
``insecure_unsigned=True``; relying parties that gate real secrets must refuse
any result with that flag.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from enclave_audit.errors import InvalidInput
from enclave_audit.model.attestation_doc import AttestationDocument, iso_utc
from enclave_audit.model.checks import Check, CheckOutcome
from enclave_audit.model.measurements import IMAGE_PCRS, PcrSet

CHECK_DEBUG: Final = "policy.debug"
CHECK_PCRS: Final = "policy.pcrs"
CHECK_NONCE: Final = "policy.nonce"
CHECK_MAX_AGE: Final = "policy.max_age"

#: how far in the future (relative to ``now``) a document timestamp may lie.
CLOCK_SKEW: Final = timedelta(seconds=60)


@dataclass(frozen=True)
class AttestationPolicy:
    """Requirements beyond authenticity.  Defaults: only debug documents are refused."""

    expected_pcrs: PcrSet | None = None
    nonce: bytes | None = None
    max_age: timedelta | None = None
    allow_debug: bool = False
    unsigned_emulator: bool = False

    def __post_init__(self) -> None:
        if self.max_age is not None and self.max_age < timedelta(0):
            raise InvalidInput("max_age must not be negative")


def policy_checks(
    document: AttestationDocument, policy: AttestationPolicy, *, now: datetime | None
) -> list[Check]:
    return [
        _debug(document, policy),
        _pcrs(document, policy.expected_pcrs),
        _nonce(document, policy.nonce),
        _max_age(document, policy.max_age, now),
    ]


def _debug(document: AttestationDocument, policy: AttestationPolicy) -> Check:
    missing = [i for i in IMAGE_PCRS if document.pcrs.get(i) is None]
    if missing:
        return Check(
            name=CHECK_DEBUG,
            outcome=CheckOutcome.FAIL,
            detail=f"document lacks image PCRs {', '.join(f'PCR{i}' for i in missing)}",
        )
    zero = [i for i in IMAGE_PCRS if not any(document.pcrs[i])]
    if not zero:
        return Check(name=CHECK_DEBUG, outcome=CheckOutcome.PASS, detail="production enclave")
    names = "/".join(f"PCR{i}" for i in zero)
    if policy.allow_debug:
        return Check(
            name=CHECK_DEBUG,
            outcome=CheckOutcome.PASS,
            detail=f"debug-mode document ({names} zero) accepted: debug documents allowed",
        )
    return Check(
        name=CHECK_DEBUG,
        outcome=CheckOutcome.FAIL,
        detail=f"debug-mode document ({names} all zero) refused;"
        " allow it explicitly with --allow-debug",
    )


def _pcrs(document: AttestationDocument, expected: PcrSet | None) -> Check:
    if expected is None:
        return Check(
            name=CHECK_PCRS, outcome=CheckOutcome.SKIPPED, detail="no expected measurements given"
        )
    if not expected.indices():  # an expectation that compares nothing must not pass
        return Check(
            name=CHECK_PCRS,
            outcome=CheckOutcome.FAIL,
            detail="the expected measurements name no PCR: nothing would be compared",
        )
    problems = []
    for index in expected.indices():
        actual = document.pcrs.get(index)
        if actual is None:
            problems.append(f"PCR{index} absent from the document")
        elif not hmac.compare_digest(actual, expected[index]):
            problems.append(
                f"PCR{index} is {actual.hex()[:16]}..., expected {expected.hex(index)[:16]}..."
            )
    if problems:
        return Check(name=CHECK_PCRS, outcome=CheckOutcome.FAIL, detail="; ".join(problems))
    listed = ", ".join(f"PCR{i}" for i in expected.indices())
    return Check(name=CHECK_PCRS, outcome=CheckOutcome.PASS, detail=f"{listed} match")


def _nonce(document: AttestationDocument, expected: bytes | None) -> Check:
    if expected is None:
        return Check(name=CHECK_NONCE, outcome=CheckOutcome.SKIPPED, detail="no nonce expected")
    if document.nonce is None:
        return Check(
            name=CHECK_NONCE, outcome=CheckOutcome.FAIL, detail="document carries no nonce"
        )
    if not hmac.compare_digest(document.nonce, expected):
        return Check(
            name=CHECK_NONCE,
            outcome=CheckOutcome.FAIL,
            detail=f"nonce {document.nonce.hex()[:32]}... differs from the expected nonce",
        )
    return Check(name=CHECK_NONCE, outcome=CheckOutcome.PASS, detail="nonce matches")


def _max_age(
    document: AttestationDocument, max_age: timedelta | None, now: datetime | None
) -> Check:
    if max_age is None:
        return Check(
            name=CHECK_MAX_AGE, outcome=CheckOutcome.SKIPPED, detail="no maximum age given"
        )
    if now is None:
        return Check(
            name=CHECK_MAX_AGE,
            outcome=CheckOutcome.NOT_RUN,
            detail="a maximum age was asked for but no current time was given (now=)",
        )
    age = now - document.timestamp
    if age < -CLOCK_SKEW:
        return Check(
            name=CHECK_MAX_AGE,
            outcome=CheckOutcome.FAIL,
            detail=f"timestamp {iso_utc(document.timestamp)} is {-age}"
            f" in the future of {iso_utc(now)}",
        )
    if age > max_age:
        return Check(
            name=CHECK_MAX_AGE,
            outcome=CheckOutcome.FAIL,
            detail=f"document is {age} old at {iso_utc(now)}, more than the maximum {max_age}",
        )
    return Check(
        name=CHECK_MAX_AGE,
        outcome=CheckOutcome.PASS,
        detail=f"document is {max(age, timedelta(0))} old, within {max_age}",
    )
