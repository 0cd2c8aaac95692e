"""gzip, xz, zip (wheels) and tar: member metadata and contents, recursively."""

from __future__ import annotations

import abc
import functools
import gzip
import lzma
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, cast

from enclave_audit.errors import InvalidInput
from enclave_audit.model.difference import Change, DiffNode, NodeKind
from verifier.compare.base import CHUNK, Blob, Member, StreamBlob, cheap_side, spool

if TYPE_CHECKING:
    from verifier.compare.engine import Engine

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


class _Compressed(abc.ABC):
    """A compressed stream: its header fields and its decompressed content."""

    name = "compressed"
    kind_label = ""
    suffixes: tuple[str, ...] = ()

    def header(self, head: bytes) -> dict[str, str]:
        return {}

    @abc.abstractmethod
    def decompress(self, fh: IO[bytes]) -> IO[bytes]: ...

    def compare(self, a: Blob, b: Blob, path: tuple[str, ...], engine: Engine) -> DiffNode | None:
        from verifier.compare.engine import field_node, importance

        ha, hb = self.header(a.head(512)), self.header(b.head(512))
        children = [
            field_node(path, k, ha.get(k), hb.get(k))
            for k in dict.fromkeys([*ha, *hb])
            if ha.get(k) != hb.get(k)
        ]

        def opener(blob: Blob) -> StreamBlob:
            inner = _inner_name(blob, self.suffixes, f"({self.kind_label}-decompressed)")
            return StreamBlob(inner, lambda: self.decompress(blob.open()))

        ia, ib = opener(a), opener(b)
        try:
            content = engine.compare_nested(ia, ib, (*path, ia.name))
        except _DECOMPRESS_ERRORS as exc:
            raise InvalidInput(
                f"{a.name} / {b.name}: {self.name} stream unreadable: {exc}"
            ) from None
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


class ZipComparator:
    """zip files and wheels: per-member date_time, permissions, compression, content."""

    name = "zip"

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))

    def members(self, blob: Blob, engine: Engine) -> Iterator[Member]:
        try:
            with blob.open() as fh, zipfile.ZipFile(fh) as zf:
                for info in zf.infolist():
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
                    with zf.open(info) as member:
                        content = spool(
                            info.filename,
                            iter(functools.partial(member.read, CHUNK), b""),
                            engine.ctx,
                        )
                    yield Member(info.filename, "file", tuple(meta), content)
        except (zipfile.BadZipFile, *_DECOMPRESS_ERRORS) as exc:
            raise InvalidInput(f"{blob.name}: unreadable zip: {exc}") from None

    def compare(self, a: Blob, b: Blob, path: tuple[str, ...], engine: Engine) -> DiffNode | None:
        return engine.compare_container(self, a, b, path, NodeKind.ARCHIVE)


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
    """tar archives: per-member mode, owner, mtime, link target, content."""

    name = "tar"

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return len(head) > 262 and head[257:262] == b"ustar"

    def members(self, blob: Blob, engine: Engine) -> Iterator[Member]:
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
                            meta.append((f"pax:{key}", info.pax_headers[key]))
                    content = None
                    if info.isfile():
                        src = tf.extractfile(info)
                        assert src is not None
                        content = spool(
                            info.name, iter(functools.partial(src.read, CHUNK), b""), engine.ctx
                        )
                    yield Member(info.name, ftype, tuple(meta), content)
        except (tarfile.TarError, *_DECOMPRESS_ERRORS) as exc:
            raise InvalidInput(f"{blob.name}: unreadable tar: {exc}") from None

    def compare(self, a: Blob, b: Blob, path: tuple[str, ...], engine: Engine) -> DiffNode | None:
        return engine.compare_container(self, a, b, path, NodeKind.ARCHIVE)
