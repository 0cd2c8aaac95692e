"""Streaming newc reader: ``iter_members`` and a traversal-safe ``extract``.

The reader never loads a whole archive: it walks headers in order and hands out a
bounded reader for each member's data.  Whatever the caller leaves unread is
skipped.  Malformed archives raise :class:`~enclave_audit.errors.CpioError`.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from builder.initramfs.member import CpioMember
from builder.initramfs.newc import (
    HEADER_SIZE,
    MAGIC_CRC,
    MAX_LINK_TARGET,
    MAX_NAME,
    TRAILER,
    EntryKind,
    decode_header,
    kind_of_mode,
    pad4,
)
from enclave_audit.errors import CpioError
from enclave_audit.fsutil import open_input

_CHUNK = 1 << 20


class CountingReader:
    """Reads from a stream and keeps the offset (works on pipes too).

    Bytes can be pushed back (:meth:`unread`), so a reader can look ahead, or hand
    back what a decompressor did not consume.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.offset = 0
        self._back = b""

    def unread(self, data: bytes) -> None:
        if data:
            self._back = data + self._back
            self.offset -= len(data)

    def peek(self, n: int) -> bytes:
        data = self.read(n)
        self.unread(data)
        return data

    def read(self, n: int) -> bytes:
        parts: list[bytes] = []
        want = n
        if self._back and want > 0:
            taken = self._back[:want]
            self._back = self._back[want:]
            parts.append(taken)
            want -= len(taken)
        while want > 0:
            chunk = self._fh.read(want)
            if not chunk:
                break
            parts.append(chunk)
            want -= len(chunk)
        data = b"".join(parts)
        self.offset += len(data)
        return data

    def read_exact(self, n: int, what: str) -> bytes:
        start = self.offset
        data = self.read(n)
        if len(data) != n:
            raise CpioError(
                f"cpio archive truncated: {what} at offset {start} needs {n} bytes,"
                f" {len(data)} left"
            )
        return data

    def skip(self, n: int, what: str) -> None:
        while n > 0:
            got = len(self.read_exact(min(n, _CHUNK), what))
            n -= got


class _MemberData(io.RawIOBase):
    """A bounded view of one member's data in the underlying stream."""

    def __init__(self, src: CountingReader, size: int, name: str) -> None:
        super().__init__()
        self._src = src
        self._left = size
        self._name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        n = min(len(buffer), self._left)
        data = self._src.read_exact(n, f"data of {self._name!r}")
        buffer[:n] = data
        self._left -= n
        return n

    def drain(self) -> None:
        if self._left > 0:
            self._src.skip(self._left, f"data of {self._name!r}")
            self._left = 0


def _decode_name(raw: bytes, offset: int) -> str:
    if not raw.endswith(b"\0"):
        raise CpioError(f"cpio member at offset {offset}: name is not NUL-terminated")
    body = raw[:-1]
    if b"\0" in body:
        raise CpioError(f"cpio member at offset {offset}: name contains a NUL byte")
    return body.decode("utf-8", "surrogateescape")


def iter_members(fileobj: IO[bytes], *, verify_checksums: bool = True) -> Iterator[CpioMember]:
    """Yield every member of a newc archive up to (not including) its trailer.

    Each member's ``data`` stream is valid until the next member is requested.
    Symlink targets are read eagerly into ``link_target``.  For "070702" archives
    the data checksum is verified (when ``verify_checksums``) once the data has
    been passed over.
    """
    yield from iter_archive(CountingReader(fileobj), verify_checksums=verify_checksums)


