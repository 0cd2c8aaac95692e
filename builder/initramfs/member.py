"""Typed cpio members as the reader yields them."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import IO

from builder.initramfs.newc import EntryKind, kind_of_mode


@dataclass(frozen=True)
class CpioMember:
    """One member of a newc archive: its header fields, where its data lies, and a reader.

    ``data`` reads this member's bytes; it is valid only until the iteration that
    produced the member moves on.  ``data_offset`` is the byte offset of the data in
    the archive, usable for random access on a seekable file.
    """

    name: str
    name_bytes: bytes
    kind: EntryKind
    mode: int
    ino: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    size: int
    dev_major: int
    dev_minor: int
    rdev_major: int
    rdev_minor: int
    check: int
    header_offset: int
    data_offset: int
    link_target: str | None = None
    data: IO[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def perm(self) -> int:
        """Permission bits including setuid/setgid/sticky (``mode & 0o7777``)."""
        return stat.S_IMODE(self.mode)

    @property
    def is_file(self) -> bool:
        return self.kind is EntryKind.FILE

    @property
    def is_dir(self) -> bool:
        return self.kind is EntryKind.DIRECTORY

    @property
    def is_symlink(self) -> bool:
        return self.kind is EntryKind.SYMLINK

    @property
    def is_device(self) -> bool:
        return self.kind in (EntryKind.CHAR_DEVICE, EntryKind.BLOCK_DEVICE)

    @property
    def inode_key(self) -> tuple[int, int, int]:
        """What identifies one inode across hard links: (dev major, dev minor, ino)."""
        return (self.dev_major, self.dev_minor, self.ino)


def kind_of(mode: int) -> EntryKind | None:
    return kind_of_mode(mode)
