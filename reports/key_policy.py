"""AWS KMS key policies bound to enclave measurements.

The gate owns exactly the statements whose ``Sid`` starts with :data:`SID_PREFIX`;
every other statement of the current policy is kept byte-for-byte (same
position, same content).  For each allowed measurement set it writes one Allow
statement whose condition is ``StringEqualsIgnoreCase`` on
``kms:RecipientAttestation:ImageSha384`` (= PCR0) and ``...:PCR<n>``; a
measurement set kept during a rollout window also carries
``DateLessThan aws:CurrentTime`` so the KMS itself stops honouring it when the
window closes.  One explicit Deny refuses every other image
(``StringNotEqualsIgnoreCase`` on ImageSha384 with all allowed PCR0 values),
which also refuses requests that carry no attestation at all.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from enclave_audit import strictjson
from enclave_audit.errors import InvalidInput
from enclave_audit.model.measurements import PcrSet

SID_PREFIX = "EnclaveAudit"
ALLOW_SID = f"{SID_PREFIX}Allow"
DENY_SID = f"{SID_PREFIX}DenyOtherImages"
IMAGE_KEY = "kms:RecipientAttestation:ImageSha384"
DEFAULT_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
DENY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncrypt*")
POLICY_VERSION = "2012-10-17"


def pcr_key(index: int) -> str:
    return f"kms:RecipientAttestation:PCR{index}"


@dataclass(frozen=True)
class AllowedImage:
    """One measurement set the policy lets receive the key, optionally until a time."""

    pcrs: PcrSet
    until: datetime | None = None

    @property
    def pcr0(self) -> str:
        return self.pcrs.hex(0)


def _condition_for(image: AllowedImage, indices: Sequence[int]) -> dict[str, Any]:
    values: dict[str, str] = {IMAGE_KEY: image.pcr0}
    for index in indices:
        if index == 0:
            continue
        if image.pcrs.get(index) is None:
            raise InvalidInput(f"measurements lack PCR{index}, which the trust policy pins")
        values[pcr_key(index)] = image.pcrs.hex(index)
    condition: dict[str, Any] = {"StringEqualsIgnoreCase": values}
    if image.until is not None:
        condition["DateLessThan"] = {"aws:CurrentTime": _iso(image.until)}
    return condition


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_policy(text: str | bytes, *, source: str = "key policy") -> dict[str, Any]:
    policy = strictjson.loads(text, what=source, error=InvalidInput)
    validate_policy(policy, source=source)
    assert isinstance(policy, dict)
    return policy


def validate_policy(policy: object, *, source: str = "key policy") -> None:
    """Structural checks on a key policy (what KMS would call a malformed document)."""
    if not isinstance(policy, dict):
        raise InvalidInput(f"{source}: a key policy is a JSON object")
    if "Id" in policy and not isinstance(policy["Id"], str):
        raise InvalidInput(f"{source}: Id must be a string")
    statements = policy.get("Statement")
    if not isinstance(statements, list) or not statements:
        raise InvalidInput(f"{source}: 'Statement' must be a non-empty list")
    sids: set[str] = set()
    for number, statement in enumerate(statements):
        where = f"{source}: statement {number}"
        if not isinstance(statement, dict):
            raise InvalidInput(f"{where} is not an object")
        if statement.get("Effect") not in ("Allow", "Deny"):
            raise InvalidInput(f"{where}: Effect must be Allow or Deny")
        if "Action" not in statement and "NotAction" not in statement:
            raise InvalidInput(f"{where}: no Action")
        if "Principal" not in statement and "NotPrincipal" not in statement:
            raise InvalidInput(f"{where}: no Principal")
        sid = statement.get("Sid")
        if sid is not None:
            if not isinstance(sid, str):
                raise InvalidInput(f"{where}: Sid must be a string")
            if sid in sids:
                raise InvalidInput(f"{where}: duplicate Sid {sid!r}")
            sids.add(sid)
        condition = statement.get("Condition", {})
        if not isinstance(condition, dict):
            raise InvalidInput(f"{where}: Condition must be an object")
        for operator, block in condition.items():
            if not isinstance(block, dict):
                raise InvalidInput(f"{where}: Condition {operator} must be an object")
            for key, value in block.items():
                if key.lower().startswith("kms:recipientattestation:"):
                    _check_attestation_key(key, f"{where}: {operator}")
                    for v in value if isinstance(value, list) else [value]:
                        _check_pcr_value(v, f"{where}: {key}")


_ATTESTATION_KEY = re.compile(
    r"^kms:RecipientAttestation:(ImageSha384|PCR([0-9]|[12][0-9]|3[01]))$", re.IGNORECASE
)


def _check_attestation_key(key: str, where: str) -> None:
    if not _ATTESTATION_KEY.match(key):
        raise InvalidInput(
            f"{where}: unknown condition key {key[:60]!r}"
            " (kms:RecipientAttestation:ImageSha384 or PCR0..PCR31)"
        )


def _check_pcr_value(value: object, where: str) -> None:
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: value must be a string")
    if value.lower().startswith("0x") or len(value) != 96:
        raise InvalidInput(f"{where}: expected 96 hex characters without 0x, got {value[:20]!r}")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise InvalidInput(f"{where}: not hexadecimal") from None


def is_gate_statement(statement: Mapping[str, Any]) -> bool:
    sid = statement.get("Sid")
    return isinstance(sid, str) and sid.startswith(SID_PREFIX)


def allowed_images(policy: Mapping[str, Any]) -> list[AllowedImage]:
    """The measurement sets the gate's Allow statements currently name."""
    out: list[AllowedImage] = []
    for statement in policy.get("Statement", []):
        if not is_gate_statement(statement) or statement.get("Effect") != "Allow":
            continue
        condition = statement.get("Condition", {})
        values = condition.get("StringEqualsIgnoreCase", {})
        pcrs: dict[int, str] = {}
        for key, value in values.items():
            match = _ATTESTATION_KEY.match(key)
            if match is None or not isinstance(value, str):
                continue  # not a single-valued measurement condition of ours
            if match.group(1).lower() == "imagesha384":
                pcrs[0] = value.lower()
            else:
                pcrs[int(match.group(2))] = value.lower()
        window = condition.get("DateLessThan", {})
        until_text = window.get("aws:CurrentTime") if isinstance(window, dict) else None
        until = _parse_until(until_text, str(statement.get("Sid"))) if until_text else None
        if 0 in pcrs:
            out.append(AllowedImage(PcrSet(values=pcrs), until))
    return out


