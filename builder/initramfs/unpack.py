"""What the kernel unpacks from an initramfs: every archive, every segment, every path.

Linux (``init/initramfs.c``) does not stop at the first ``TRAILER!!!``.  It reads the
ramdisk as a sequence of segments:

* a newc archive starting with ``0`` at a 4-byte aligned offset, up to its trailer;
* zero bytes (padding), skipped;
* a compressed segment (gzip, bzip2, lzma, xz, lzo, lz4, zstd, by magic), whose
  decompressed bytes are again archives separated by zero padding;

and unpacks every member of every archive, in order, later members replacing earlier
ones at the same path.  Names are resolved like any path: ``.``, ``..`` and repeated
``/`` collapse (``..`` stops at the root) and a symlink unpacked earlier is followed
when it is a parent directory of a later member.  Regular files with ``nlink >= 2`` and
the same inode number within one archive become hard links to the first of them.

:func:`iter_initramfs` yields :class:`Unpacked` members in that order with their
kernel path; what cannot be read the way the kernel would read it raises
:class:`UnreadableRamdisk` (the caller's verdict is then INCONCLUSIVE, never PASS),
and decompression is charged to a :class:`~enclave_audit.limits.ByteBudget`.
:class:`KernelView` follows the unpacking to the end state: for every path, the inode
the kernel leaves there (final mode, owner, every name of a hard-linked file).
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import stat
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from builder.initramfs.member import CpioMember
from builder.initramfs.newc import EntryKind
from builder.initramfs.reader import CountingReader, iter_archive
from enclave_audit.errors import CpioError
from enclave_audit.limits import ByteBudget

CHUNK = 1 << 20
#: the kernel gives up after this many symlinks in one path (ELOOP)
MAX_SYMLINKS = 40

#: compressed-segment magics, as the kernel's decompress_method() knows them
MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x1f\x9e", "gzip"),
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x89LZO", "lzo"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
#: what this module decompresses in-process; the others make the ramdisk unreadable here
SUPPORTED = frozenset({"gzip", "bzip2", "lzma", "xz"})


class UnreadableRamdisk(CpioError):
    """Part of a ramdisk cannot be read the way the kernel would read it."""


def compression_of(head: bytes) -> str | None:
    for magic, name in MAGICS:
        if head.startswith(magic):
            return name
    return None


def normalise(name: str) -> str:
    """The path a name denotes from the root, lexically: ``./a//b/../c`` -> ``a/c``.

    ``..`` at the root stays at the root (as in the kernel), so the result never
    leaves it; the root itself is ``""``.
    """
    out: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/".join(out)


class PathResolver:
    """Resolves member names the way the kernel's path walk does while it unpacks.

    Parent components that are symlinks unpacked earlier are followed (absolute targets
    from the root of the ramdisk, relative ones from the link's directory); the last
    component is not (the kernel replaces what is there).
    """

    def __init__(self) -> None:
        self._links: dict[str, str] = {}

    def resolve(self, name: str) -> str:
        pending = list(reversed(name.split("/")))
        out: list[str] = []
        followed = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if out:
                    out.pop()
                continue
            is_last = not any(p not in ("", ".") for p in pending)
            if not is_last and self._links:
                target = self._links.get("/".join((*out, part)))
                if target is not None:
                    followed += 1
                    if followed > MAX_SYMLINKS:
                        return normalise(name)  # ELOOP: the kernel creates nothing there
                    if target.startswith("/"):
                        out = []
                    pending.extend(reversed(target.split("/")))
                    continue
            out.append(part)
        return "/".join(out)

    def record(self, path: str, member: CpioMember) -> None:
        if member.kind is EntryKind.SYMLINK and member.link_target is not None:
            self._links[path] = member.link_target
        else:
            self._links.pop(path, None)


@dataclass(frozen=True)
class Segment:
    """A contiguous part of a ramdisk: one uncompressed archive, or one compressed block."""

    index: int
    offset: int  # where it starts in the ramdisk
    compression: str | None  # None for an uncompressed archive
    #: the decompressed bytes of a compressed segment, when the caller asked to keep them
    store: Path | None = None


@dataclass(frozen=True)
class Unpacked:
    """A member as the kernel unpacks it.

    ``member.data_offset`` is an offset into the ramdisk for an uncompressed segment and
    into ``segment.store`` (the decompressed bytes) for a compressed one.
    """

    member: CpioMember
    path: str  # the kernel path (normalised, parents' symlinks followed), "" for the root
    archive: int  # which archive, counting from 0 across all segments
    segment: Segment
    link_to: str | None = None  # a hard link: the path of the first member of its inode

    @property
    def renamed(self) -> bool:
        """The stored name is not the path the kernel unpacks it to."""
        return self.path != self.member.name

    @property
    def hidden(self) -> bool:
        """Lies after the first archive's trailer (a reader that stops there misses it)."""
        return self.archive > 0


class _Decompressor(Protocol):
    eof: bool
    unused_data: bytes

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _ZlibAdapter:
    """zlib's decompressobj with the bz2/lzma interface (``needs_input``)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._tail = b""

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._tail

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        # with input left over from the last call, no new input is passed (no copying)
        out = self._d.decompress(self._tail or data, max(max_length, 0))
        self._tail = self._d.unconsumed_tail
        return out


def _decompressor(method: str) -> _ZlibAdapter | bz2.BZ2Decompressor | lzma.LZMADecompressor:
    if method == "gzip":
        return _ZlibAdapter()
    if method == "bzip2":
        return bz2.BZ2Decompressor()
    if method == "xz":
        return lzma.LZMADecompressor(lzma.FORMAT_XZ)
    return lzma.LZMADecompressor(lzma.FORMAT_ALONE)


class _Inflate(io.RawIOBase):
    """One compressed segment's decompressed bytes, read from ``src``; what the
    decompressor does not consume is pushed back into ``src`` at the end."""

    def __init__(
        self,
        src: CountingReader,
        method: str,
        where: str,
        budget: ByteBudget | None,
        tee: IO[bytes] | None,
    ) -> None:
        super().__init__()
        self._src = src
        self._method = method
        self._where = where
        self._budget = budget
        self._tee = tee
        self._d = _decompressor(method)
        self._finished = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        want = len(view)
        if self._budget is not None:
            self._budget.check(self._where)
        while not self._finished:
            if self._d.eof:
                self._src.unread(self._d.unused_data)
                self._finished = True
                break
            try:
                if not self._d.needs_input:
                    out = self._d.decompress(b"", want)
                else:
                    chunk = self._src.read(CHUNK)
                    if not chunk:
                        raise UnreadableRamdisk(
                            f"{self._where}: {self._method} segment ends before its end marker"
                        )
                    out = self._d.decompress(chunk, want)
            except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                raise UnreadableRamdisk(
                    f"{self._where}: {self._method} segment is corrupt: {exc}"
                ) from None
            if out:
                if self._budget is not None:
                    self._budget.charge(len(out), self._where)
                if self._tee is not None:
                    self._tee.write(out)
                    self._tee.flush()  # members are re-read from it while it grows
                view[: len(out)] = out
                return len(out)
        return 0


def _skip_zeros(src: CountingReader) -> int:
    """Skip zero bytes; the count skipped."""
    total = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            return total
        rest = chunk.lstrip(b"\0")
        total += len(chunk) - len(rest)
        if rest:
            src.unread(rest)
            return total


def iter_initramfs(
    fileobj: IO[bytes],
    *,
    where: str = "ramdisk",
    budget: ByteBudget | None = None,
    spool_dir: Path | None = None,
    resolver: PathResolver | None = None,
    verify_checksums: bool = True,
) -> Iterator[Unpacked]:
    """Every member the kernel unpacks from this ramdisk, in unpack order.

    ``budget`` is charged with every decompressed byte (``LimitExceeded`` past it).
    With ``spool_dir``, the decompressed bytes of each compressed segment are kept in a
    file there (``Segment.store``) so members can be read again by offset.  Share one
    ``resolver`` across the ramdisks of one image: the kernel unpacks them into one
    root, in order.  Each member's ``data`` is valid until the next one is requested.
    """
    src = CountingReader(fileobj)
    resolver = resolver or PathResolver()
    archive = 0
    index = 0
    while True:
        head = src.peek(8)
        if not head:
            return
        offset = src.offset
        if head[:1] == b"\0":
            _skip_zeros(src)
            continue
        if head[:1] == b"0" and offset % 4 == 0:
            segment = Segment(index, offset, None)
            index += 1
            yield from _archive(src, segment, archive, resolver, verify_checksums)
            archive += 1
            continue
        method = compression_of(head)
        if method is None:
            raise UnreadableRamdisk(
                f"{where}: bytes at offset {offset} ({head[:8].hex()}) are neither an aligned"
                " cpio header nor a compressed segment (the kernel stops unpacking there)"
            )
        if method not in SUPPORTED:
            raise UnreadableRamdisk(
                f"{where}: {method}-compressed segment at offset {offset} cannot be"
                " decompressed here; its members were not inspected"
            )
        store: Path | None = None
        tee: IO[bytes] | None = None
        if spool_dir is not None:
            fd, name = tempfile.mkstemp(prefix="segment-", dir=spool_dir)
            store = Path(name)
            tee = os.fdopen(fd, "wb")
        segment = Segment(index, offset, method, store)
        index += 1
        seg_where = f"{where} {method} segment at offset {offset}"
        inflate = io.BufferedReader(_Inflate(src, method, seg_where, budget, tee), CHUNK)
        inner = CountingReader(inflate)
        try:
            while True:
                yield from _archive(inner, segment, archive, resolver, verify_checksums)
                archive += 1
                _skip_zeros(inner)
                nxt = inner.peek(1)
                if not nxt:
                    break
                if nxt != b"0":
                    raise UnreadableRamdisk(
                        f"{seg_where}: junk at decompressed offset {inner.offset}"
                        " (the kernel stops unpacking there)"
                    )
        finally:
            if tee is not None:
                tee.close()


def _archive(
    src: CountingReader,
    segment: Segment,
    archive: int,
    resolver: PathResolver,
    verify_checksums: bool,
) -> Iterator[Unpacked]:
    links: dict[tuple[int, int, int], str] = {}  # the kernel forgets them at each trailer
    for member in iter_archive(src, verify_checksums=verify_checksums):
        path = resolver.resolve(member.name)
        link_to: str | None = None
        if member.is_file and member.nlink >= 2:
            key = member.inode_key
            first = links.get(key)
            if first is None:
                links[key] = path
            elif first != path:
                link_to = first
        resolver.record(path, member)
        yield Unpacked(member, path, archive, segment, link_to)


# --- the end state -------------------------------------------------------------------------


@dataclass
class Inode:
    """What the kernel leaves at one or more paths once every archive is unpacked."""

    kind: EntryKind
    mode: int
    uid: int
    gid: int
    size: int
    link_target: str | None = None
    rdev: tuple[int, int] = (0, 0)
    #: every path naming this inode (hard links), in the order they were created
    names: list[str] = field(default_factory=list)
    #: where the last member that set its metadata came from (for messages)
    source: str = ""

    @property
    def perm(self) -> int:
        return stat.S_IMODE(self.mode)


class KernelView:
    """The end state of unpacking: path -> inode, with hard links sharing one inode.

    Apply every :class:`Unpacked` member in order (:meth:`apply`).  A later member at the
    same path replaces the earlier one; a directory over a directory keeps the directory
    and takes the new mode and owner; a hard link joins the first member's inode, and the
    link's own mode and owner become the inode's (the kernel chmods and chowns it).
    """

    def __init__(self) -> None:
        self.paths: dict[str, Inode] = {}

    def apply(self, item: Unpacked, source: str) -> Inode:
        m = item.member
        old = self.paths.get(item.path)
        inode: Inode | None = None
        if item.link_to is not None:
            linked = self.paths.get(item.link_to)
            if linked is not None and linked.kind is EntryKind.FILE:
                inode = linked
                inode.size = max(inode.size, m.size)  # written from offset 0, not truncated
        elif old is not None and old.kind is EntryKind.DIRECTORY and m.is_dir:
            inode = old
        if inode is None:
            inode = Inode(
                kind=m.kind,
                mode=m.mode,
                uid=m.uid,
                gid=m.gid,
                size=m.size,
                link_target=m.link_target,
                rdev=(m.rdev_major, m.rdev_minor),
            )
        inode.mode, inode.uid, inode.gid, inode.source = m.mode, m.uid, m.gid, source
        if old is not None and old is not inode and item.path in old.names:
            old.names.remove(item.path)
        if item.path not in inode.names:
            inode.names.append(item.path)
        self.paths[item.path] = inode
        return inode

    def inodes(self) -> list[Inode]:
        """Each inode once (in the order of its first name)."""
        seen: dict[int, Inode] = {}
        for inode in self.paths.values():
            seen.setdefault(id(inode), inode)
        return list(seen.values())
