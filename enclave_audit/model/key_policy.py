"""AWS KMS key policies, typed: the one model of the gate, the reference KMS and the demo.

:meth:`KeyPolicy.parse` checks a document against the key-policy grammar (what AWS
answers with ``MalformedPolicyDocumentException``) and keeps every statement's JSON
exactly as written, so a policy that is read, edited and written back changes only
the statements the editor replaced.  Statements built here (:func:`attested_allow`,
:func:`deny_other_images`, :func:`allow`) serialise to AWS's usual shape.

The grammar:

* top level: ``Version`` (``2012-10-17`` or ``2008-10-17``, optional), ``Id``,
  ``Statement`` (one object or a non-empty list); nothing else; at most 32 KiB;
* a statement: ``Sid`` (letters, digits, spaces, ``./-_``; unique), ``Effect``
  (Allow/Deny), exactly one of ``Principal``/``NotPrincipal``, of ``Action``/
  ``NotAction`` (``kms:<Name>`` or ``*``, wildcards allowed) and of ``Resource``/
  ``NotResource`` (``*`` or a KMS key ARN), and an optional ``Condition``;
* a condition: ``[ForAnyValue:|ForAllValues:]<Operator>[IfExists]`` (or ``Null``) from
  AWS's string, numeric, date, boolean, binary, IP address and ARN families, mapping
  condition keys to one value or a non-empty list; ``Null``/``Bool`` take true or
  false, date operators ISO 8601 dates or epoch seconds.

Attestation conditions (``kms:RecipientAttestation:ImageSha384`` and ``...:PCR0`` to
``PCR31``) must be able to match a Nitro document: other key names, values with a
``0x`` prefix and values that are not 96 hex characters (SHA-384) are refused;
``*``/``?`` patterns only under ``StringLike``/``StringNotLike``.

What a particular consumer does not implement (the reference KMS evaluates only some
operator families and principal types) it refuses itself, on this model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from enclave_audit.errors import EnclaveAuditError, InvalidInput
from enclave_audit.model.measurements import PcrSet
from enclave_runtime import strictjson

VERSIONS: Final = ("2012-10-17", "2008-10-17")
DEFAULT_VERSION: Final = "2012-10-17"
MAX_POLICY_BYTES: Final = 32 * 1024
ATTESTATION_PREFIX: Final = "kms:RecipientAttestation:"
IMAGE_KEY: Final = f"{ATTESTATION_PREFIX}ImageSha384"
PRINCIPAL_KINDS: Final = ("AWS", "Service", "Federated", "CanonicalUser")
QUALIFIERS: Final = ("ForAnyValue", "ForAllValues")
STRING_OPERATORS: Final = (
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
)
DATE_OPERATORS: Final = (
    "DateEquals",
    "DateNotEquals",
    "DateLessThan",
    "DateLessThanEquals",
    "DateGreaterThan",
    "DateGreaterThanEquals",
)
NUMERIC_OPERATORS: Final = (
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
)
OTHER_OPERATORS: Final = (
    "Bool",
    "BinaryEquals",
    "IpAddress",
    "NotIpAddress",
    "ArnEquals",
    "ArnNotEquals",
    "ArnLike",
    "ArnNotLike",
)
OPERATORS: Final = STRING_OPERATORS + DATE_OPERATORS + NUMERIC_OPERATORS + OTHER_OPERATORS

_STATEMENT_KEYS: Final = (
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
)
_SID_RE = re.compile(r"^[\w ./-]*$")
_ACTION_RE = re.compile(r"^(?:\*|kms:[A-Za-z*?]+)$", re.IGNORECASE)
_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9:_./*?-]+$")
_ATTESTATION_KEY_RE = re.compile(
    r"^kms:RecipientAttestation:(ImageSha384|PCR([0-9]|[12][0-9]|3[01]))$", re.IGNORECASE
)
_HEX96_RE = re.compile(r"^[0-9a-fA-F]{96}$")


def pcr_key(index: int) -> str:
    """``kms:RecipientAttestation:PCR<index>`` (PCR0 is also ``...:ImageSha384``)."""
    return f"{ATTESTATION_PREFIX}PCR{index}"


def attestation_index(key: str) -> int | None:
    """The PCR an attestation condition key names (ImageSha384 is PCR0), else None."""
    match = _ATTESTATION_KEY_RE.match(key)
    if match is None:
        return None
    return 0 if match.group(1).lower() == "imagesha384" else int(match.group(2))


def parse_date(text: str) -> float | None:
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


def iso_time(when: datetime) -> str:
    """``aws:CurrentTime`` form: UTC, seconds, ``Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Effect(StrEnum):
    ALLOW = "Allow"
    DENY = "Deny"


