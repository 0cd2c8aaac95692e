"""Key policies: parsing, validation and evaluation with IAM semantics.

Supported (anything else is refused by :func:`parse_policy` with
``MalformedPolicyDocumentException``, never silently ignored):

* ``Version`` ``2012-10-17`` (or ``2008-10-17``), optional ``Id``, ``Statement`` (object or list);
* statement elements ``Sid``, ``Effect`` (Allow/Deny), ``Principal`` (``"*"`` or
  ``{"AWS": ...}`` with ``*``, account ids, ``arn:aws:iam::<acct>:root``, IAM user/role
  ARNs, STS assumed-role ARNs; ``Service`` principals are accepted and match no caller),
  ``Action``/``NotAction`` (``kms:*`` style, ``*`` and ``?`` wildcards, case-insensitive),
  ``Resource``/``NotResource`` (``*`` or key ARNs with wildcards), ``Condition``;
* condition operators ``Date*`` (on ``aws:CurrentTime`` / ``aws:EpochTime``), ``StringEquals``,
  ``StringNotEquals``, ``StringEqualsIgnoreCase``,
  ``StringNotEqualsIgnoreCase``, ``StringLike``, ``StringNotLike``, ``Bool``, each also
  ``...IfExists`` and with the ``ForAnyValue:``/``ForAllValues:`` set qualifiers, and ``Null``.

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
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from enclave_audit import strictjson
from reference_enclave.kms.errors import malformed_policy

MAX_POLICY_BYTES = 32 * 1024
VERSIONS = ("2012-10-17", "2008-10-17")
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_PRINCIPAL_ARN_RE = re.compile(
    r"^arn:aws:(?:iam::(\d{12}):(root|user/[\w+=,.@/-]+|role/[\w+=,.@/-]+)"
    r"|sts::(\d{12}):(assumed-role/[\w+=,.@-]+/[\w+=,.@-]+))$"
)
_ACTION_RE = re.compile(r"^(?:\*|kms:[A-Za-z*?]+)$", re.IGNORECASE)
_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9:_./*?-]+$")
_STRING_OPERATORS = (
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "Bool",
)
_DATE_OPERATORS = (
    "DateEquals",
    "DateNotEquals",
    "DateLessThan",
    "DateLessThanEquals",
    "DateGreaterThan",
    "DateGreaterThanEquals",
)
_STATEMENT_KEYS = {
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
}


class Effect(StrEnum):
    ALLOW = "Allow"
    DENY = "Deny"


class Decision(StrEnum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit-deny"
    IMPLICIT_DENY = "implicit-deny"


@dataclass(frozen=True)
class ConditionClause:
    """One ``operator: {key: values}`` entry, split into its parts."""

    qualifier: str | None  # "ForAnyValue" / "ForAllValues" / None
    operator: str  # base operator without IfExists, e.g. "StringEqualsIgnoreCase", "Null"
    if_exists: bool
    key: str  # lower-cased condition key
    values: tuple[str, ...]


@dataclass(frozen=True)
class Statement:
    sid: str | None
    effect: Effect
    principals: tuple[str, ...]  # "*" or normalised AWS principals; Service ones kept as "service:"
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    conditions: tuple[ConditionClause, ...]


@dataclass(frozen=True)
class Policy:
    version: str
    statements: tuple[Statement, ...]


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


def _strings(value: object, where: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items and not allow_empty:
        raise malformed_policy(f"{where} must not be empty")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise malformed_policy(f"{where} must be a non-empty string or a list of them")
        out.append(item)
    return tuple(out)


def _condition_values(value: object, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise malformed_policy(f"{where} has no values")
    out: list[str] = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, str | int | float):
            out.append(str(item))
        else:
            raise malformed_policy(f"{where} values must be strings, numbers or booleans")
    return tuple(out)


def _principals(value: object, where: str) -> tuple[str, ...]:
    if value == "*":
        return ("*",)
    if not isinstance(value, dict) or not value:
        raise malformed_policy(f'{where}: Principal must be "*" or an object like {{"AWS": ...}}')
    out: list[str] = []
    for kind, entries in value.items():
        if kind == "AWS":
            for entry in _strings(entries, f"{where}: Principal.AWS"):
                if entry == "*":
                    out.append("*")
                elif _ACCOUNT_RE.match(entry):
                    out.append(f"arn:aws:iam::{entry}:root")
                elif _PRINCIPAL_ARN_RE.match(entry):
                    out.append(entry)
                else:
                    raise malformed_policy(
                        f"{where}: Policy contains a statement with one or more invalid "
                        f"principals: {entry!r}"
                    )
        elif kind == "Service":
            out.extend(f"service:{s}" for s in _strings(entries, f"{where}: Principal.Service"))
        else:
            raise malformed_policy(f"{where}: unsupported principal type {kind!r} (AWS, Service)")
    return tuple(out)


def _conditions(value: object, where: str) -> tuple[ConditionClause, ...]:
    if not isinstance(value, dict) or not value:
        raise malformed_policy(f"{where}: Condition must be a non-empty object")
    clauses: list[ConditionClause] = []
    for raw_operator, block in value.items():
        if not isinstance(raw_operator, str):
            raise malformed_policy(f"{where}: condition operator must be a string")
        qualifier: str | None = None
        operator = raw_operator
        if ":" in operator:
            qualifier, operator = operator.split(":", 1)
            if qualifier not in ("ForAnyValue", "ForAllValues"):
                raise malformed_policy(
                    f"{where}: unknown set qualifier {qualifier!r} in {raw_operator!r}"
                )
        if_exists = operator.endswith("IfExists")
        base = operator[: -len("IfExists")] if if_exists else operator
        if base == "Null":
            if if_exists or qualifier:
                raise malformed_policy(f"{where}: {raw_operator!r} is not a valid operator")
        elif base not in _STRING_OPERATORS and base not in _DATE_OPERATORS:
            raise malformed_policy(
                f"{where}: unsupported condition operator {raw_operator!r} (supported: "
                f"{', '.join(_STRING_OPERATORS + _DATE_OPERATORS)}, Null,"
                " with IfExists/ForAnyValue/ForAllValues)"
            )
        if not isinstance(block, dict) or not block:
            raise malformed_policy(f"{where}: {raw_operator} must map condition keys to values")
        for key, raw_values in block.items():
            if not isinstance(key, str) or not _KEY_NAME_RE.match(key):
                raise malformed_policy(f"{where}: {raw_operator}: invalid condition key {key!r}")
            values = _condition_values(raw_values, f"{where}: {raw_operator}.{key}")
            if base in ("Null", "Bool") and any(v.lower() not in ("true", "false") for v in values):
                raise malformed_policy(f"{where}: {raw_operator}.{key} takes true or false")
            if base in ("Null", "Bool"):
                values = tuple(v.lower() for v in values)
            if base in _DATE_OPERATORS:
                for v in values:
                    if _parse_date(v) is None:
                        raise malformed_policy(
                            f"{where}: {raw_operator}.{key}: {v!r} is not an ISO 8601 date"
                            " or epoch seconds"
                        )
            clauses.append(ConditionClause(qualifier, base, if_exists, key.lower(), values))
    return tuple(clauses)


def _statement(raw: object, index: int) -> Statement:
    where = f"Statement[{index}]"
    if not isinstance(raw, dict):
        raise malformed_policy(f"{where} must be an object")
    unknown = set(raw) - _STATEMENT_KEYS
    if unknown:
        raise malformed_policy(f"{where}: unknown element(s) {', '.join(sorted(unknown))}")
    sid = raw.get("Sid")
    if sid is not None and (not isinstance(sid, str) or not re.match(r"^[\w ./-]*$", sid)):
        raise malformed_policy(f"{where}: Sid must be a string of letters, digits and spaces")
    if sid:
        where = f"Statement {sid!r}"
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise malformed_policy(f'{where}: Effect must be "Allow" or "Deny"')
    if "NotPrincipal" in raw:
        raise malformed_policy(f"{where}: NotPrincipal is not supported by this KMS")
    if "Principal" not in raw:
        raise malformed_policy(f"{where}: Policy contains a statement with no principal.")
    principals = _principals(raw["Principal"], where)
    if ("Action" in raw) == ("NotAction" in raw):
        raise malformed_policy(f"{where}: exactly one of Action or NotAction is required")
    not_action = "NotAction" in raw
    actions = _strings(raw["NotAction" if not_action else "Action"], f"{where}: Action")
    for action in actions:
        if not _ACTION_RE.match(action):
            raise malformed_policy(
                f"{where}: action {action!r} is not a KMS action (kms:<Name>, wildcards allowed)"
            )
    if ("Resource" in raw) == ("NotResource" in raw):
        raise malformed_policy(f"{where}: exactly one of Resource or NotResource is required")
    not_resource = "NotResource" in raw
    resources = _strings(raw["NotResource" if not_resource else "Resource"], f"{where}: Resource")
    for resource in resources:
        if resource != "*" and not resource.startswith("arn:aws:kms:"):
            raise malformed_policy(f'{where}: resource {resource!r} must be "*" or a KMS key ARN')
    conditions = _conditions(raw["Condition"], where) if "Condition" in raw else ()
    return Statement(
        sid=sid or None,
        effect=Effect(effect),
        principals=principals,
        actions=tuple(a.lower() for a in actions),
        not_action=not_action,
        resources=resources,
        not_resource=not_resource,
        conditions=conditions,
    )


def parse_policy(text: str) -> Policy:
    """Parse and validate a key policy document; MalformedPolicyDocumentException otherwise."""
    if not text.strip():
        raise malformed_policy("The policy document is empty.")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise malformed_policy(f"The policy is larger than {MAX_POLICY_BYTES} bytes.")
    data: Any = strictjson.loads(text, what="The policy", error=malformed_policy)
    if not isinstance(data, dict):
        raise malformed_policy("The policy must be a JSON object.")
    unknown = set(data) - {"Version", "Id", "Statement"}
    if unknown:
        raise malformed_policy(f"Unknown top-level element(s): {', '.join(sorted(unknown))}")
    version = data.get("Version")
    if version not in VERSIONS:
        raise malformed_policy(f"Version must be one of {', '.join(VERSIONS)}")
    raw_statements = data.get("Statement")
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list) or not raw_statements:
        raise malformed_policy("Statement must be a non-empty list of statements")
    statements = tuple(_statement(s, i) for i, s in enumerate(raw_statements))
    sids = [s.sid for s in statements if s.sid]
    if len(sids) != len(set(sids)):
        raise malformed_policy("Statement ids (Sid) must be unique")
    policy = Policy(version=version, statements=statements)
    _check_attestation_values(policy)
    return policy


def default_policy(account: str) -> str:
    """The policy AWS gives a key created without one: the account root may do everything."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        },
        indent=2,
    )


