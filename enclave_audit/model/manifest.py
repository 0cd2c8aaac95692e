"""The build manifest: everything an independent rebuild of an enclave image needs.

Written by :mod:`builder.pipeline` as ``build-manifest.json`` next to the EIF and
read back by the verifier (:meth:`BuildManifest.load`).  It names every input
with its version, origin and sha256 (kernel source package, every Debian package
of the rootfs, every wheel, the in-tree sources), the toolchain, the
``SOURCE_DATE_EPOCH`` values, the spec (its text and digest, so the rebuild
needs nothing else than a checkout of ``source.git_commit``), and the outputs
with their digests and PCRs.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from enclave_audit.errors import InputNotFound, InvalidInput, SpecInvalid
from enclave_audit.fsutil import read_regular_file
from enclave_audit.model.measurements import PcrSet

MANIFEST_SCHEMA = "enclave-audit/build-manifest"
#: 2: inputs name their architecture, file name and the source that served them; the
#: spec records when its lock was resolved
MANIFEST_SCHEMA_VERSION = 2
#: how version 1 labelled itself; manifests of older releases stay readable
LEGACY_MANIFEST_SCHEMA = "https://enclave-audit.dev/schemas/build-manifest/v1"
MANIFEST_MEDIA_TYPE = "application/vnd.enclave-audit.build-manifest+json"
#: the largest manifest read (it embeds the spec and lock texts)
MANIFEST_MAX_BYTES = 64 << 20


def _hex(value: str, size: int, what: str) -> str:
    if len(value) != size * 2 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{what} must be {size * 2} lowercase hex digits")
    return value


def _relative_path(value: str, what: str) -> str:
    """A path the manifest gives relative to a directory: it must not leave that directory."""
    if not value:
        return value
    if (
        value.startswith("/")
        or "\\" in value
        or any(ord(c) < 0x20 for c in value)
        or ".." in value.split("/")
    ):
        raise ValueError(f"{what} must be a relative path inside its directory, without '..'")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class InputKind(StrEnum):
    KERNEL_SOURCE = "kernel-source"
    DEBIAN_PACKAGE = "debian-package"
    WHEEL = "wheel"
    SOURCE_FILE = "source-file"
    SOURCE_TREE = "source-tree"
    MODEL = "model"
    #: a file of a Debian source package, by its pool path (e.g. an .orig.tar.xz)
    DEBIAN_SOURCE = "debian-source"


#: the kinds of input that come from outside the source tree (what an input set holds)
EXTERNAL_KINDS = frozenset(
    {
        InputKind.KERNEL_SOURCE,
        InputKind.DEBIAN_PACKAGE,
        InputKind.WHEEL,
        InputKind.MODEL,
        InputKind.DEBIAN_SOURCE,
    }
)


class PinnedInput(_Frozen):
    """One input: what it is, which version, where it comes from, its sha256."""

    name: str
    kind: InputKind
    version: str = ""
    #: Debian architecture (``amd64``, ``all``) of a package
    arch: str = ""
    #: the file's canonical name (``pool/...`` path's last part, wheel file name)
    filename: str = ""
    origin: str
    sha256: str
    #: which source served the bytes for this build (store, input set, mirror, snapshot,
    #: PyPI); informational: the bytes are the pinned ones whatever served them
    served_by: str = ""

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        return _hex(v, 32, "sha256")

    @property
    def external(self) -> bool:
        return self.kind in EXTERNAL_KINDS


class BuildOutput(_Frozen):
    """An output file (relative to the output directory) or an intermediate artefact."""

    name: str
    path: str = ""
    size: int
    sha256: str
    sha384: str

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str) -> str:
        return _hex(v, 32, "sha256")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _relative_path(v, "output path")

    @field_validator("sha384")
    @classmethod
    def _sha384(cls, v: str) -> str:
        return _hex(v, 48, "sha384")


class SourceInfo(_Frozen):
    git_commit: str = ""
    git_dirty: bool = False
    tree_sha256: str = Field(description="digest of the application files copied into the image")
    packages: tuple[str, ...] = ()
    #: the last commit that touched ``epoch_paths``: its committer time is
    #: ``source_date_epoch`` (empty when the epoch was given, or nothing was committed)
    epoch_commit: str = ""
    #: the checkout paths that date the application ramdisk (app packages, spec, lock)
    epoch_paths: tuple[str, ...] = ()


class SpecInfo(_Frozen):
    path: str = Field(description="spec path relative to the source root")
    sha256: str
    text: str
    lock_path: str
    lock_text: str
    #: when the lock was resolved against the mirrors (UTC, ``YYYYMMDDTHHMMSSZ``): the
    #: snapshot.debian.org timestamp that serves every pinned package
    lock_resolved_at: str = ""

    @field_validator("path", "lock_path")
    @classmethod
    def _paths(cls, v: str) -> str:
        return _relative_path(v, "spec path")


class KernelInfo(_Frozen):
    release: str
    cmdline: str
    bzimage_sha256: str
    config_sha256: str
    input_digest: str
    source_date_epoch: int


class BuilderInfo(_Frozen):
    tool: str = "enclave-audit"
    version: str
    backend: str


class BuildManifest(_Frozen):
    schema_: str = Field(default=MANIFEST_SCHEMA, alias="schema")
    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str
    version: str
    builder: BuilderInfo
    source_date_epoch: int
    #: the root filesystem's epoch (from the lock file), <= source_date_epoch
    rootfs_source_date_epoch: int
    source: SourceInfo
    spec: SpecInfo
    kernel: KernelInfo
    init_flags: tuple[str, ...] = ()
    inputs: tuple[PinnedInput, ...]
    toolchain: dict[str, str]
    ramdisks: tuple[BuildOutput, ...]
    outputs: tuple[BuildOutput, ...]
    pcrs: PcrSet
    app: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _legacy_label(cls, data: Any) -> Any:
        """A version-1 manifest (URL label, no schema_version) reads as version 1."""
        if isinstance(data, dict) and data.get("schema") == LEGACY_MANIFEST_SCHEMA:
            if "schema_version" in data:
                raise ValueError("a version-1 manifest carries no schema_version")
            return {**data, "schema": MANIFEST_SCHEMA, "schema_version": 1}
        return data

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: str) -> str:
        if v != MANIFEST_SCHEMA:
            raise ValueError(f"unknown manifest schema {v!r} (expected {MANIFEST_SCHEMA})")
        return v

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v not in (1, MANIFEST_SCHEMA_VERSION):
            raise ValueError(
                f"unsupported manifest schema_version {v} (this tool reads 1 and"
                f" {MANIFEST_SCHEMA_VERSION})"
            )
        return v

    def input(self, name: str) -> PinnedInput | None:
        for item in self.inputs:
            if item.name == name:
                return item
        return None

    def output(self, name: str) -> BuildOutput | None:
        for item in self.outputs:
            if item.name == name:
                return item
        return None

    def without_sources(self) -> BuildManifest:
        """This manifest with every ``served_by`` emptied: what two builds of the same inputs
        must agree on, wherever each fetched its bytes from."""
        inputs = tuple(i.model_copy(update={"served_by": ""}) for i in self.inputs)
        return self.model_copy(update={"inputs": inputs})

    def to_json(self) -> str:
        data = self.model_dump(mode="json", by_alias=True)
        return json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n"

    @classmethod
    def from_json_obj(cls, data: Any, *, where: str = "build manifest") -> BuildManifest:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise SpecInvalid(f"{where}: {loc}: {err['msg']}") from None

    @classmethod
    def load(cls, path: Path) -> BuildManifest:
        """Read ``build-manifest.json``; a malformed one is one :class:`SpecInvalid` line."""
        try:
            # a regular file only: a FIFO or device given as the manifest is refused unread
            raw = read_regular_file(Path(path), limit=MANIFEST_MAX_BYTES)
            data = json.loads(raw)
        except InputNotFound:
            raise
        except InvalidInput as exc:
            raise SpecInvalid(exc.message) from None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise SpecInvalid(f"{path}: not valid JSON: {exc}") from None
        return cls.from_json_obj(data, where=str(path))
