"""Input sets: every external input of a build, content-addressed, in a directory or a tar.

Layout (the same inside a tar)::

    index.json                 what is in the set (kind, name, version, sha256, size, path)
    blobs/sha256/<hex>         the files, named by their sha256

``enclave-audit inputs export`` writes one for a manifest; ``build --inputs`` and
``verify --inputs`` read it as a source of the resolver; ``inputs verify`` checks
every blob against its name and the index.  Nothing in a set is trusted: a blob is
used only after its bytes hash to the digest the build pins.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from builder.inputs.store import InputStore
from enclave_audit.errors import DigestMismatch, InputNotFound, InvalidInput, OutputError
from enclave_audit.fsutil import atomic_directory, atomic_write
from enclave_audit.model.manifest import InputKind, PinnedInput

INPUT_SET_SCHEMA = "enclave-audit/input-set"
INPUT_SET_VERSION = 1
INDEX = "index.json"
_CHUNK = 1 << 20
#: bound on index.json (a set of thousands of inputs is well under this)
_INDEX_LIMIT = 16 << 20


def blob_path(sha256: str) -> str:
    return f"blobs/sha256/{sha256}"


class InputSetEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: InputKind
    name: str
    version: str = ""
    arch: str = ""
    filename: str = ""
    sha256: str
    size: int = Field(ge=0)
    path: str

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("must be 64 lowercase hex digits")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        parts = PurePosixPath(v).parts
        if len(parts) != 3 or parts[:2] != ("blobs", "sha256"):
            raise ValueError("must be blobs/sha256/<sha256>")
        return v


class InputSetIndex(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_: str = Field(alias="schema", default=INPUT_SET_SCHEMA)
    schema_version: int = INPUT_SET_VERSION
    #: the manifests this set was exported for (name, version, sha256 of the manifest)
    manifests: tuple[dict[str, str], ...] = ()
    inputs: tuple[InputSetEntry, ...]

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: str) -> str:
        if v != INPUT_SET_SCHEMA:
            raise ValueError(f"not an input set index (schema {v!r})")
        return v

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != INPUT_SET_VERSION:
            raise ValueError(f"unsupported input set version {v} (this tool reads 1)")
        return v

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2) + "\n"


def entry_for(ref: PinnedInput, size: int) -> InputSetEntry:
    return InputSetEntry(
        kind=ref.kind,
        name=ref.name,
        version=ref.version,
        arch=ref.arch,
        filename=ref.filename,
        sha256=ref.sha256,
        size=size,
        path=blob_path(ref.sha256),
    )


def _parse_index(data: bytes, where: str) -> InputSetIndex:
    if len(data) > _INDEX_LIMIT:
        raise InvalidInput(f"{where}: index.json larger than {_INDEX_LIMIT} bytes")

    def _no_dupes(pairs: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in pairs:
            if key in out:
                raise InvalidInput(f"{where}: index.json repeats the key {key!r}")
            out[key] = value
        return out

    try:
        raw = json.loads(data, object_pairs_hook=_no_dupes)
        index = InputSetIndex.model_validate(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput(f"{where}: index.json is not valid JSON: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"{where}: index.json: {loc}: {err['msg']}") from None
    seen: set[str] = set()
    for e in index.inputs:
        if e.path != blob_path(e.sha256):
            raise InvalidInput(
                f"{where}: index.json: {e.name} is stored at {e.path}, not under its sha256"
            )
        if e.sha256 in seen:
            continue
        seen.add(e.sha256)
    return index


@dataclass(frozen=True)
class VerifiedSet:
    path: Path
    index: InputSetIndex
    blobs: int
    bytes: int


class InputSet:
    """A directory or tar holding an input set, opened read-only."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise InputNotFound(f"{self.path}: no such input set") from None
        except OSError as exc:
            raise InputNotFound(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        self.is_dir = stat.S_ISDIR(st.st_mode)
        if not self.is_dir and not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"{self.path}: an input set is a directory or a .tar file")
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if self.is_dir:
            index_path = self.path / INDEX
            try:
                data = index_path.read_bytes()
            except OSError:
                raise InvalidInput(
                    f"{self.path}: not an input set (no {INDEX}; make one with"
                    " enclave-audit inputs export)"
                ) from None
        else:
            try:
                self._tar = tarfile.open(self.path, mode="r:")
                for info in self._tar:
                    self._members.setdefault(info.name, info)
            except (tarfile.TarError, OSError) as exc:
                raise InvalidInput(f"{self.path}: not a readable tar: {exc}") from None
            index_info = self._members.get(INDEX)
            if index_info is None or not index_info.isfile():
                raise InvalidInput(f"{self.path}: not an input set (no {INDEX} in the tar)")
            fh = self._tar.extractfile(index_info)
            assert fh is not None
            data = fh.read(_INDEX_LIMIT + 1)
        self.index = _parse_index(data, str(self.path))
        self._by_sha = {e.sha256: e for e in self.index.inputs}

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> InputSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def label(self) -> str:
        return f"input set {self.path}"

    def has(self, sha256: str) -> bool:
        return sha256 in self._by_sha

    @contextlib.contextmanager
    def _open_blob(self, entry: InputSetEntry) -> Iterator[IO[bytes]]:
        if self.is_dir:
            blob = self.path / entry.path
            try:
                st = os.lstat(blob)
            except OSError:
                raise InvalidInput(f"{self.path}: {entry.path} is listed but missing") from None
            if not stat.S_ISREG(st.st_mode):
                raise InvalidInput(f"{self.path}: {entry.path} is not a regular file")
            with open(blob, "rb") as fh:
                yield fh
            return
        assert self._tar is not None
        info = self._members.get(entry.path)
        if info is None or not info.isfile():
            raise InvalidInput(f"{self.path}: {entry.path} is listed but missing from the tar")
        fh2 = self._tar.extractfile(info)
        assert fh2 is not None
        with fh2:
            yield fh2

    def copy_into(self, sha256: str, store: InputStore) -> Path:
        """Copy the blob for ``sha256`` into ``store``, checking its bytes on the way."""
        entry = self._by_sha[sha256]
        fd, tmp = tempfile.mkstemp(prefix=".inputset-", dir=store.scratch())
        try:
            h = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out, self._open_blob(entry) as src:
                while chunk := src.read(_CHUNK):
                    size += len(chunk)
                    if size > entry.size:
                        break
                    h.update(chunk)
                    out.write(chunk)
            if size != entry.size or h.hexdigest() != sha256:
                raise DigestMismatch(
                    f"{self.path}: {entry.path} ({entry.name}) does not hash to its name"
                    " (input set corrupt or tampered)"
                )
            return store.adopt(Path(tmp), sha256)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def verify(self) -> VerifiedSet:
        """Every listed blob is present and hashes to its name; nothing unlisted is there."""
        total = 0
        for entry in self.index.inputs:
            h = hashlib.sha256()
            size = 0
            with self._open_blob(entry) as src:
                while chunk := src.read(_CHUNK):
                    size += len(chunk)
                    h.update(chunk)
            if h.hexdigest() != entry.sha256 or size != entry.size:
                raise DigestMismatch(
                    f"{self.path}: {entry.path} ({entry.kind} {entry.name} {entry.version})"
                    f" has sha256 {h.hexdigest()} and {size} bytes, the index says"
                    f" {entry.sha256} and {entry.size}"
                )
            total += size
        listed = {INDEX, *(e.path for e in self.index.inputs)}
        extra = sorted(self._listing() - listed)
        if extra:
            raise InvalidInput(f"{self.path}: holds files the index does not list: {extra[0]}")
        return VerifiedSet(self.path, self.index, len(self._by_sha), total)

    def _listing(self) -> set[str]:
        if not self.is_dir:
            return {n for n, i in self._members.items() if not i.isdir()}
        out: set[str] = set()
        for dirpath, _dirs, files in os.walk(self.path):
            for name in files:
                out.add((Path(dirpath) / name).relative_to(self.path).as_posix())
        return out


