"""newc cpio ramdisks, compared in one streaming pass over both archives.

Both archives are walked in lockstep with the builder's reader.  Members with the same
name at the same point are compared directly (small ones in memory, large ones chunk by
chunk), so equal content costs one read and no hashing.  Members that are out of step
(added, removed, reordered) are hashed and remembered by name, then paired when the
other side reaches them.  A member whose content differs is re-read later through its
data offset for the detailed comparison, so memory stays bounded by the member size
bound whatever the archive size.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from builder.initramfs import CpioMember, EntryKind, iter_members
from enclave_audit.errors import CpioError, InvalidInput
from enclave_audit.model.difference import Change, DiffNode, NodeKind, Side
from verifier.compare.base import CHUNK, Blob, BytesBlob, Member
from verifier.compare.binary import read_full

if TYPE_CHECKING:
    from verifier.compare.engine import Engine

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


def meta_of(m: CpioMember) -> tuple[tuple[str, str], ...]:
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
    return tuple(fields)


@dataclass
class _Seen:
    """A member that was passed over out of step: its metadata and content digest."""

    name: str
    ftype: str
    meta: tuple[tuple[str, str], ...]
    size: int
    offset: int
    digest: str | None


def _consume(m: CpioMember) -> str | None:
    if m.data is None or not m.is_file:
        return None
    h = hashlib.sha256()
    while chunk := m.data.read(CHUNK):
        h.update(chunk)
    return f"sha256:{h.hexdigest()}"


class CpioComparator:
    name = "cpio"

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return head[:6] in CPIO_MAGICS

    def members(self, blob: Blob, engine: Engine) -> Iterator[Member]:
        """Members with lazily re-read content (for callers that want the container view)."""
        with blob.open() as fh:
            for m in iter_members(fh):
                content = MemberSlice(blob, m.data_offset, m.size, m.name) if m.is_file else None
                yield Member(m.name, _FTYPE.get(m.kind, str(m.kind)), meta_of(m), content)

    def compare(self, a: Blob, b: Blob, path: tuple[str, ...], engine: Engine) -> DiffNode | None:
        try:
            return self._compare(a, b, path, engine)
        except CpioError as exc:
            raise InvalidInput(exc.message) from None

    def _compare(self, a: Blob, b: Blob, path: tuple[str, ...], engine: Engine) -> DiffNode | None:
        from verifier.compare.engine import describe_children, order_node

        small = min(SMALL, engine.ctx.memory_bound)
        nodes: list[DiffNode] = []
        order_a: list[str] = []
        order_b: list[str] = []
        pend_a: dict[str, _Seen] = {}
        pend_b: dict[str, _Seen] = {}

        def seen(m: CpioMember) -> _Seen:
            digest = _consume(m)
            return _Seen(
                m.name, _FTYPE.get(m.kind, str(m.kind)), meta_of(m), m.size, m.data_offset, digest
            )

        def pair_seen(sa: _Seen, sb: _Seen) -> None:
            blob_a = blob_b = None
            if sa.digest != sb.digest and sa.digest is not None and sb.digest is not None:
                blob_a = MemberSlice(a, sa.offset, sa.size, sa.name, sa.digest)
                blob_b = MemberSlice(b, sb.offset, sb.size, sb.name, sb.digest)
            node = engine.member_diff(
                Member(sa.name, sa.ftype, sa.meta, blob_a),
                Member(sb.name, sb.ftype, sb.meta, blob_b),
                path,
            )
            if node is not None:
                nodes.append(node)

        def pair_live(ma: CpioMember, mb: CpioMember) -> None:
            blob_a: Blob | None = None
            blob_b: Blob | None = None
            if ma.is_file and mb.is_file and ma.data is not None and mb.data is not None:
                if ma.size <= small and mb.size <= small:
                    da, db = ma.data.read(ma.size), mb.data.read(mb.size)
                    engine.ctx.budget.bytes_compared += len(da)
                    if da != db:
                        blob_a, blob_b = BytesBlob(ma.name, da), BytesBlob(mb.name, db)
                elif not _streams_equal(ma.data, mb.data, engine):
                    blob_a = MemberSlice(a, ma.data_offset, ma.size, ma.name)
                    blob_b = MemberSlice(b, mb.data_offset, mb.size, mb.name)
            if blob_a is None and _raw_meta(ma) == _raw_meta(mb):
                return  # same content, same metadata: nothing to build
            node = engine.member_diff(
                Member(ma.name, _FTYPE.get(ma.kind, str(ma.kind)), meta_of(ma), blob_a),
                Member(mb.name, _FTYPE.get(mb.kind, str(mb.kind)), meta_of(mb), blob_b),
                path,
            )
            if node is not None:
                nodes.append(node)

        with a.open() as fa, b.open() as fb:
            ita, itb = iter_members(fa), iter_members(fb)
            ma = next(ita, None)
            mb = next(itb, None)
            while ma is not None or mb is not None:
                if ma is not None and mb is not None and ma.name == mb.name:
                    order_a.append(ma.name)
                    order_b.append(mb.name)
                    pair_live(ma, mb)
                    engine.ctx.progress.advance(max(ma.size, mb.size))
                    ma, mb = next(ita, None), next(itb, None)
                    continue
                # out of step: move the side that is behind (or the one whose partner was seen)
                take_a: bool
                if ma is None:
                    take_a = False
                elif mb is None:
                    take_a = True
                elif ma.name in pend_b:
                    take_a = True
                elif mb.name in pend_a:
                    take_a = False
                else:
                    take_a = ma.name.encode("utf-8", "surrogateescape") <= mb.name.encode(
                        "utf-8", "surrogateescape"
                    )
                if take_a:
                    assert ma is not None
                    order_a.append(ma.name)
                    s = seen(ma)
                    other = pend_b.pop(ma.name, None)
                    if other is not None:
                        pair_seen(s, other)
                    else:
                        pend_a[s.name] = s
                    ma = next(ita, None)
                else:
                    assert mb is not None
                    order_b.append(mb.name)
                    s = seen(mb)
                    other = pend_a.pop(mb.name, None)
                    if other is not None:
                        pair_seen(other, s)
                    else:
                        pend_b[s.name] = s
                    mb = next(itb, None)
        for s in pend_a.values():
            blob = MemberSlice(a, s.offset, s.size, s.name, s.digest) if s.digest else None
            node = engine.member_diff(Member(s.name, s.ftype, s.meta, blob), None, path)
            if node is not None:
                nodes.append(node)
        for s in pend_b.values():
            blob = MemberSlice(b, s.offset, s.size, s.name, s.digest) if s.digest else None
            node = engine.member_diff(None, Member(s.name, s.ftype, s.meta, blob), path)
            if node is not None:
                nodes.append(node)
        order = order_node(order_a, order_b, path)
        if order is not None:
            nodes.append(order)
        if not nodes:
            return None
        children = engine.cap(nodes, path)
        return DiffNode(
            path=path,
            kind=NodeKind.ARCHIVE,
            change=Change.CONTENT,
            left=Side.of(size=a.known_size(), value=f"{len(order_a)} members"),
            right=Side.of(size=b.known_size(), value=f"{len(order_b)} members"),
            summary=describe_children(children, "cpio archive"),
            children=children,
        )


def _streams_equal(fa: IO[bytes], fb: IO[bytes], engine: Engine) -> bool:
    while True:
        ca = read_full(fa, CHUNK)
        cb = read_full(fb, CHUNK)
        engine.ctx.budget.bytes_compared += len(ca)
        if ca != cb:
            return False
        if not ca:
            return True