def iter_archive(src: CountingReader, *, verify_checksums: bool = True) -> Iterator[CpioMember]:
    """The members of one archive read from ``src``, stopping after its trailer.

    Offsets (``header_offset``, ``data_offset``) are ``src`` offsets, so a caller that
    reads several archives from one stream (:mod:`builder.initramfs.unpack`) gets
    offsets into that stream.
    """
    while True:
        offset = src.offset
        head = src.read(HEADER_SIZE)
        if not head:
            raise CpioError(f"cpio archive ends at offset {offset} without a TRAILER!!! member")
        hdr = decode_header(head, offset=offset)
        if hdr.namesize == 0 or hdr.namesize > MAX_NAME + 1:
            raise CpioError(f"cpio member at offset {offset}: invalid name size {hdr.namesize}")
        name_raw = src.read_exact(hdr.namesize, "member name")
        src.skip(pad4(HEADER_SIZE + hdr.namesize), "name padding")
        name = _decode_name(name_raw, offset)
        if name == TRAILER:
            return
        kind = kind_of_mode(hdr.mode)
        if kind is None:
            raise CpioError(f"cpio member {name!r}: unknown file type in mode {hdr.mode:o}")
        if kind not in (EntryKind.FILE, EntryKind.SYMLINK) and hdr.filesize != 0:
            raise CpioError(
                f"cpio member {name!r}: a {kind.value} cannot carry {hdr.filesize} data bytes"
            )
        data_offset = src.offset
        link_target: str | None = None
        body: _MemberData | None = None
        if kind is EntryKind.SYMLINK:
            if hdr.filesize == 0 or hdr.filesize > MAX_LINK_TARGET:
                raise CpioError(f"cpio member {name!r}: symlink target size {hdr.filesize} invalid")
            raw_target = src.read_exact(hdr.filesize, f"symlink target of {name!r}")
            if b"\0" in raw_target.rstrip(b"\0"):
                raise CpioError(f"cpio member {name!r}: symlink target contains a NUL byte")
            link_target = raw_target.rstrip(b"\0").decode("utf-8", "surrogateescape")
            data_stream: IO[bytes] = io.BytesIO(raw_target)
        elif hdr.magic == MAGIC_CRC and verify_checksums and kind is EntryKind.FILE:
            # GNU cpio's "crc" format sums the data of regular files only
            body = _ChecksumReader(src, hdr.filesize, name, hdr.check)
            data_stream = io.BufferedReader(body, buffer_size=_CHUNK)
        else:
            body = _MemberData(src, hdr.filesize, name)
            data_stream = io.BufferedReader(body, buffer_size=_CHUNK)
        member = CpioMember(
            name=name,
            name_bytes=name_raw[:-1],
            kind=kind,
            mode=hdr.mode,
            ino=hdr.ino,
            uid=hdr.uid,
            gid=hdr.gid,
            nlink=hdr.nlink,
            mtime=hdr.mtime,
            size=hdr.filesize,
            dev_major=hdr.devmajor,
            dev_minor=hdr.devminor,
            rdev_major=hdr.rdevmajor,
            rdev_minor=hdr.rdevminor,
            check=hdr.check,
            header_offset=offset,
            data_offset=data_offset,
            link_target=link_target,
            data=data_stream,
        )
        yield member
        if body is not None:
            # bytes sitting in the BufferedReader were already taken from src
            body.drain()
        src.skip(pad4(hdr.filesize), f"data padding of {name!r}")


class _ChecksumReader(_MemberData):
    """Member data that verifies the 070702 byte-sum once fully passed."""

    def __init__(self, src: CountingReader, size: int, name: str, expected: int) -> None:
        super().__init__(src, size, name)
        self._sum = 0
        self._expected = expected
        self._checked = size == 0
        if self._checked and expected != 0:
            raise CpioError(f"cpio member {name!r}: checksum mismatch")

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = super().readinto(buffer)
        self._sum = (self._sum + sum(buffer[:n])) & 0xFFFFFFFF
        if n and self._left == 0:
            self._finish()
        return n

    def _finish(self) -> None:
        if not self._checked:
            self._checked = True
            if self._sum != self._expected:
                raise CpioError(f"cpio member {self._name!r}: checksum mismatch")

    def drain(self) -> None:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while self._left > 0:
            self.readinto(view)
        self._finish()


def list_members(path: Path) -> list[CpioMember]:
    """Every member's metadata (data streams are closed once the list is built)."""
    with open_input(path) as fh:
        return [_without_data(m) for m in iter_members(fh)]


def _without_data(member: CpioMember) -> CpioMember:
    return CpioMember(**{**member.__dict__, "data": None})


# --- extraction ---------------------------------------------------------------


@dataclass
class ExtractResult:
    """What :func:`extract` did: member count and what it declined to create."""

    members: int = 0
    skipped_devices: list[str] = field(default_factory=list)


def safe_relative(name: str) -> tuple[str, ...]:
    """Split a member name into path components, refusing anything that could escape.

    Leading ``/`` and ``./`` are dropped (the kernel unpacks names relative to the
    root); ``..`` components, empty names and NUL bytes are refused.
    """
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise CpioError(f"cpio member {name!r}: '..' in a member name is refused")
    return tuple(parts)


