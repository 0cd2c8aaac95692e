"""Initramfs ramdisks (newc cpio), compared as the kernel unpacks them, in one streaming pass.

Both ramdisks are read with :func:`builder.initramfs.unpack.iter_initramfs`: every
archive (also those after the first ``TRAILER!!!``), compressed segments, names resolved
to the path the kernel creates (``bin/./x`` is ``bin/x``; ``usr/bin/../../opt/x`` is
``opt/x``; a parent symlink is followed), hard links named.  Members are paired by that
path; a path unpacked twice on one side (a later archive overwriting an earlier member)
is paired by occurrence (``init``, ``init#2``).

The two sides are walked in lockstep.  Members at the same point are compared directly
(small ones in memory, large ones chunk by chunk), so equal content costs one read and
no hashing.  Members out of step (added, removed, reordered) are hashed and remembered,
then paired when the other side reaches them.  A member whose content differs is re-read
later through its data offset (in the ramdisk, or in the spooled decompressed bytes of a
compressed segment), so memory stays bounded whatever the archive size.  What cannot be
read makes the comparison incomplete (INCONCLUSIVE), with the members read so far kept.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from builder.initramfs import CpioMember, EntryKind
from builder.initramfs.unpack import Unpacked, compression_of, iter_initramfs
from enclave_audit.errors import CpioError, InvalidInput
from enclave_audit.limits import LimitExceeded
from enclave_audit.model.difference import Change, DiffNode, NodeKind, Side
from verifier.compare.base import (
    CHUNK,
    Blob,
    BytesBlob,
    EngineApi,
    FileBlob,
    Member,
    read_full,
)
from verifier.compare.nodes import describe_children, order_node

CPIO_MAGICS = (b"070701", b"070702")
#: members up to this size are read whole and compared; larger ones chunk by chunk
SMALL = 1 << 20

_FTYPE = {
    EntryKind.FILE: "file",
    EntryKind.DIRECTORY: "dir",
    EntryKind.SYMLINK: "symlink",
    EntryKind.CHAR_DEVICE: "char",
    EntryKind.BLOCK_DEVICE: "block",
    EntryKind.FIFO: "fifo",
    EntryKind.SOCKET: "socket",
}


class MemberSlice(Blob):
    """One member's data inside an archive blob, re-read through its offset on demand."""

    def __init__(
        self, archive: Blob, offset: int, size: int, name: str, digest: str | None = None
    ) -> None:
        self.archive = archive
        self.offset = offset
        self._size = size
        self.name = name
        if digest is not None:
            self._digest = digest

    @property
    def size(self) -> int:
        return self._size

    def open(self) -> IO[bytes]:
        fh = self.archive.open()
        try:
            fh.seek(self.offset)
        except (OSError, ValueError):  # not seekable: skip forward by reading
            left = self.offset
            while left > 0:
                got = fh.read(min(left, CHUNK))
                if not got:
                    raise InvalidInput(
                        f"{self.archive.name}: member {self.name!r} lies past the end"
                    ) from None
                left -= len(got)
        return io.BufferedReader(_Bounded(fh, self._size), CHUNK)


class _Bounded(io.RawIOBase):
    def __init__(self, fh: IO[bytes], size: int) -> None:
        self._fh = fh
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        data = self._fh.read(min(len(buffer), self._left))
        n = len(data)
        memoryview(buffer)[:n] = data
        self._left -= n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def _raw_meta(m: CpioMember) -> tuple[object, ...]:
    """Everything :func:`meta_of` reports, unformatted (a cheap equality test)."""
    return (
        m.kind,
        m.mode,
        m.uid,
        m.gid,
        m.mtime,
        m.nlink,
        m.link_target,
        m.rdev_major,
        m.rdev_minor,
    )


def meta_of(m: CpioMember, link_to: str | None = None) -> tuple[tuple[str, str], ...]:
    fields = [
        ("mode", f"{m.perm:04o}"),
        ("uid", str(m.uid)),
        ("gid", str(m.gid)),
        ("mtime", str(m.mtime)),
        ("nlink", str(m.nlink)),
    ]
    if m.link_target is not None:
        fields.append(("link target", m.link_target))
    if m.is_device:
        fields.append(("rdev", f"{m.rdev_major}:{m.rdev_minor}"))
    if link_to is not None:
        fields.append(("hard link to", link_to))
    return tuple(fields)


