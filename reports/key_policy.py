"""The gate's edits to AWS KMS key policies bound to enclave measurements.

The policy itself is the shared typed model (:mod:`enclave_audit.model.key_policy`),
the same one the reference KMS evaluates and the demo writes: every policy the gate
reads or proposes is checked by its grammar, and the gate's statements are built by
its builders.  :func:`propose` works on the model; :func:`propose_policy`,
:func:`parse_policy` and the other functions taking a mapping serve the gate, which
signs, hashes and writes the policy's JSON object.  The gate owns exactly
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
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

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
    "propose",
    "propose_policy",
    "validate_policy",
]

SID_PREFIX = "EnclaveAudit"
ALLOW_SID = f"{SID_PREFIX}Allow"
DENY_SID = f"{SID_PREFIX}DenyOtherImages"
DEFAULT_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
DENY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncrypt*")


def parse_policy(text: str | bytes, *, source: str = "key policy") -> dict[str, Any]:
    """A key policy document, checked by the shared model (one :class:`InvalidInput` line
    when malformed), as the JSON object the gate signs, hashes and writes."""
    return KeyPolicy.parse(text, source=source).to_document()


def validate_policy(policy: object, *, source: str = "key policy") -> None:
    """Check a decoded key policy against the shared model's grammar."""
    KeyPolicy.from_document(policy, source=source)


def _typed(policy: Mapping[str, Any] | KeyPolicy, source: str) -> KeyPolicy:
    if isinstance(policy, KeyPolicy):
        return policy
    return KeyPolicy.from_document(policy, source=source)


def is_gate_statement(statement: Statement) -> bool:
    return statement.sid is not None and statement.sid.startswith(SID_PREFIX)


def allowed_images(policy: Mapping[str, Any] | KeyPolicy) -> list[AllowedImage]:
    """The measurement sets the gate's Allow statements currently name."""
    out: list[AllowedImage] = []
    for statement in _typed(policy, "key policy").statements:
        image = allowed_image(statement) if is_gate_statement(statement) else None
        if image is not None:
            out.append(image)
    return out


def propose(
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


def propose_policy(
    current: Mapping[str, Any],
    *,
    candidate: PcrSet,
    principal: str,
    pinned_pcrs: Sequence[int],
    now: datetime,
    rollout_until: datetime | None,
    actions: Sequence[str] = DEFAULT_ACTIONS,
) -> dict[str, Any]:
    """:func:`propose` on the JSON object the gate reads and writes."""
    return propose(
        _typed(current, "current key policy"),
        candidate=candidate,
        principal=principal,
        pinned_pcrs=pinned_pcrs,
        now=now,
        rollout_until=rollout_until,
        actions=actions,
    ).to_document()


def _document(policy: Mapping[str, Any] | KeyPolicy) -> Mapping[str, Any]:
    return policy.to_document() if isinstance(policy, KeyPolicy) else policy


def policy_text(policy: Mapping[str, Any] | KeyPolicy) -> str:
    return json.dumps(_document(policy), indent=2) + "\n"


def policy_diff(old: Mapping[str, Any] | KeyPolicy, new: Mapping[str, Any] | KeyPolicy) -> str:
    """A unified diff of the two policies' pretty JSON (empty when equal)."""
    lines = difflib.unified_diff(
        policy_text(old).splitlines(keepends=True),
        policy_text(new).splitlines(keepends=True),
        fromfile="current-policy.json",
        tofile="proposed-policy.json",
    )
    return "".join(lines)