@dataclass(frozen=True)
class Principal:
    """One principal entry: ``kind`` is ``*`` (everyone) or AWS/Service/Federated/CanonicalUser."""

    kind: str
    value: str


ANYONE: Final = Principal("*", "*")


@dataclass(frozen=True)
class Condition:
    """One ``operator: {key: values}`` entry; ``listed`` says the values were a JSON list."""

    operator: str  # as written, e.g. "ForAnyValue:StringLikeIfExists"
    key: str  # as written
    values: tuple[str, ...]
    listed: bool = False

    @property
    def qualifier(self) -> str | None:
        return self.operator.split(":", 1)[0] if ":" in self.operator else None

    @property
    def if_exists(self) -> bool:
        return self.operator.endswith("IfExists")

    @property
    def base(self) -> str:
        """The operator without qualifier and ``IfExists``: ``StringLike``."""
        name = self.operator.split(":", 1)[-1]
        return name[: -len("IfExists")] if self.if_exists else name


@dataclass(frozen=True)
class Statement:
    """A statement; ``document`` is its JSON as written (None for a statement built here)."""

    effect: Effect
    principals: tuple[Principal, ...]
    actions: tuple[str, ...]
    resources: tuple[str, ...] = ("*",)
    conditions: tuple[Condition, ...] = ()
    sid: str | None = None
    not_principal: bool = False
    not_action: bool = False
    not_resource: bool = False
    document: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def to_document(self) -> dict[str, Any]:
        """The statement's JSON: as written when parsed, AWS's usual shape when built."""
        if self.document is not None:
            copy: dict[str, Any] = json.loads(json.dumps(self.document))
            return copy
        out: dict[str, Any] = {}
        if self.sid is not None:
            out["Sid"] = self.sid
        out["Effect"] = str(self.effect)
        out["NotPrincipal" if self.not_principal else "Principal"] = _principal_json(
            self.principals
        )
        out["NotAction" if self.not_action else "Action"] = _one_or_list(self.actions)
        out["NotResource" if self.not_resource else "Resource"] = _one_or_list(self.resources)
        if self.conditions:
            block: dict[str, dict[str, Any]] = {}
            for condition in self.conditions:
                values: Any = (
                    list(condition.values)
                    if condition.listed or len(condition.values) != 1
                    else condition.values[0]
                )
                block.setdefault(condition.operator, {})[condition.key] = values
            out["Condition"] = block
        return out