def write_input_set(
    dest: Path,
    items: Iterable[tuple[PinnedInput, Path]],
    *,
    manifests: Iterable[dict[str, str]] = (),
) -> InputSetIndex:
    """Write ``items`` (each input and its verified file) as a directory or, for ``*.tar``,
    a deterministic tar (sorted, mtime 0, owner 0). The result appears whole or not at all.
    """
    seen: dict[str, tuple[InputSetEntry, Path]] = {}
    for ref, path in items:
        if ref.sha256 not in seen:
            seen[ref.sha256] = (entry_for(ref, path.stat().st_size), path)
    entries = sorted(seen.values(), key=lambda ep: (ep[0].kind, ep[0].name, ep[0].version))
    index = InputSetIndex(
        manifests=tuple(manifests),
        inputs=tuple(e for e, _ in entries),
    )
    text = index.to_json().encode()
    dest = Path(dest)
    if dest.name.endswith(".tar"):
        _write_tar(dest, text, entries)
    else:
        if dest.exists() and not dest.is_dir():
            raise OutputError(f"{dest}: exists and is not a directory")
        with atomic_directory(dest) as out:
            (out / "blobs" / "sha256").mkdir(parents=True)
            for entry, path in entries:
                target = out / entry.path
                try:
                    os.link(path, target)
                except OSError:
                    shutil.copyfile(path, target)
                os.chmod(target, 0o644)
            (out / INDEX).write_bytes(text)
            os.chmod(out, 0o755)  # noqa: S103 - the set is for others to read
    return index


def _tarinfo(name: str, size: int, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info


def _write_tar(dest: Path, index_text: bytes, entries: list[tuple[InputSetEntry, Path]]) -> None:
    with (
        atomic_write(dest) as fh,
        tarfile.open(fileobj=fh, mode="w:", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.addfile(_tarinfo(INDEX, len(index_text)), io.BytesIO(index_text))
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(_tarinfo(d, 0, directory=True))
        for entry, path in sorted(entries, key=lambda ep: ep[0].path):
            with open(path, "rb") as src:
                tar.addfile(_tarinfo(entry.path, entry.size), src)
