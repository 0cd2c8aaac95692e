"""gzip, xz, zip (wheels) and tar: member metadata and contents, recursively.

Decompressed bytes are streamed and charged to the comparison's decompression budget
(``--max-decompressed``); zip members are read lazily (nothing is held for a member
that is not being compared); tar members are kept in memory only while the archive's
running total stays under the in-memory limit, and spooled to the work directory past
it.  A corrupt stream raises :class:`~verifier.compare.base.Unreadable`.
"""

from __future__ import annotations

import abc
import gzip
import io
import lzma
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, cast

from builder.initramfs.unpack import normalise
from enclave_audit.errors import InvalidInput
from enclave_audit.limits import ByteBudget
from enclave_audit.model.difference import Change, DiffNode, NodeKind
from verifier.compare.base import (
    CHUNK,
    Blob,
    BytesBlob,
    EngineApi,
    FileBlob,
    Member,
    SpooledBlob,
    Unreadable,
    cheap_side,
)
from verifier.compare.nodes import field_node, importance

_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, struct.error)


def _inner_name(blob: Blob, suffixes: tuple[str, ...], fallback: str) -> str:
    for suffix in suffixes:
        if blob.name.endswith(suffix) and len(blob.name) > len(suffix):
            return blob.name[: -len(suffix)]
    return fallback


def _gzip_header(head: bytes) -> dict[str, str]:
    if len(head) < 10:
        raise InvalidInput("gzip: truncated header")
    flags = head[3]
    mtime = struct.unpack_from("<I", head, 4)[0]
    out = {
        "mtime": f"{mtime} ({datetime.fromtimestamp(mtime, UTC):%Y-%m-%dT%H:%M:%SZ})"
        if mtime
        else "0",
        "xfl": str(head[8]),
        "os": str(head[9]),
    }
    pos = 10
    if flags & 4 and len(head) >= 12:
        pos += 2 + struct.unpack_from("<H", head, 10)[0]
    if flags & 8:
        end = head.find(b"\x00", pos)
        if end > 0:
            out["filename"] = head[pos:end].decode("latin-1")
            pos = end + 1
    return out


class _Checked(io.RawIOBase):
    """A decompressing stream whose every byte is charged to the decompression budget,
    and whose format errors become :class:`Unreadable`."""

    def __init__(
        self, inner: IO[bytes], where: str, budget: ByteBudget, owner: IO[bytes] | None = None
    ) -> None:
        super().__init__()
        self._inner = inner
        self._where = where
        self._budget = budget
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self._budget.check(self._where)
        try:
            n = self._inner.readinto(buffer)  # type: ignore[attr-defined]
        except (*_DECOMPRESS_ERRORS, zipfile.BadZipFile) as exc:
            raise Unreadable(f"{self._where}: stream unreadable: {exc}") from None
        if n:
            self._budget.charge(n, self._where)
        return int(n or 0)

    def close(self) -> None:
        try:
            self._inner.close()
            if self._owner is not None:
                self._owner.close()
        finally:
            super().close()