def _ensure_dirs(dest: Path, parts: tuple[str, ...], name: str) -> Path:
    """Create/verify the parent directories, refusing to pass through a symlink."""
    current = dest
    for part in parts:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise CpioError(f"cpio member {name!r}: refusing to write through symlink {current}")
        if not stat.S_ISDIR(st.st_mode):
            raise CpioError(f"cpio member {name!r}: parent {current} is not a directory")
    return current


def _remove_existing(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        return
    os.unlink(path)


def extract(
    ramdisk_path: Path,
    dest_dir: Path,
    *,
    devices: bool = False,
    preserve_owner: bool | None = None,
) -> ExtractResult:
    """Unpack a newc archive under ``dest_dir`` without ever writing outside it.

    Names are taken relative to ``dest_dir``; ``..`` is refused and no path is
    written through a symlink that an earlier member created.  Device nodes are
    created only with ``devices=True`` (needs root), otherwise they are skipped and
    listed.  Ownership is restored when ``preserve_owner`` (default: when root).
    Hard links (regular files sharing an inode) become hard links.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir.resolve()
    if preserve_owner is None:
        preserve_owner = os.geteuid() == 0
    result = ExtractResult()
    links: dict[tuple[int, int, int], Path] = {}
    dir_times: list[tuple[Path, int, int]] = []
    try:
        with open_input(ramdisk_path) as fh:
            for member in iter_members(fh):
                result.members += 1
                parts = safe_relative(member.name)
                if not parts:
                    if member.is_dir:
                        continue
                    raise CpioError(f"cpio member {member.name!r}: empty path for a {member.kind}")
                parent = _ensure_dirs(dest, parts[:-1], member.name)
                target = parent / parts[-1]
                _extract_one(member, target, links, devices, result)
                if not (member.is_device and not devices):
                    if preserve_owner:
                        os.lchown(target, member.uid, member.gid)
                    if member.is_dir:
                        dir_times.append((target, member.perm, member.mtime))
                    elif not member.is_symlink:
                        os.chmod(target, member.perm)
                        os.utime(target, (member.mtime, member.mtime))
                    elif os.utime in os.supports_follow_symlinks:
                        os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
    except OSError as exc:
        raise CpioError(f"cannot extract {ramdisk_path} into {dest_dir}: {exc}") from None
    for path, perm, mtime in reversed(dir_times):
        os.chmod(path, perm)
        os.utime(path, (mtime, mtime))
    return result


def _extract_one(
    member: CpioMember,
    target: Path,
    links: dict[tuple[int, int, int], Path],
    devices: bool,
    result: ExtractResult,
) -> None:
    kind = member.kind
    if kind is EntryKind.DIRECTORY:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            os.mkdir(target, 0o700)
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(target)
            os.mkdir(target, 0o700)
        return
    _remove_existing(target)
    if os.path.isdir(target) and not os.path.islink(target):
        raise CpioError(f"cpio member {member.name!r}: a directory already exists there")
    if kind is EntryKind.SYMLINK:
        assert member.link_target is not None
        os.symlink(member.link_target, target)
        return
    if kind is EntryKind.FILE:
        first = links.get(member.inode_key) if member.nlink > 1 else None
        if first is not None:
            os.link(first, target)
            flags = os.O_WRONLY | os.O_NOFOLLOW
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            if member.nlink > 1:
                links[member.inode_key] = target
        fd = os.open(target, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            assert member.data is not None
            while chunk := member.data.read(_CHUNK):
                out.write(chunk)
        return
    if kind in (EntryKind.CHAR_DEVICE, EntryKind.BLOCK_DEVICE):
        if not devices:
            result.skipped_devices.append(member.name)
            return
        os.mknod(
            target,
            member.perm | (stat.S_IFCHR if kind is EntryKind.CHAR_DEVICE else stat.S_IFBLK),
            os.makedev(member.rdev_major, member.rdev_minor),
        )
        return
    if kind is EntryKind.FIFO:
        os.mkfifo(target, member.perm)
        return
    # sockets cannot be created meaningfully from an archive; record nothing on disk
    result.skipped_devices.append(member.name)