# --- evaluation ----------------------------------------------------------------------


def _glob(pattern: str, value: str, *, ignore_case: bool) -> bool:
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    # IAM wildcards are * and ?; escape fnmatch's [] classes
    pattern = pattern.replace("[", "[[]")
    return fnmatch.fnmatchcase(value, pattern)


def _principal_matches(entry: str, ctx: RequestContext) -> bool:
    if entry == "*":
        return True
    if entry.startswith("service:"):
        return False
    match = _PRINCIPAL_ARN_RE.match(entry)
    if match is None:
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


def _parse_date(text: str) -> float | None:
    """IAM date values: ISO 8601 (``2026-11-24T12:00:00Z``) or epoch seconds."""
    if re.fullmatch(r"\d{1,12}", text):
        return float(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _date_match(operator: str, value: str, wanted: str) -> bool:
    have, want = _parse_date(value), _parse_date(wanted)
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
    if operator in _DATE_OPERATORS:
        return _date_match(operator, value, wanted)
    if operator in ("StringEquals", "StringNotEquals"):
        return value == wanted
    if operator in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        return value.casefold() == wanted.casefold()
    if operator in ("StringLike", "StringNotLike"):
        return _glob(wanted, value, ignore_case=False)
    if operator == "Bool":
        return value.lower() == wanted
    raise AssertionError(f"unhandled operator {operator}")


def _clause_holds(clause: ConditionClause, keys: Mapping[str, tuple[str, ...]]) -> bool:
    present = keys.get(clause.key)
    if clause.operator == "Null":
        absent = not present
        return all(absent == (v == "true") for v in clause.values)
    negated = "Not" in clause.operator

    def matches(value: str) -> bool:
        hit = any(_single_match(clause.operator, value, w) for w in clause.values)
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


def evaluate(policy: Policy, ctx: RequestContext) -> Evaluation:
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


def _check_attestation_values(policy: Policy) -> None:
    """Attestation conditions that can never match a real document are errors (our rule).

    Values are compared with lowercase hex of 48-byte PCRs; a ``0x`` prefix or a length
    other than 96 hex characters (64/128 for other digest sizes) is refused, except in
    ``StringLike`` patterns with wildcards.
    """
    for statement in policy.statements:
        for clause in statement.conditions:
            if not clause.key.startswith("kms:recipientattestation:") or clause.operator == "Null":
                continue
            for value in clause.values:
                if value.lower().startswith("0x"):
                    raise malformed_policy(
                        f"{clause.key}: value {value!r} has a 0x prefix; attestation values are "
                        "compared as plain lowercase hex"
                    )
                if "*" in value or "?" in value:
                    continue
                if len(value) not in (64, 96, 128) or not re.fullmatch(r"[0-9a-fA-F]+", value):
                    raise malformed_policy(
                        f"{clause.key}: value {value!r} is not a hex PCR digest "
                        "(96 hex characters for SHA-384)"
                    )
