"""Configuration of the reference KMS: account, region, callers, attestation trust.

A config file is TOML or JSON (chosen by suffix)::

    account_id = "111122223333"
    region = "us-east-1"
    max_document_age_seconds = 300     # optional; stricter than AWS, which has none
    trust_aws_root = true              # the pinned AWS Nitro Enclaves Root-G1
    allow_debug = false                # accept all-zero (debug-mode) PCRs
    roots = ["sim-ca/root.pem"]        # further roots, relative to the config file

    [[credentials]]
    access_key_id = "AKIAENCLAVEAUDIT0001"
    secret_access_key = "..."
    principal = "arn:aws:sts::111122223333:assumed-role/enclave/i-0123"

Each credential maps an access key to the principal ARN that key policies see.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from enclave_audit.errors import InvalidInput
from enclave_audit.fsutil import read_bytes
from enclave_runtime import strictjson

ACCOUNT_RE = re.compile(r"^\d{12}$")
#: principals a credential may stand for: IAM users and roles, STS assumed-role sessions, root.
PRINCIPAL_RE = re.compile(
    r"^arn:aws:(?:iam::(\d{12}):(?:root|user/[\w+=,.@/-]+|role/[\w+=,.@/-]+)"
    r"|sts::(\d{12}):assumed-role/[\w+=,.@-]+/[\w+=,.@-]+)$"
)
REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d$")
ACCESS_KEY_RE = re.compile(r"^[A-Z0-9]{16,128}$")

DEFAULT_CLOCK_SKEW_SECONDS = 300.0


def principal_account(arn: str) -> str:
    """The 12-digit account of a principal ARN (already validated)."""
    match = PRINCIPAL_RE.match(arn)
    if match is None:
        raise InvalidInput(f"principal {arn!r} is not an IAM/STS principal ARN")
    return match.group(1) or match.group(2)


class Credential(BaseModel):
    """One access key the KMS accepts and the principal it authenticates."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    access_key_id: str
    secret_access_key: str = Field(min_length=16, repr=False)
    principal: str
    session_token: str | None = Field(default=None, repr=False)

    @field_validator("access_key_id")
    @classmethod
    def _key_id(cls, v: str) -> str:
        if not ACCESS_KEY_RE.match(v):
            raise ValueError("access_key_id must be 16-128 upper-case letters and digits")
        return v

    @field_validator("principal")
    @classmethod
    def _principal(cls, v: str) -> str:
        if not PRINCIPAL_RE.match(v):
            raise ValueError(
                "principal must be arn:aws:iam::<account>:root|user/..|role/.. "
                "or arn:aws:sts::<account>:assumed-role/<role>/<session>"
            )
        return v

    @property
    def account(self) -> str:
        return principal_account(self.principal)


class KmsConfig(BaseModel):
    """Everything the KMS needs besides its database."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account_id: str = "111122223333"
    region: str = "us-east-1"
    credentials: tuple[Credential, ...] = ()
    #: trust the pinned AWS Nitro Enclaves Root-G1 (as AWS KMS does).
    trust_aws_root: bool = True
    #: PEM files of further attestation roots (e.g. the simulated NSM's CA).
    roots: tuple[Path, ...] = ()
    max_document_age_seconds: float | None = Field(default=None, gt=0)
    allow_debug: bool = False
    clock_skew_seconds: float = Field(default=DEFAULT_CLOCK_SKEW_SECONDS, gt=0, le=3600)

    @field_validator("account_id")
    @classmethod
    def _account(cls, v: str) -> str:
        if not ACCOUNT_RE.match(v):
            raise ValueError("account_id must be 12 digits")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not REGION_RE.match(v):
            raise ValueError("region must look like us-east-1")
        return v

    @field_validator("credentials")
    @classmethod
    def _unique(cls, v: tuple[Credential, ...]) -> tuple[Credential, ...]:
        ids = [c.access_key_id for c in v]
        if len(ids) != len(set(ids)):
            raise ValueError("access_key_id values must be unique")
        return v

    def credential(self, access_key_id: str) -> Credential | None:
        for cred in self.credentials:
            if cred.access_key_id == access_key_id:
                return cred
        return None

    def with_overrides(
        self,
        *,
        roots: Sequence[Path] = (),
        max_document_age_seconds: float | None = None,
        allow_debug: bool | None = None,
    ) -> KmsConfig:
        update: dict[str, object] = {}
        if roots:
            update["roots"] = (*self.roots, *roots)
        if max_document_age_seconds is not None:
            update["max_document_age_seconds"] = max_document_age_seconds
        if allow_debug is not None:
            update["allow_debug"] = allow_debug
        return self.model_copy(update=update)


def load_config(path: Path) -> KmsConfig:
    """Read a TOML or JSON KMS config; root paths are resolved against its directory."""
    raw = read_bytes(path, limit=1 << 20)
    if path.suffix.lower() == ".json":
        data = strictjson.loads(raw, what=str(path), error=InvalidInput)
    else:
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"{path}: not valid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: expected a table/object at the top level")
    roots = data.get("roots", [])
    if isinstance(roots, list):
        data["roots"] = [
            str((path.parent / r).resolve()) if isinstance(r, str) else r for r in roots
        ]
    try:
        return KmsConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{path}: {where}: {first['msg']}") from None
