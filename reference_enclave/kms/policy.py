"""Key policies in the reference KMS: what it supports of the shared model, and evaluation.

Documents are parsed by the project's one key-policy model
(:class:`enclave_audit.model.key_policy.KeyPolicy`, the same the gate writes and the
demo builds); a document it refuses is a ``MalformedPolicyDocumentException``.  This
KMS then refuses, with the same exception and never silently, what it does not
evaluate:

* principals other than ``"*"`` and ``{"AWS": ...}`` with ``*``, account ids,
  ``arn:aws:iam::<acct>:root``, IAM user/role ARNs and STS assumed-role ARNs
  (``Service`` principals are accepted and match no caller); ``NotPrincipal``;
* condition operators other than ``Date*`` (on ``aws:CurrentTime`` / ``aws:EpochTime``),
  ``StringEquals``, ``StringNotEquals``, ``StringEqualsIgnoreCase``,
  ``StringNotEqualsIgnoreCase``, ``StringLike``, ``StringNotLike``, ``Bool`` (each also
  ``...IfExists`` and with the ``ForAnyValue:``/``ForAllValues:`` set qualifiers) and ``Null``.

Evaluation: an explicit Deny in any matching statement wins; otherwise an Allow in a
matching statement allows; otherwise the request is implicitly denied.  Inside a
``Condition`` every operator and every key must hold (AND); a key's policy values are
alternatives (OR; for negated operators: none may match).  A key absent from the request
makes positive operators false and negated ones true; ``...IfExists`` holds when the key
is absent; ``Null: true`` holds exactly when it is absent.

Principal semantics (the simulator has no IAM policies): an account principal (``*``'s
narrower cousin ``arn:aws:iam::<acct>:root`` or the bare account id) matches every caller
of that account, as the default key policy does for callers that IAM allows; a role ARN
also matches the role's STS sessions.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from enclave_audit.errors import InvalidInput
from enclave_audit.model.key_policy import (
    ANYONE,
    DATE_OPERATORS,
    MAX_POLICY_BYTES,
    STRING_OPERATORS,
    Condition,
    Effect,
    KeyPolicy,
    Principal,
    Statement,
    allow,
    parse_date,
)
from reference_enclave.kms.errors import malformed_policy

__all__ = [
    "MAX_POLICY_BYTES",
    "Decision",
    "Evaluation",
    "KeyPolicy",
    "RequestContext",
    "condition_keys",
    "default_policy",
    "evaluate",
    "parse_policy",
]

_ACCOUNT_RE = re.compile(r"^\d{12}$")
_PRINCIPAL_ARN_RE = re.compile(
    r"^arn:aws:(?:iam::(\d{12}):(root|user/[\w+=,.@/-]+|role/[\w+=,.@/-]+)"
    r"|sts::(\d{12}):(assumed-role/[\w+=,.@-]+/[\w+=,.@-]+))$"
)
_EVALUATED_OPERATORS = (*STRING_OPERATORS, "Bool", *DATE_OPERATORS)


class Decision(StrEnum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit-deny"
    IMPLICIT_DENY = "implicit-deny"


@dataclass(frozen=True)
class RequestContext:
    """What a request looks like to the policy engine."""

    principal: str  # caller ARN
    account: str
    action: str  # "kms:Decrypt"
    resource: str  # key ARN
    #: lower-cased condition key -> values (one for single-valued keys)
    keys: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Evaluation:
    decision: Decision
    #: Sid (or index) of the statement that decided, when one did
    statement: str | None


# --- parsing -----------------------------------------------------------------------


def parse_policy(text: str) -> KeyPolicy:
    """Parse, validate and check support; MalformedPolicyDocumentException otherwise."""
    try:
        policy = KeyPolicy.parse(text, source="policy")
    except InvalidInput as exc:
        raise malformed_policy(exc.message) from None
    for index, statement in enumerate(policy.statements):
        where = f"Statement {statement.sid!r}" if statement.sid else f"Statement[{index}]"
        _check_supported(statement, where)
    return policy


def _check_supported(statement: Statement, where: str) -> None:
    if statement.not_principal:
        raise malformed_policy(f"{where}: NotPrincipal is not supported by this KMS")
    for principal in statement.principals:
        if principal == ANYONE or principal.kind == "Service":
            continue
        if principal.kind != "AWS":
            raise malformed_policy(
                f"{where}: unsupported principal type {principal.kind!r} (AWS, Service)"
            )
        if principal.value != "*" and _aws_principal(principal.value) is None:
            raise malformed_policy(
                f"{where}: Policy contains a statement with one or more invalid "
                f"principals: {principal.value!r}"
            )
    for condition in statement.conditions:
        if condition.base != "Null" and condition.base not in _EVALUATED_OPERATORS:
            raise malformed_policy(
                f"{where}: unsupported condition operator {condition.operator!r} (supported: "
                f"{', '.join(_EVALUATED_OPERATORS)}, Null,"
                " with IfExists/ForAnyValue/ForAllValues)"
            )


def _aws_principal(value: str) -> str | None:
    """An AWS principal as an ARN (a bare account id is its root), None if invalid."""
    if _ACCOUNT_RE.match(value):
        return f"arn:aws:iam::{value}:root"
    return value if _PRINCIPAL_ARN_RE.match(value) else None


def default_policy(account: str) -> str:
    """The policy AWS gives a key created without one: the account root may do everything."""
    policy = KeyPolicy(
        (allow(f"arn:aws:iam::{account}:root", ["kms:*"], sid="Enable IAM User Permissions"),),
        id="key-default-1",
    )
    return policy.to_json().rstrip("\n")


# --- evaluation ----------------------------------------------------------------------


def _glob(pattern: str, value: str, *, ignore_case: bool) -> bool:
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    # IAM wildcards are * and ?; escape fnmatch's [] classes
    pattern = pattern.replace("[", "[[]")
    return fnmatch.fnmatchcase(value, pattern)


def _principal_matches(principal: Principal, ctx: RequestContext) -> bool:
    if principal == ANYONE or (principal.kind == "AWS" and principal.value == "*"):
        return True
    if principal.kind != "AWS":
        return False  # Service principals match no caller here
    entry = _aws_principal(principal.value)
    match = _PRINCIPAL_ARN_RE.match(entry) if entry is not None else None
    if entry is None or match is None:
        return False
    account = match.group(1) or match.group(3)
    resource = match.group(2) or match.group(4)
    if resource == "root":
        return ctx.account == account
    if entry == ctx.principal:
        return True
    if resource.startswith("role/"):
        role_name = resource.rsplit("/", 1)[1]
        return ctx.principal.startswith(f"arn:aws:sts::{account}:assumed-role/{role_name}/")
    return False


def _date_match(operator: str, value: str, wanted: str) -> bool:
    have, want = parse_date(value), parse_date(wanted)
    if have is None or want is None:
        return False
    return {
        "DateEquals": have == want,
        "DateNotEquals": have == want,  # negated by the caller
        "DateLessThan": have < want,
        "DateLessThanEquals": have <= want,
        "DateGreaterThan": have > want,
        "DateGreaterThanEquals": have >= want,
    }[operator]


def _single_match(operator: str, value: str, wanted: str) -> bool:
    """Does one context value satisfy one policy value, for the positive operator?"""
    if operator in DATE_OPERATORS:
        return _date_match(operator, value, wanted)
    if operator in ("StringEquals", "StringNotEquals"):
        return value == wanted
    if operator in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        return value.casefold() == wanted.casefold()
    if operator in ("StringLike", "StringNotLike"):
        return _glob(wanted, value, ignore_case=False)
    if operator == "Bool":
        return value.lower() == wanted.lower()
    raise AssertionError(f"unhandled operator {operator}")


def _clause_holds(clause: Condition, keys: Mapping[str, tuple[str, ...]]) -> bool:
    present = keys.get(clause.key.lower())
    operator = clause.base
    if operator == "Null":
        absent = not present
        return all(absent == (v.lower() == "true") for v in clause.values)
    negated = "Not" in operator

    def matches(value: str) -> bool:
        hit = any(_single_match(operator, value, w) for w in clause.values)
        return not hit if negated else hit

    if not present:
        if clause.if_exists:
            return True
        if clause.qualifier == "ForAllValues":
            return True
        if clause.qualifier == "ForAnyValue":
            return False
        return negated
    if clause.qualifier == "ForAllValues":
        return all(matches(v) for v in present)
    if clause.qualifier == "ForAnyValue":
        return any(matches(v) for v in present)
    if negated:
        return all(matches(v) for v in present)
    return any(matches(v) for v in present)


def _statement_applies(statement: Statement, ctx: RequestContext) -> bool:
    if not any(_principal_matches(p, ctx) for p in statement.principals):
        return False
    action_hit = any(_glob(a, ctx.action, ignore_case=True) for a in statement.actions)
    if action_hit == statement.not_action:
        return False
    resource_hit = any(_glob(r, ctx.resource, ignore_case=False) for r in statement.resources)
    if resource_hit == statement.not_resource:
        return False
    return all(_clause_holds(c, ctx.keys) for c in statement.conditions)


def evaluate(policy: KeyPolicy, ctx: RequestContext) -> Evaluation:
    """Explicit deny wins, then allow, else implicit deny."""
    allowed_by: str | None = None
    for index, statement in enumerate(policy.statements):
        if not _statement_applies(statement, ctx):
            continue
        label = statement.sid or f"Statement[{index}]"
        if statement.effect is Effect.DENY:
            return Evaluation(Decision.EXPLICIT_DENY, label)
        if allowed_by is None:
            allowed_by = label
    if allowed_by is not None:
        return Evaluation(Decision.ALLOW, allowed_by)
    return Evaluation(Decision.IMPLICIT_DENY, None)


def condition_keys(
    *,
    principal: str,
    account: str,
    encryption_context: Mapping[str, str] | None = None,
    attestation_pcrs: Mapping[int, bytes] | None = None,
    now: float | None = None,
) -> dict[str, tuple[str, ...]]:
    """The request context's condition keys (lower-cased names).

    ``attestation_pcrs`` are the PCRs of a *verified* attestation document: they give
    ``kms:RecipientAttestation:ImageSha384`` (PCR0) and ``...:PCR<n>`` as lowercase hex.
    """
    keys: dict[str, tuple[str, ...]] = {
        "aws:principalarn": (principal,),
        "aws:principalaccount": (account,),
        "kms:calleraccount": (account,),
    }
    if now is not None:
        keys["aws:currenttime"] = (datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),)
        keys["aws:epochtime"] = (str(int(now)),)
    if encryption_context:
        for name, text in encryption_context.items():
            keys[f"kms:encryptioncontext:{name}".lower()] = (text,)
        keys["kms:encryptioncontextkeys"] = tuple(sorted(encryption_context))
    if attestation_pcrs is not None:
        if 0 in attestation_pcrs:
            keys["kms:recipientattestation:imagesha384"] = (attestation_pcrs[0].hex(),)
        for index, value in attestation_pcrs.items():
            keys[f"kms:recipientattestation:pcr{index}"] = (value.hex(),)
    return keys