def member_notes(item: Unpacked) -> tuple[str, ...]:
    notes: list[str] = []
    if item.renamed:
        notes.append(f"stored as {item.member.name!r}; the kernel unpacks it to {item.path!r}")
    if item.hidden:
        where = (
            f"in a {item.segment.compression}-compressed segment"
            if item.segment.compression
            else "after the first archive's TRAILER!!!"
        )
        notes.append(
            f"in archive #{item.archive + 1} {where}: unpacked by the kernel, missed by"
            " readers that stop at the first trailer"
        )
    elif item.segment.compression:
        notes.append(f"in a {item.segment.compression}-compressed segment")
    if item.link_to is not None:
        notes.append(f"hard link: shares its inode with {item.link_to!r}")
    return tuple(notes)


@dataclass
class _Entry:
    """A member with the key it is paired by and where its data can be read again."""

    key: str
    item: Unpacked
    ftype: str
    meta: tuple[tuple[str, str], ...]
    source: Blob  # the ramdisk, or the spooled decompressed bytes of its segment

    @property
    def member(self) -> CpioMember:
        return self.item.member

    def slice(self, digest: str | None = None) -> MemberSlice:
        m = self.member
        return MemberSlice(self.source, m.data_offset, m.size, self.key, digest)

    def as_member(self, blob: Blob | None) -> Member:
        return Member(
            self.key,
            self.ftype,
            self.meta,
            blob,
            fs_path=self.item.path,
            notes=member_notes(self.item),
        )


@dataclass
class _Seen:
    """A member that was passed over out of step: its entry and content digest."""

    entry: _Entry
    digest: str | None


def _consume(m: CpioMember) -> str | None:
    if m.data is None or not m.is_file:
        return None
    h = hashlib.sha256()
    while chunk := m.data.read(CHUNK):
        h.update(chunk)
    return f"sha256:{h.hexdigest()}"


class _Side:
    """One ramdisk walked as the kernel unpacks it, yielding keyed entries."""

    def __init__(self, blob: Blob, engine: EngineApi, label: str) -> None:
        self.blob = blob
        self.engine = engine
        self.label = label
        self.count = 0
        self.archives = 0
        self.occurrences: dict[str, int] = {}
        self.error: InvalidInput | None = None
        self._fh: IO[bytes] | None = None
        self._items: Iterator[Unpacked] | None = None
        self._stores: dict[str, Blob] = {}

    def __enter__(self) -> _Side:
        self._fh = self.blob.open()
        self._items = iter_initramfs(
            self._fh,
            where=self.label,
            budget=self.engine.ctx.decompression,
            spool_dir=self.engine.ctx.workdir,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()

    def next(self) -> _Entry | None:
        if self.error is not None or self._items is None:
            return None
        try:
            item = next(self._items, None)
        except LimitExceeded as exc:
            self.error = exc
            return None
        except CpioError as exc:
            self.error = InvalidInput(f"{self.label}: {exc.message}")
            return None
        if item is None:
            return None
        self.count += 1
        self.archives = max(self.archives, item.archive + 1)
        n = self.occurrences.get(item.path, 0) + 1
        self.occurrences[item.path] = n
        key = (item.path or ".") if n == 1 else f"{item.path or '.'}#{n}"
        store = item.segment.store
        source = self.blob
        if store is not None:
            source = self._stores.get(str(store)) or FileBlob(store, f"{self.label} segment")
            self._stores[str(store)] = source
        m = item.member
        return _Entry(key, item, _FTYPE.get(m.kind, str(m.kind)), meta_of(m, item.link_to), source)


def _starts_an_initramfs(head: bytes) -> bool:
    """A cpio archive, or a compressed segment whose first bytes inflate to one."""
    if head[:6] in CPIO_MAGICS:
        return True
    method = compression_of(head)
    try:
        if method == "gzip":
            inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 16)
        elif method in ("xz", "lzma"):
            fmt = lzma.FORMAT_XZ if method == "xz" else lzma.FORMAT_ALONE
            inner = lzma.LZMADecompressor(fmt).decompress(head, 16)
        elif method == "bzip2":
            inner = bz2.BZ2Decompressor().decompress(head, 16)
        else:
            return False
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError):
        return False
    return inner[:6] in CPIO_MAGICS