def _parse_until(value: object, sid: str) -> datetime:
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    raise InvalidInput(f"key policy statement {sid[:60]!r}: DateLessThan is not an ISO 8601 time")


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
    """The new policy: candidate allowed, still-valid old images allowed until the window ends."""
    validate_policy(current, source="current key policy")
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
    gate_statements: list[dict[str, Any]] = []
    for number, image in enumerate(images):
        gate_statements.append(
            {
                "Sid": f"{ALLOW_SID}{number}",
                "Effect": "Allow",
                "Principal": {"AWS": principal},
                "Action": list(actions),
                "Resource": "*",
                "Condition": _condition_for(image, pinned_pcrs),
            }
        )
    gate_statements.append(
        {
            "Sid": DENY_SID,
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": list(DENY_ACTIONS),
            "Resource": "*",
            "Condition": {
                "StringNotEqualsIgnoreCase": {IMAGE_KEY: [image.pcr0 for image in images]}
            },
        }
    )
    new = copy.deepcopy(dict(current))
    others = [s for s in new["Statement"] if not is_gate_statement(s)]
    new["Statement"] = others + gate_statements
    new.setdefault("Version", POLICY_VERSION)
    validate_policy(new, source="proposed key policy")
    return new


def policy_text(policy: Mapping[str, Any]) -> str:
    return json.dumps(policy, indent=2) + "\n"


def policy_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """A unified diff of the two policies' pretty JSON (empty when equal)."""
    lines = difflib.unified_diff(
        policy_text(old).splitlines(keepends=True),
        policy_text(new).splitlines(keepends=True),
        fromfile="current-policy.json",
        tofile="proposed-policy.json",
    )
    return "".join(lines)