class _Compressed(abc.ABC):
    """A compressed stream: its header fields and its decompressed content."""

    name = "compressed"
    kind_label = ""
    suffixes: tuple[str, ...] = ()

    def header(self, head: bytes) -> dict[str, str]:
        return {}

    @abc.abstractmethod
    def decompress(self, fh: IO[bytes]) -> IO[bytes]: ...

    def _opener(self, blob: Blob, engine: EngineApi) -> Callable[[], IO[bytes]]:
        where = f"{blob.name} ({self.name})"

        def open_decompressed() -> IO[bytes]:
            raw = blob.open()
            checked = _Checked(self.decompress(raw), where, engine.ctx.decompression, raw)
            return cast(IO[bytes], io.BufferedReader(checked, CHUNK))

        return open_decompressed

    def compare(
        self, a: Blob, b: Blob, path: tuple[str, ...], engine: EngineApi, depth: int
    ) -> DiffNode | None:
        ha, hb = self.header(a.head(512)), self.header(b.head(512))
        children = [
            field_node(path, k, ha.get(k), hb.get(k))
            for k in dict.fromkeys([*ha, *hb])
            if ha.get(k) != hb.get(k)
        ]
        fallback = f"({self.kind_label}-decompressed)"
        workdir = engine.ctx.workdir
        ia = SpooledBlob(_inner_name(a, self.suffixes, fallback), self._opener(a, engine), workdir)
        ib = SpooledBlob(_inner_name(b, self.suffixes, fallback), self._opener(b, engine), workdir)
        content = engine.compare(ia, ib, (*path, ia.name), depth + 1)
        if content is not None:
            children.append(content)
        if not children:
            return DiffNode(
                path=path,
                kind=NodeKind.ARCHIVE,
                change=Change.CONTENT,
                left=cheap_side(a, engine.ctx.memory_bound),
                right=cheap_side(b, engine.ctx.memory_bound),
                summary=f"{self.name} streams differ, decompressed contents are equal",
                notes=("compression level, block size or compressor version differs",),
            )
        summary = f"{self.name}: " + (
            "content differs" if content is not None else "header differs"
        )
        return DiffNode(
            path=path,
            kind=NodeKind.ARCHIVE,
            change=Change.CONTENT,
            left=cheap_side(a, engine.ctx.memory_bound),
            right=cheap_side(b, engine.ctx.memory_bound),
            summary=summary,
            children=tuple(sorted(children, key=importance)),
        )


class GzipComparator(_Compressed):
    name = "gzip"
    kind_label = "gunzip"
    suffixes = (".gz", ".tgz")

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return head.startswith(b"\x1f\x8b\x08")

    def header(self, head: bytes) -> dict[str, str]:
        return _gzip_header(head)

    def decompress(self, fh: IO[bytes]) -> IO[bytes]:
        return cast(IO[bytes], gzip.GzipFile(fileobj=fh, mode="rb"))


class XzComparator(_Compressed):
    name = "xz"
    kind_label = "unxz"
    suffixes = (".xz",)

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return head.startswith(b"\xfd7zXZ\x00")

    def decompress(self, fh: IO[bytes]) -> IO[bytes]:
        return cast(IO[bytes], lzma.LZMAFile(fh, mode="rb"))


def _zip_time(t: tuple[int, int, int, int, int, int]) -> str:
    return "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}".format(*t)


class _ZipMember(SpooledBlob):
    """One zip member, inflated on first use into the work directory (never held)."""

    def __init__(self, archive: Blob, info: zipfile.ZipInfo, engine: EngineApi) -> None:
        super().__init__(info.filename, self._inflate, engine.ctx.workdir)
        self.archive = archive
        self.info = info
        self._engine = engine

    def _stored(self) -> tuple[int, int]:
        """(offset, length) of the member's compressed bytes in the archive."""
        with self.archive.open() as fh:
            fh.seek(self.info.header_offset)
            local = fh.read(30)
        if len(local) < 30 or not local.startswith(b"PK\x03\x04"):
            raise Unreadable(f"{self.archive.name}: {self.info.filename}: bad local header")
        name_len, extra_len = struct.unpack_from("<HH", local, 26)
        return self.info.header_offset + 30 + name_len + extra_len, self.info.compress_size

    def quick_equal(self, other: Blob) -> bool | None:
        """Equal when both store the same bytes with the same method (nothing inflated)."""
        if not isinstance(other, _ZipMember):
            return None
        if (self.info.compress_type, self.info.compress_size, self.info.file_size) != (
            other.info.compress_type,
            other.info.compress_size,
            other.info.file_size,
        ):
            return None
        try:
            oa, n = self._stored()
            ob, _ = other._stored()
            with self.archive.open() as fa, other.archive.open() as fb:
                fa.seek(oa)
                fb.seek(ob)
                left = n
                while left > 0:
                    ca, cb = fa.read(min(CHUNK, left)), fb.read(min(CHUNK, left))
                    if ca != cb or not ca:
                        return None
                    left -= len(ca)
        except (OSError, ValueError):
            return None
        return True

    def _inflate(self) -> IO[bytes]:
        raw = self.archive.open()
        where = f"{self.archive.name}: {self.info.filename}"
        try:
            zf = zipfile.ZipFile(raw)
            member = zf.open(self.info)
        except (zipfile.BadZipFile, *_DECOMPRESS_ERRORS) as exc:
            raw.close()
            raise Unreadable(f"{where}: {exc}") from None
        checked = _Checked(member, where, self._engine.ctx.decompression, raw)
        return cast(IO[bytes], io.BufferedReader(checked, CHUNK))