class CpioComparator:
    """Initramfs ramdisks: a cpio archive, or a compressed one (the whole file is then read
    as the kernel reads it, so what follows the compressed segment is seen too)."""

    name = "cpio"

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return _starts_an_initramfs(head)

    def compare(
        self, a: Blob, b: Blob, path: tuple[str, ...], engine: EngineApi, depth: int
    ) -> DiffNode | None:
        small = min(SMALL, engine.ctx.memory_bound)
        nodes: list[DiffNode] = []
        order_a: list[str] = []
        order_b: list[str] = []
        pend_a: dict[str, _Seen] = {}
        pend_b: dict[str, _Seen] = {}

        def diff(x: Member | None, y: Member | None) -> None:
            node = engine.member_diff(x, y, path, depth)
            if node is not None:
                nodes.append(node)

        def pair_seen(sa: _Seen, sb: _Seen) -> None:
            blob_a = blob_b = None
            if sa.digest != sb.digest and sa.digest is not None and sb.digest is not None:
                blob_a, blob_b = sa.entry.slice(sa.digest), sb.entry.slice(sb.digest)
            diff(sa.entry.as_member(blob_a), sb.entry.as_member(blob_b))

        def pair_live(ea: _Entry, eb: _Entry) -> None:
            ma, mb = ea.member, eb.member
            blob_a: Blob | None = None
            blob_b: Blob | None = None
            if ma.is_file and mb.is_file and ma.data is not None and mb.data is not None:
                if ma.size <= small and mb.size <= small:
                    da, db = ma.data.read(ma.size), mb.data.read(mb.size)
                    engine.ctx.budget.bytes_compared += len(da)
                    if da != db:
                        blob_a, blob_b = BytesBlob(ea.key, da), BytesBlob(eb.key, db)
                elif not _streams_equal(ma.data, mb.data, engine):
                    blob_a, blob_b = ea.slice(), eb.slice()
            same_meta = _raw_meta(ma) == _raw_meta(mb) and ea.meta == eb.meta
            if blob_a is None and same_meta and member_notes(ea.item) == member_notes(eb.item):
                return  # same content, same metadata, unpacked the same way
            diff(ea.as_member(blob_a), eb.as_member(blob_b))

        with (
            _Side(a, engine, f"{'/'.join(path)} (left)") as side_a,
            _Side(b, engine, f"{'/'.join(path)} (right)") as side_b,
        ):
            ea, eb = side_a.next(), side_b.next()
            while ea is not None or eb is not None:
                if ea is not None and eb is not None and ea.key == eb.key:
                    order_a.append(ea.key)
                    order_b.append(eb.key)
                    pair_live(ea, eb)
                    engine.ctx.progress.advance(max(ea.member.size, eb.member.size))
                    ea, eb = side_a.next(), side_b.next()
                    continue
                # out of step: move the side that is behind (or the one whose partner was seen)
                if ea is None:
                    take_a = False
                elif eb is None:
                    take_a = True
                elif ea.key in pend_b:
                    take_a = True
                elif eb.key in pend_a:
                    take_a = False
                else:
                    take_a = ea.key.encode("utf-8", "surrogateescape") <= eb.key.encode(
                        "utf-8", "surrogateescape"
                    )
                if take_a:
                    assert ea is not None
                    order_a.append(ea.key)
                    sa = _Seen(ea, _consume(ea.member))
                    other = pend_b.pop(ea.key, None)
                    if other is not None:
                        pair_seen(sa, other)
                    else:
                        pend_a[ea.key] = sa
                    ea = side_a.next()
                else:
                    assert eb is not None
                    order_b.append(eb.key)
                    sb = _Seen(eb, _consume(eb.member))
                    other = pend_a.pop(eb.key, None)
                    if other is not None:
                        pair_seen(other, sb)
                    else:
                        pend_b[eb.key] = sb
                    eb = side_b.next()
        for s in pend_a.values():
            blob = s.entry.slice(s.digest) if s.digest else None
            diff(s.entry.as_member(blob), None)
        for s in pend_b.values():
            blob = s.entry.slice(s.digest) if s.digest else None
            diff(None, s.entry.as_member(blob))
        order = order_node(order_a, order_b, path)
        if order is not None:
            nodes.append(order)
        for side, label in ((side_a, "left"), (side_b, "right")):
            if side.error is not None:
                node = engine.incomplete((*path, f"(unreadable, {label})"), side.error)
                nodes.append(
                    node.model_copy(
                        update={
                            "notes": (
                                *node.notes,
                                f"the {label} ramdisk could not be read past member"
                                f" {side.count}: members after it were not compared",
                            )
                        }
                    )
                )
        if not nodes:
            return None
        children = engine.cap(nodes, path)
        return DiffNode(
            path=path,
            kind=NodeKind.ARCHIVE,
            change=Change.CONTENT,
            left=Side.of(
                size=a.known_size(), value=f"{side_a.count} members in {side_a.archives} archive(s)"
            ),
            right=Side.of(
                size=b.known_size(), value=f"{side_b.count} members in {side_b.archives} archive(s)"
            ),
            summary=describe_children(children, "initramfs"),
            children=children,
        )


def _streams_equal(fa: IO[bytes], fb: IO[bytes], engine: EngineApi) -> bool:
    while True:
        ca = read_full(fa, CHUNK)
        cb = read_full(fb, CHUNK)
        engine.ctx.budget.bytes_compared += len(ca)
        if ca != cb:
            return False
        if not ca:
            return True