@dataclass(frozen=True)
class KeyPolicy:
    """A key policy document: version, id and statements in order."""

    statements: tuple[Statement, ...]
    version: str | None = DEFAULT_VERSION
    id: str | None = None

    @classmethod
    def parse(
        cls,
        text: str | bytes,
        *,
        source: str = "key policy",
        error: type[EnclaveAuditError] = InvalidInput,
    ) -> KeyPolicy:
        """Parse and check a policy document; every problem is one ``error`` naming it."""
        raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
        if not raw.strip():
            raise error(f"{source}: the policy document is empty")
        if len(raw) > MAX_POLICY_BYTES:
            raise error(f"{source}: the policy is larger than {MAX_POLICY_BYTES} bytes")
        # strict: duplicate keys (which statement would AWS read?), NaN, lone surrogates...
        document = strictjson.loads(raw, what=source, error=error)
        return cls.from_document(document, source=source, error=error)

    @classmethod
    def from_document(
        cls,
        document: object,
        *,
        source: str = "key policy",
        error: type[EnclaveAuditError] = InvalidInput,
    ) -> KeyPolicy:
        """Check a decoded JSON document (see the module's grammar)."""
        return _Parser(source, error).policy(document)

    def to_document(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.version is not None:
            out["Version"] = self.version
        if self.id is not None:
            out["Id"] = self.id
        out["Statement"] = [s.to_document() for s in self.statements]
        return out

    def to_json(self) -> str:
        """Pretty JSON with a final newline (what the gate writes and diffs)."""
        return json.dumps(self.to_document(), indent=2) + "\n"

    def with_statements(self, statements: Iterable[Statement]) -> KeyPolicy:
        return replace(self, statements=tuple(statements), version=self.version or DEFAULT_VERSION)


# --- statements built here -------------------------------------------------------------


def allow(
    principal: str,
    actions: Sequence[str],
    *,
    sid: str | None = None,
    conditions: Sequence[Condition] = (),
) -> Statement:
    """Allow ``actions`` to the AWS principal ``principal`` (an ARN or account) on this key."""
    return Statement(
        Effect.ALLOW,
        (Principal("AWS", principal),),
        tuple(actions),
        conditions=tuple(conditions),
        sid=sid,
    )


def attestation_conditions(
    pcrs: PcrSet, indices: Sequence[int], *, until: datetime | None = None
) -> tuple[Condition, ...]:
    """``StringEqualsIgnoreCase`` on ImageSha384 (PCR0) and PCR<n> for ``indices``, [until]."""
    conditions = [Condition("StringEqualsIgnoreCase", IMAGE_KEY, (pcrs.hex(0),))]
    for index in indices:
        if index == 0:
            continue
        if pcrs.get(index) is None:
            raise InvalidInput(f"measurements lack PCR{index}, which the key policy pins")
        conditions.append(Condition("StringEqualsIgnoreCase", pcr_key(index), (pcrs.hex(index),)))
    if until is not None:
        conditions.append(Condition("DateLessThan", "aws:CurrentTime", (iso_time(until),)))
    return tuple(conditions)


def attested_allow(
    principal: str,
    actions: Sequence[str],
    pcrs: PcrSet,
    indices: Sequence[int],
    *,
    sid: str | None = None,
    until: datetime | None = None,
) -> Statement:
    """Allow ``actions`` only to an enclave attesting these PCRs (optionally until a time)."""
    return allow(
        principal, actions, sid=sid, conditions=attestation_conditions(pcrs, indices, until=until)
    )


def deny_other_images(
    image_pcr0s: Sequence[str], actions: Sequence[str], *, sid: str | None = None
) -> Statement:
    """Deny ``actions`` to everyone whose attested PCR0 is none of ``image_pcr0s``.

    ``StringNotEqualsIgnoreCase`` on ImageSha384 also holds when the request carries
    no attestation at all, so unattested requests are refused too.
    """
    return Statement(
        Effect.DENY,
        (Principal("AWS", "*"),),
        tuple(actions),
        conditions=(
            Condition("StringNotEqualsIgnoreCase", IMAGE_KEY, tuple(image_pcr0s), listed=True),
        ),
        sid=sid,
    )


# --- allowed measurement sets ------------------------------------------------------------


@dataclass(frozen=True)
class AllowedImage:
    """One measurement set a statement lets receive the key, optionally until a time."""

    pcrs: PcrSet
    until: datetime | None = None

    @property
    def pcr0(self) -> str:
        return self.pcrs.hex(0)


def allowed_image(statement: Statement) -> AllowedImage | None:
    """The measurement set an Allow statement pins (single-valued StringEqualsIgnoreCase)."""
    if statement.effect is not Effect.ALLOW:
        return None
    pcrs: dict[int, str] = {}
    until: datetime | None = None
    for condition in statement.conditions:
        if condition.operator == "StringEqualsIgnoreCase" and len(condition.values) == 1:
            index = attestation_index(condition.key)
            if index is not None:
                pcrs[index] = condition.values[0].lower()
        elif (
            condition.operator == "DateLessThan"
            and condition.key.lower() == "aws:currenttime"
            and len(condition.values) == 1
        ):
            moment = parse_date(condition.values[0])
            if moment is not None:
                until = datetime.fromtimestamp(moment, UTC)
    if 0 not in pcrs:
        return None
    return AllowedImage(PcrSet(values=pcrs), until)


# --- parsing ----------------------------------------------------------------------------


def _one_or_list(values: tuple[str, ...]) -> Any:
    return values[0] if len(values) == 1 else list(values)


def _principal_json(principals: tuple[Principal, ...]) -> Any:
    if principals == (ANYONE,):
        return "*"
    grouped: dict[str, list[str]] = {}
    for principal in principals:
        grouped.setdefault(principal.kind, []).append(principal.value)
    return {kind: values[0] if len(values) == 1 else values for kind, values in grouped.items()}


class _Parser:
    def __init__(self, source: str, error: type[EnclaveAuditError]) -> None:
        self.source = source
        self.error = error

    def fail(self, problem: str) -> EnclaveAuditError:
        return self.error(f"{self.source}: {problem}")

    def policy(self, document: object) -> KeyPolicy:
        if not isinstance(document, dict):
            raise self.fail("the policy must be a JSON object")
        unknown = set(document) - {"Version", "Id", "Statement"}
        if unknown:
            raise self.fail(f"unknown top-level element(s): {', '.join(sorted(map(str, unknown)))}")
        version = document.get("Version")
        if version is not None and version not in VERSIONS:
            raise self.fail(f"Version must be one of {', '.join(VERSIONS)}")
        policy_id = document.get("Id")
        if policy_id is not None and not isinstance(policy_id, str):
            raise self.fail("Id must be a string")
        raw = document.get("Statement")
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise self.fail("'Statement' must be a non-empty list of statements")
        statements = tuple(self.statement(s, i) for i, s in enumerate(raw))
        sids = [s.sid for s in statements if s.sid]
        duplicate = next((sid for sid in sids if sids.count(sid) > 1), None)
        if duplicate is not None:
            raise self.fail(f"statement ids (Sid) must be unique: {duplicate!r} repeats")
        return KeyPolicy(statements, version, policy_id)

    def statement(self, raw: object, index: int) -> Statement:
        where = f"statement {index}"
        if not isinstance(raw, dict):
            raise self.fail(f"{where} is not an object")
        unknown = set(raw) - set(_STATEMENT_KEYS)
        if unknown:
            raise self.fail(f"{where}: unknown element(s) {', '.join(sorted(map(str, unknown)))}")
        sid = raw.get("Sid")
        if sid is not None and (not isinstance(sid, str) or not _SID_RE.match(sid)):
            raise self.fail(f"{where}: Sid must be a string of letters, digits and spaces")
        if sid:
            where = f"statement {sid!r}"
        effect = raw.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise self.fail(f'{where}: Effect must be "Allow" or "Deny"')
        if ("Principal" in raw) == ("NotPrincipal" in raw):
            raise self.fail(
                f"{where}: exactly one of Principal or NotPrincipal is required"
                " (policy contains a statement with no principal)"
            )
        not_principal = "NotPrincipal" in raw
        principals = self.principals(raw["NotPrincipal" if not_principal else "Principal"], where)
        if ("Action" in raw) == ("NotAction" in raw):
            raise self.fail(f"{where}: exactly one of Action or NotAction is required")
        not_action = "NotAction" in raw
        actions = self.strings(raw["NotAction" if not_action else "Action"], f"{where}: Action")
        for action in actions:
            if not _ACTION_RE.match(action):
                raise self.fail(
                    f"{where}: action {action!r} is not a KMS action"
                    " (kms:<Name>, wildcards allowed)"
                )
        if ("Resource" in raw) == ("NotResource" in raw):
            raise self.fail(f"{where}: exactly one of Resource or NotResource is required")
        not_resource = "NotResource" in raw
        resources = self.strings(
            raw["NotResource" if not_resource else "Resource"], f"{where}: Resource"
        )
        for resource in resources:
            if resource != "*" and not resource.startswith("arn:aws:kms:"):
                raise self.fail(f'{where}: resource {resource!r} must be "*" or a KMS key ARN')
        conditions = self.conditions(raw["Condition"], where) if "Condition" in raw else ()
        return Statement(
            effect=Effect(effect),
            principals=principals,
            actions=actions,
            resources=resources,
            conditions=conditions,
            sid=sid or None,
            not_principal=not_principal,
            not_action=not_action,
            not_resource=not_resource,
            document=raw,
        )

    def strings(self, value: object, where: str) -> tuple[str, ...]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(f"{where} must not be empty")
        out: list[str] = []
        for item in items:
            if not isinstance(item, str) or not item:
                raise self.fail(f"{where} must be a non-empty string or a list of them")
            out.append(item)
        return tuple(out)

    def principals(self, value: object, where: str) -> tuple[Principal, ...]:
        if value == "*":
            return (ANYONE,)
        if not isinstance(value, dict) or not value:
            raise self.fail(f'{where}: Principal must be "*" or an object like {{"AWS": ...}}')
        out: list[Principal] = []
        for kind, entries in value.items():
            if kind not in PRINCIPAL_KINDS:
                raise self.fail(
                    f"{where}: unknown principal type {kind!r} ({', '.join(PRINCIPAL_KINDS)})"
                )
            out.extend(Principal(kind, v) for v in self.strings(entries, f"{where}: {kind}"))
        return tuple(out)

    def conditions(self, value: object, where: str) -> tuple[Condition, ...]:
        if not isinstance(value, dict) or not value:
            raise self.fail(f"{where}: Condition must be a non-empty object")
        out: list[Condition] = []
        for operator, block in value.items():
            probe = Condition(str(operator), "", ())
            if probe.qualifier is not None and probe.qualifier not in QUALIFIERS:
                raise self.fail(
                    f"{where}: unknown set qualifier {probe.qualifier!r} in {operator!r}"
                )
            if probe.base == "Null":
                if probe.if_exists or probe.qualifier:
                    raise self.fail(f"{where}: {operator!r} is not a valid operator")
            elif probe.base not in OPERATORS:
                raise self.fail(f"{where}: unknown condition operator {operator!r}")
            if not isinstance(block, dict) or not block:
                raise self.fail(f"{where}: {operator} must map condition keys to values")
            for key, raw_values in block.items():
                if not isinstance(key, str) or not _KEY_NAME_RE.match(key):
                    raise self.fail(f"{where}: {operator}: invalid condition key {key!r}")
                condition = Condition(
                    operator,
                    key,
                    self.values(raw_values, f"{where}: {operator}.{key}"),
                    listed=isinstance(raw_values, list),
                )
                self.check_values(condition, where)
                out.append(condition)
        return tuple(out)

    def values(self, value: object, where: str) -> tuple[str, ...]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(f"{where} has no values")
        out: list[str] = []
        for item in items:
            if isinstance(item, bool):
                out.append("true" if item else "false")
            elif isinstance(item, str | int | float):
                out.append(str(item))
            else:
                raise self.fail(f"{where} values must be strings, numbers or booleans")
        return tuple(out)

    def check_values(self, condition: Condition, where: str) -> None:
        here = f"{where}: {condition.operator}.{condition.key}"
        base = condition.base
        if base in ("Null", "Bool"):
            if any(v.lower() not in ("true", "false") for v in condition.values):
                raise self.fail(f"{here} takes true or false")
        if base in DATE_OPERATORS:
            for value in condition.values:
                if parse_date(value) is None:
                    raise self.fail(f"{here}: {value!r} is not an ISO 8601 date or epoch seconds")
        if not condition.key.lower().startswith(ATTESTATION_PREFIX.lower()):
            return
        if attestation_index(condition.key) is None:
            raise self.fail(
                f"{where}: unknown condition key {condition.key[:60]!r}"
                " (kms:RecipientAttestation:ImageSha384 or PCR0..PCR31)"
            )
        if base == "Null":
            return
        for value in condition.values:
            if value.lower().startswith("0x"):
                raise self.fail(
                    f"{here}: value {value[:20]!r} has a 0x prefix; attestation values are"
                    " compared as plain hex"
                )
            if base in ("StringLike", "StringNotLike") and ("*" in value or "?" in value):
                continue
            if not _HEX96_RE.match(value):
                raise self.fail(
                    f"{here}: value {value[:20]!r} is not a hex PCR digest"
                    " (96 hex characters for SHA-384)"
                )