class ZipComparator:
    """zip files and wheels: per-member date_time, permissions, compression, content."""

    name = "zip"

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))

    def members(self, blob: Blob, engine: EngineApi) -> Iterator[Member]:
        try:
            with blob.open() as fh, zipfile.ZipFile(fh) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, *_DECOMPRESS_ERRORS) as exc:
            raise InvalidInput(f"{blob.name}: unreadable zip: {exc}") from None
        for info in infos:
            mode = info.external_attr >> 16
            meta = [
                ("date_time", _zip_time(info.date_time)),
                ("mode", f"{stat.S_IMODE(mode):04o}" if mode else "(none)"),
                ("compress_type", str(info.compress_type)),
                ("create_system", str(info.create_system)),
            ]
            if info.comment:
                meta.append(("comment", info.comment.decode("utf-8", "replace")))
            if info.extra:
                meta.append(("extra", info.extra.hex()[:128]))
            if info.is_dir():
                yield Member(info.filename, "dir", tuple(meta))
                continue
            yield Member(info.filename, "file", tuple(meta), _ZipMember(blob, info, engine))

    def compare(
        self, a: Blob, b: Blob, path: tuple[str, ...], engine: EngineApi, depth: int
    ) -> DiffNode | None:
        return engine.compare_container(self, a, b, path, NodeKind.ARCHIVE, depth)


_TAR_TYPES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


class TarComparator:
    """tar archives: per-member mode, owner, mtime, link target, xattrs, content."""

    name = "tar"

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return len(head) > 262 and head[257:262] == b"ustar"

    def members(self, blob: Blob, engine: EngineApi) -> Iterator[Member]:
        held = 0  # bytes of member content this archive keeps in memory
        try:
            with blob.open() as fh, tarfile.open(fileobj=fh, mode="r|") as tf:
                for info in tf:
                    ftype = _TAR_TYPES.get(info.type, f"type-{info.type!r}")
                    meta = [
                        ("mode", f"{info.mode:04o}"),
                        ("uid", str(info.uid)),
                        ("gid", str(info.gid)),
                        ("uname", info.uname),
                        ("gname", info.gname),
                        ("mtime", str(int(info.mtime))),
                    ]
                    if info.issym() or info.islnk():
                        meta.append(("link target", info.linkname))
                    if info.pax_headers:
                        for key in sorted(info.pax_headers):
                            meta.append((f"pax:{key}", info.pax_headers[key][:512]))
                    content: Blob | None = None
                    if info.isfile():
                        src = tf.extractfile(info)
                        assert src is not None
                        if held + info.size <= engine.ctx.memory_bound:
                            data = src.read(info.size)
                            held += len(data)
                            content = BytesBlob(info.name, data)
                        else:
                            content = _to_disk(info.name, src, engine)
                    yield Member(
                        info.name, ftype, tuple(meta), content, fs_path=normalise(info.name)
                    )
        except (tarfile.TarError, *_DECOMPRESS_ERRORS) as exc:
            raise InvalidInput(f"{blob.name}: unreadable tar: {exc}") from None

    def compare(
        self, a: Blob, b: Blob, path: tuple[str, ...], engine: EngineApi, depth: int
    ) -> DiffNode | None:
        return engine.compare_container(self, a, b, path, NodeKind.ARCHIVE, depth)


def _to_disk(name: str, src: IO[bytes], engine: EngineApi) -> Blob:
    fd, tmp = tempfile.mkstemp(prefix="member-", dir=engine.ctx.workdir)
    with open(fd, "wb") as out:
        while chunk := src.read(CHUNK):
            out.write(chunk)
    return FileBlob(Path(tmp), name)
