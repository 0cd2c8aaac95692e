"""The gate's edits to AWS KMS key policies bound to enclave measurements.

The policy itself is the shared typed model (:mod:`enclave_audit.model.key_policy`),
the same one the reference KMS evaluates and the demo writes.  The gate owns exactly
the statements whose ``Sid`` starts with :data:`SID_PREFIX`; every other statement of
the current policy is kept as written (same content, same order, before the gate's).
For each allowed measurement set it writes one Allow statement whose condition is
``StringEqualsIgnoreCase`` on ``kms:RecipientAttestation:ImageSha384`` (= PCR0) and
``...:PCR<n>``; a measurement set kept during a rollout window also carries
``DateLessThan aws:CurrentTime`` so the KMS itself stops honouring it when the window
closes.  One explicit Deny refuses every other image (``StringNotEqualsIgnoreCase``
on ImageSha384 with all allowed PCR0 values), which also refuses requests that carry
no attestation at all.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from datetime import datetime

from enclave_audit.model.key_policy import (
    IMAGE_KEY,
    AllowedImage,
    KeyPolicy,
    Statement,
    allowed_image,
    attested_allow,
    deny_other_images,
    pcr_key,
)
from enclave_audit.model.measurements import PcrSet

__all__ = [
    "ALLOW_SID",
    "DEFAULT_ACTIONS",
    "DENY_ACTIONS",
    "DENY_SID",
    "IMAGE_KEY",
    "SID_PREFIX",
    "AllowedImage",
    "KeyPolicy",
    "allowed_images",
    "is_gate_statement",
    "parse_policy",
    "pcr_key",
    "policy_diff",
    "policy_text",
    "propose_policy",
]

SID_PREFIX = "EnclaveAudit"
ALLOW_SID = f"{SID_PREFIX}Allow"
DENY_SID = f"{SID_PREFIX}DenyOtherImages"
DEFAULT_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
DENY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncrypt*")


def parse_policy(text: str | bytes, *, source: str = "key policy") -> KeyPolicy:
    """A key policy document, checked (one :class:`InvalidInput` line when malformed)."""
    return KeyPolicy.parse(text, source=source)


def is_gate_statement(statement: Statement) -> bool:
    return statement.sid is not None and statement.sid.startswith(SID_PREFIX)


def allowed_images(policy: KeyPolicy) -> list[AllowedImage]:
    """The measurement sets the gate's Allow statements currently name."""
    out: list[AllowedImage] = []
    for statement in policy.statements:
        image = allowed_image(statement) if is_gate_statement(statement) else None
        if image is not None:
            out.append(image)
    return out


def propose_policy(
    current: KeyPolicy,
    *,
    candidate: PcrSet,
    principal: str,
    pinned_pcrs: Sequence[int],
    now: datetime,
    rollout_until: datetime | None,
    actions: Sequence[str] = DEFAULT_ACTIONS,
) -> KeyPolicy:
    """The new policy: candidate allowed, still-valid old images allowed until the window ends."""
    keep: list[AllowedImage] = []
    for image in allowed_images(current):
        if image.pcr0 == candidate.hex(0):
            continue
        if image.until is not None and image.until <= now:
            continue  # an earlier rollout window is over
        if rollout_until is None:
            continue  # no rollout: only the candidate stays
        until = image.until if image.until is not None else rollout_until
        keep.append(AllowedImage(image.pcrs, min(until, rollout_until)))
    images = [AllowedImage(candidate), *keep]
    gate = [
        attested_allow(
            principal,
            actions,
            image.pcrs,
            pinned_pcrs,
            sid=f"{ALLOW_SID}{number}",
            until=image.until,
        )
        for number, image in enumerate(images)
    ]
    gate.append(deny_other_images([image.pcr0 for image in images], DENY_ACTIONS, sid=DENY_SID))
    others = [s for s in current.statements if not is_gate_statement(s)]
    proposed = current.with_statements([*others, *gate])
    # what the KMS will be given must itself pass the checks it would apply
    return KeyPolicy.parse(proposed.to_json(), source="proposed key policy")


def policy_text(policy: KeyPolicy) -> str:
    return policy.to_json()


def policy_diff(old: KeyPolicy, new: KeyPolicy) -> str:
    """A unified diff of the two policies' pretty JSON (empty when equal)."""
    lines = difflib.unified_diff(
        old.to_json().splitlines(keepends=True),
        new.to_json().splitlines(keepends=True),
        fromfile="current-policy.json",
        tofile="proposed-policy.json",
    )
    return "".join(lines)
