"""in-toto Statement v1, SLSA Provenance v1 and SLSA VSA v1, written by hand.

The ``in-toto-attestation`` package on PyPI emits non-conformant VSA JSON
(``verifiedLevels`` as a string, integers as strings/floats), so these models
follow the specs directly:

* Statement v1: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
* Provenance v1: https://slsa.dev/spec/v1.1/build-provenance
* VSA v1: https://slsa.dev/spec/v1.1/verification_summary

Parsing follows the in-toto "monotonic principle": unknown fields are kept
(``extra="allow"``) and written back unchanged, so a foreign statement that is
parsed and re-serialised loses nothing.  ``null`` and absent are equivalent.

Where the enclave measurements go (our extension, documented here and in the
README):

* **Provenance**: one ``runDetails.byproducts`` entry named
  :data:`PCRS_BYPRODUCT_NAME` (``"pcrs"``) with media type
  :data:`PCRS_MEDIA_TYPE`; its ``digest.sha256`` is the SHA-256 of the exact
  ``nitro-cli``-style measurements text (:func:`measurements_json`), and its
  ``annotations`` map ``"PCR<n>"`` to the lowercase hex value.  The SLSA spec
  lists byproducts as the place for "useful side outputs that are not the
  subject", and measurements must *not* be custom subject digest keys
  (sigstore-python rejects those).  ``internalParameters`` is deliberately not
  used: the spec says verifiers need not check it.
* **VSA**: extension fields named by URIs under :data:`VSA_EXT_BASE`
  (docs/vsa-extensions.md; in-toto extension fields are URIs; ignoring them never
  turns FAILED into PASSED because ``verificationResult`` is always set from the
  verdict, failing closed): ``#pcrs`` (object ``"PCR<n>"`` -> hex),
  ``#sourceCommit`` (git commit hex), ``#rebuilds`` (number of independent
  rebuilds that matched), ``#verdict`` (``PASS``/``FAIL``/``INCONCLUSIVE``).
  VSAs signed with the earlier ``enclaveaudit_*`` names are still read.

Serialisation (:meth:`Statement.to_bytes`) is compact JSON with sorted keys,
UTF-8, no ``null`` members: the same model always gives the same bytes.  The
signature covers those exact bytes; verifiers parse the verified bytes and
never re-serialise before checking.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from enclave_audit.errors import BundleMalformed, EnclaveAuditError
from enclave_audit.model.digests import Digest
from enclave_audit.model.findings import Verdict
from enclave_audit.model.measurements import PcrSet, measurements_json
from enclave_runtime import strictjson

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
VSA_V1 = "https://slsa.dev/verification_summary/v1"

#: buildType of statements this project writes (resolves to docs/build-type.md in the repo).
BUILD_TYPE = "https://github.com/enclave-audit/enclave-audit/blob/main/docs/build-type.md#v1"
#: verifier.id of VSAs this project writes unless the caller names another.
DEFAULT_VERIFIER_ID = "https://github.com/enclave-audit/enclave-audit/verifier/v1"

PCRS_BYPRODUCT_NAME = "pcrs"
PCRS_MEDIA_TYPE = "application/vnd.enclave-audit.measurements+json"

#: VSA extension fields are named by URIs (in-toto/SLSA: extension field names are URIs);
#: each resolves to its definition in docs/vsa-extensions.md.
VSA_EXT_BASE = "https://github.com/enclave-audit/enclave-audit/blob/main/docs/vsa-extensions.md"
VSA_EXT_PCRS = f"{VSA_EXT_BASE}#pcrs"
VSA_EXT_SOURCE_COMMIT = f"{VSA_EXT_BASE}#sourceCommit"
VSA_EXT_REBUILDS = f"{VSA_EXT_BASE}#rebuilds"
VSA_EXT_VERDICT = f"{VSA_EXT_BASE}#verdict"
#: the names VSAs signed before the extension fields were URIs carry (read, never written)
VSA_EXT_LEGACY = {
    VSA_EXT_PCRS: "enclaveaudit_pcrs",
    VSA_EXT_SOURCE_COMMIT: "enclaveaudit_sourceCommit",
    VSA_EXT_REBUILDS: "enclaveaudit_rebuilds",
    VSA_EXT_VERDICT: "enclaveaudit_verdict",
}

_LOWER_HEX = re.compile(r"^[0-9a-f]+$")
#: digest algorithms whose values are hex (in-toto digest_set.md); others are kept verbatim.
_HEX_ALGORITHMS = frozenset(
    {
        "sha256", "sha224", "sha384", "sha512", "sha512_224", "sha512_256",
        "sha3_224", "sha3_256", "sha3_384", "sha3_512", "shake128", "shake256",
        "blake2b", "blake2s", "ripemd160", "sm3", "gost", "sha1", "md5",
        "gitCommit", "gitTree", "gitBlob", "gitTag", "dirHash",
    }
)  # fmt: skip

_FROZEN_OPEN = ConfigDict(frozen=True, extra="allow", populate_by_name=True)


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z`` (fraction only when non-zero)."""
    if value.tzinfo is None:
        raise BundleMalformed("timestamp without a time zone")
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


class _Model(BaseModel):
    model_config = _FROZEN_OPEN

    def to_json_obj(self) -> dict[str, Any]:
        """The JSON object (aliases, no nulls, unknown fields kept)."""
        dumped: dict[str, Any] = _drop_none(
            self.model_dump(mode="json", by_alias=True, exclude_none=True)
        )
        return dumped


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def canonical_json(obj: Any) -> bytes:
    """Compact, key-sorted UTF-8 JSON: stable bytes for the same document."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class ResourceDescriptor(_Model):
    """in-toto ResourceDescriptor: at least one of ``uri``, ``digest``, ``content``."""

    name: str | None = None
    uri: str | None = None
    digest: dict[str, str] | None = None
    content: str | None = None  # base64
    download_location: str | None = Field(default=None, alias="downloadLocation")
    media_type: str | None = Field(default=None, alias="mediaType")
    annotations: dict[str, Any] | None = None

    @field_validator("digest")
    @classmethod
    def _digest_hex(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        for alg, value in v.items():
            if alg in _HEX_ALGORITHMS and not _LOWER_HEX.match(value):
                raise ValueError(f"digest {alg!r} must be lowercase hex")
        return v

    @model_validator(mode="after")
    def _one_of(self) -> ResourceDescriptor:
        if not (self.uri or self.digest or self.content):
            raise ValueError("a ResourceDescriptor needs at least one of uri, digest, content")
        return self

    @classmethod
    def for_digest(cls, name: str, digest: Digest, **extra: Any) -> ResourceDescriptor:
        return cls(name=name, digest={str(digest.algorithm): digest.hex}, **extra)

    def matches(self, digest: Digest) -> bool:
        """True when this descriptor carries ``digest`` under the same algorithm."""
        return bool(self.digest) and (self.digest or {}).get(str(digest.algorithm)) == digest.hex


class Statement(_Model):
    """in-toto Statement v1 with an untyped predicate (see :meth:`predicate_as`)."""

    type_: str = Field(default=STATEMENT_TYPE, alias="_type")
    subject: list[ResourceDescriptor]
    predicate_type: str = Field(alias="predicateType")
    predicate: dict[str, Any] | None = None

    @field_validator("type_")
    @classmethod
    def _type(cls, v: str) -> str:
        if v != STATEMENT_TYPE:
            raise ValueError(f"_type must be {STATEMENT_TYPE}, got {v!r}")
        return v

    @field_validator("subject")
    @classmethod
    def _subjects(cls, v: list[ResourceDescriptor]) -> list[ResourceDescriptor]:
        if not v:
            raise ValueError("subject must not be empty")
        for item in v:
            if not item.digest:
                raise ValueError("every subject needs a digest")
        return v

    def to_bytes(self) -> bytes:
        """The exact payload bytes to sign."""
        return canonical_json(self.to_json_obj())

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "statement") -> Statement:
        """Parse payload bytes strictly (a duplicated ``subject`` or ``predicate`` would let
        two readers see two statements); one-line :class:`BundleMalformed` on any problem."""
        obj = strictjson.loads(data, what=source, error=BundleMalformed)
        return cls.from_obj(obj, source=source)

    @classmethod
    def from_obj(cls, obj: object, *, source: str = "statement") -> Statement:
        if not isinstance(obj, dict):
            raise BundleMalformed(f"{source}: expected a JSON object")
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise BundleMalformed(f"{source}: {_first_error(exc)}") from None

    def subject_matching(self, digest: Digest) -> ResourceDescriptor | None:
        for item in self.subject:
            if item.matches(digest):
                return item
        return None

    def predicate_as(self, model: type[P]) -> P:
        """Parse the predicate as ``model`` (after checking ``predicateType``)."""
        if self.predicate_type != model.PREDICATE_TYPE:
            raise BundleMalformed(
                f"predicateType is {self.predicate_type!r}, expected {model.PREDICATE_TYPE!r}"
            )
        try:
            return model.model_validate(self.predicate or {})
        except ValidationError as exc:
            raise BundleMalformed(f"predicate: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "document"
    return f"{where}: {err.get('msg', 'invalid')}"


class _Predicate(_Model):
    PREDICATE_TYPE: ClassVar[str]


P = TypeVar("P", bound=_Predicate)


# --- SLSA Provenance v1 -------------------------------------------------------------


class BuildDefinition(_Model):
    build_type: str = Field(alias="buildType")
    # required by SLSA, but in-toto says unset equals empty: a missing object reads as {}
    external_parameters: dict[str, Any] = Field(default_factory=dict, alias="externalParameters")
    internal_parameters: dict[str, Any] | None = Field(default=None, alias="internalParameters")
    resolved_dependencies: list[ResourceDescriptor] | None = Field(
        default=None, alias="resolvedDependencies"
    )


class Builder(_Model):
    id: str
    version: dict[str, str] | None = None
    builder_dependencies: list[ResourceDescriptor] | None = Field(
        default=None, alias="builderDependencies"
    )


class BuildMetadata(_Model):
    invocation_id: str | None = Field(default=None, alias="invocationId")
    started_on: datetime | None = Field(default=None, alias="startedOn")
    finished_on: datetime | None = Field(default=None, alias="finishedOn")

    @field_serializer("started_on", "finished_on")
    def _ts(self, v: datetime | None) -> str | None:
        return None if v is None else format_timestamp(v)


class RunDetails(_Model):
    builder: Builder
    metadata: BuildMetadata | None = None
    byproducts: list[ResourceDescriptor] | None = None


class ProvenancePredicate(_Predicate):
    PREDICATE_TYPE: ClassVar[str] = PROVENANCE_V1

    build_definition: BuildDefinition = Field(alias="buildDefinition")
    run_details: RunDetails = Field(alias="runDetails")

    def pcrs(self) -> PcrSet | None:
        """The enclave measurements from the ``pcrs`` byproduct, checked against its digest."""
        for item in self.run_details.byproducts or ():
            if item.name == PCRS_BYPRODUCT_NAME:
                return _pcrs_from_descriptor(item)
        return None


def pcrs_descriptor(pcrs: PcrSet) -> ResourceDescriptor:
    """The ``pcrs`` byproduct: digest of the measurements text plus the values as annotations."""
    text = measurements_json(pcrs).encode()
    return ResourceDescriptor(
        name=PCRS_BYPRODUCT_NAME,
        digest={"sha256": hashlib.sha256(text).hexdigest()},
        mediaType=PCRS_MEDIA_TYPE,
        annotations={f"PCR{i}": pcrs.hex(i) for i in pcrs.indices()},
    )


def _pcrs_from_annotations(values: object, *, where: str) -> PcrSet:
    if not isinstance(values, Mapping) or not values:
        raise BundleMalformed(f"{where}: expected an object of PCR<n> to hex")
    parsed: dict[int, str] = {}
    for key, value in values.items():
        if not (isinstance(key, str) and key.startswith("PCR") and isinstance(value, str)):
            raise BundleMalformed(f"{where}: unexpected entry {key!r}")
        try:
            parsed[int(key[3:])] = value
        except ValueError:
            raise BundleMalformed(f"{where}: bad PCR key {key!r}") from None
    try:
        return PcrSet(values=parsed)
    except EnclaveAuditError as exc:  # InvalidInput from the PcrSet validator
        raise BundleMalformed(f"{where}: {exc.message}") from None


def _pcrs_from_descriptor(item: ResourceDescriptor) -> PcrSet:
    pcrs = _pcrs_from_annotations(item.annotations, where="byproduct 'pcrs' annotations")
    expected = hashlib.sha256(measurements_json(pcrs).encode()).hexdigest()
    if (item.digest or {}).get("sha256") != expected:
        raise BundleMalformed("byproduct 'pcrs': digest does not match its annotations")
    return pcrs


# --- SLSA Verification Summary v1 ---------------------------------------------------


class VerificationResult(StrEnum):
    PASSED = "PASSED"
    FAILED = "FAILED"


class VerifierInfo(_Model):
    id: str
    version: dict[str, str] | None = None


class VsaPredicate(_Predicate):
    """VSA v1 plus the ``enclaveaudit_*`` extension fields (see module docstring)."""

    PREDICATE_TYPE: ClassVar[str] = VSA_V1

    verifier: VerifierInfo
    time_verified: datetime | None = Field(default=None, alias="timeVerified")
    resource_uri: str = Field(alias="resourceUri")
    policy: ResourceDescriptor
    input_attestations: list[ResourceDescriptor] | None = Field(
        default=None, alias="inputAttestations"
    )
    verification_result: VerificationResult = Field(alias="verificationResult")
    verified_levels: list[str] = Field(alias="verifiedLevels")
    dependency_levels: dict[str, int] | None = Field(default=None, alias="dependencyLevels")
    slsa_version: str | None = Field(default=None, alias="slsaVersion")

    # extension fields
    pcrs_ext: dict[str, str] | None = Field(
        default=None,
        alias=VSA_EXT_PCRS,
        validation_alias=AliasChoices(VSA_EXT_PCRS, VSA_EXT_LEGACY[VSA_EXT_PCRS], "pcrs_ext"),
    )
    source_commit: str | None = Field(
        default=None,
        alias=VSA_EXT_SOURCE_COMMIT,
        validation_alias=AliasChoices(
            VSA_EXT_SOURCE_COMMIT, VSA_EXT_LEGACY[VSA_EXT_SOURCE_COMMIT], "source_commit"
        ),
    )
    rebuilds: int | None = Field(
        default=None,
        alias=VSA_EXT_REBUILDS,
        ge=0,
        validation_alias=AliasChoices(
            VSA_EXT_REBUILDS, VSA_EXT_LEGACY[VSA_EXT_REBUILDS], "rebuilds"
        ),
    )
    verdict: Verdict | None = Field(
        default=None,
        alias=VSA_EXT_VERDICT,
        validation_alias=AliasChoices(VSA_EXT_VERDICT, VSA_EXT_LEGACY[VSA_EXT_VERDICT], "verdict"),
    )

    @field_serializer("time_verified")
    def _ts(self, v: datetime | None) -> str | None:
        return None if v is None else format_timestamp(v)

    @model_validator(mode="after")
    def _consistent(self) -> VsaPredicate:
        if self.policy.uri is None:
            raise ValueError("policy.uri is required")
        if (
            self.verdict is not None
            and self.verdict is not Verdict.PASS
            and self.verification_result is VerificationResult.PASSED
        ):
            raise ValueError(f"verificationResult PASSED with verdict {self.verdict}")
        return self

    def pcrs(self) -> PcrSet | None:
        if self.pcrs_ext is None:
            return None
        return _pcrs_from_annotations(self.pcrs_ext, where=VSA_EXT_PCRS)


# --- builders ------------------------------------------------------------------------


def provenance_statement(
    *,
    subjects: Sequence[ResourceDescriptor],
    builder_id: str,
    external_parameters: Mapping[str, Any],
    build_type: str = BUILD_TYPE,
    internal_parameters: Mapping[str, Any] | None = None,
    resolved_dependencies: Sequence[ResourceDescriptor] = (),
    builder_version: Mapping[str, str] | None = None,
    invocation_id: str | None = None,
    started_on: datetime | None = None,
    finished_on: datetime | None = None,
    pcrs: PcrSet | None = None,
    byproducts: Sequence[ResourceDescriptor] = (),
) -> Statement:
    """An unsigned SLSA Provenance v1 statement; ``pcrs`` becomes the ``pcrs`` byproduct."""
    extra = list(byproducts)
    if pcrs is not None:
        extra.append(pcrs_descriptor(pcrs))
    predicate = ProvenancePredicate(
        buildDefinition=BuildDefinition(
            buildType=build_type,
            externalParameters=dict(external_parameters),
            internalParameters=dict(internal_parameters) if internal_parameters else None,
            resolvedDependencies=list(resolved_dependencies) or None,
        ),
        runDetails=RunDetails(
            builder=Builder(id=builder_id, version=dict(builder_version or {}) or None),
            metadata=BuildMetadata(
                invocationId=invocation_id, startedOn=started_on, finishedOn=finished_on
            ),
            byproducts=extra or None,
        ),
    )
    return _statement(subjects, predicate)


def vsa_statement(
    *,
    subjects: Sequence[ResourceDescriptor],
    resource_uri: str,
    policy_uri: str,
    policy_digest: Digest | None,
    verdict: Verdict,
    verifier_id: str = DEFAULT_VERIFIER_ID,
    verifier_version: Mapping[str, str] | None = None,
    time_verified: datetime | None = None,
    input_attestations: Sequence[ResourceDescriptor] = (),
    verified_levels: Sequence[str] = (),
    dependency_levels: Mapping[str, int] | None = None,
    slsa_version: str = "1.1",
    pcrs: PcrSet | None = None,
    source_commit: str | None = None,
    rebuilds: int | None = None,
) -> Statement:
    """An unsigned VSA v1 statement.

    ``verificationResult`` is PASSED only for :attr:`Verdict.PASS`; FAIL and
    INCONCLUSIVE are FAILED (fail closed), with the verdict kept in
    ``enclaveaudit_verdict``.  ``verifiedLevels`` defaults to
    ``["FAILED"]`` on failure and ``["SLSA_BUILD_LEVEL_UNEVALUATED"]`` on pass.
    """
    passed = verdict is Verdict.PASS
    levels = list(verified_levels) or (["SLSA_BUILD_LEVEL_UNEVALUATED"] if passed else ["FAILED"])
    if source_commit is not None and not _LOWER_HEX.match(source_commit):
        raise BundleMalformed(f"source commit {source_commit[:45]!r} is not lowercase hex")
    policy = ResourceDescriptor(
        uri=policy_uri,
        digest={str(policy_digest.algorithm): policy_digest.hex} if policy_digest else None,
    )
    predicate = VsaPredicate.model_validate(
        {
            "verifier": VerifierInfo(id=verifier_id, version=dict(verifier_version or {}) or None),
            "timeVerified": time_verified,
            "resourceUri": resource_uri,
            "policy": policy,
            "inputAttestations": list(input_attestations) or None,
            "verificationResult": VerificationResult.PASSED
            if passed
            else VerificationResult.FAILED,
            "verifiedLevels": levels,
            "dependencyLevels": dict(dependency_levels) if dependency_levels is not None else None,
            "slsaVersion": slsa_version,
            VSA_EXT_PCRS: {f"PCR{i}": pcrs.hex(i) for i in pcrs.indices()} if pcrs else None,
            VSA_EXT_SOURCE_COMMIT: source_commit,
            VSA_EXT_REBUILDS: rebuilds,
            VSA_EXT_VERDICT: verdict,
        }
    )
    return _statement(subjects, predicate)


def _statement(subjects: Sequence[ResourceDescriptor], predicate: _Predicate) -> Statement:
    if not subjects:
        raise BundleMalformed("a statement needs at least one subject")
    return Statement(
        subject=list(subjects),
        predicateType=predicate.PREDICATE_TYPE,
        predicate=predicate.to_json_obj(),
    )
