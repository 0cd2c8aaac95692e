"""The newc ("070701") cpio header: field layout, encoding and decoding.

A newc member is a 110-byte ASCII header (magic plus thirteen 8-digit hex
fields), the NUL-terminated name padded to a multiple of four bytes, then the
data padded the same way.  The "070702" variant carries a checksum of the
data; the reader accepts both, the writer emits only 070701 as the kernel's
``gen_init_cpio`` and nitro-cli do.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from enum import StrEnum

from enclave_audit.errors import CpioError

MAGIC_NEWC = b"070701"
MAGIC_CRC = b"070702"
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
#: Linux PATH_MAX: longer names are refused by the reader.
MAX_NAME = 4096
#: symlink targets longer than this are refused (Linux PATH_MAX too).
MAX_LINK_TARGET = 4096
FIELDS = (
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
)
_MAX_FIELD = 0xFFFFFFFF


class EntryKind(StrEnum):
    """What a member is, from the file-type bits of its mode."""

    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    CHAR_DEVICE = "char-device"
    BLOCK_DEVICE = "block-device"
    FIFO = "fifo"
    SOCKET = "socket"


_TYPE_BITS: dict[EntryKind, int] = {
    EntryKind.FILE: stat.S_IFREG,
    EntryKind.DIRECTORY: stat.S_IFDIR,
    EntryKind.SYMLINK: stat.S_IFLNK,
    EntryKind.CHAR_DEVICE: stat.S_IFCHR,
    EntryKind.BLOCK_DEVICE: stat.S_IFBLK,
    EntryKind.FIFO: stat.S_IFIFO,
    EntryKind.SOCKET: stat.S_IFSOCK,
}
_KIND_OF_BITS = {bits: kind for kind, bits in _TYPE_BITS.items()}


def type_bits(kind: EntryKind) -> int:
    return _TYPE_BITS[kind]


def kind_of_mode(mode: int) -> EntryKind | None:
    """The kind for a full st_mode value, or None for unknown type bits."""
    return _KIND_OF_BITS.get(stat.S_IFMT(mode))


def pad4(n: int) -> int:
    """Bytes of padding after ``n`` bytes to reach a multiple of four."""
    return (-n) % 4


@dataclass(frozen=True)
class RawHeader:
    """The thirteen numeric fields of a newc header, unvalidated beyond their syntax."""

    magic: bytes
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    filesize: int
    devmajor: int
    devminor: int
    rdevmajor: int
    rdevminor: int
    namesize: int
    check: int

    def encode(self) -> bytes:
        values = [getattr(self, name) for name in FIELDS]
        for name, value in zip(FIELDS, values, strict=True):
            if not 0 <= value <= _MAX_FIELD:
                raise CpioError(f"cpio header field {name}={value} does not fit in 32 bits")
        return self.magic + b"".join(b"%08X" % v for v in values)


def decode_header(raw: bytes, *, offset: int) -> RawHeader:
    """Parse a 110-byte header read at ``offset`` (for error messages)."""
    magic = raw[:6]
    if (len(magic) == 6 and magic not in (MAGIC_NEWC, MAGIC_CRC)) or raw[:2] == b"\x1f\x8b":
        hint = ""
        if raw[:2] == b"\x1f\x8b":
            hint = " (gzip-compressed; decompress it first)"
        elif raw[:6] == b"070707":
            hint = " (old portable ASCII format, not newc)"
        raise CpioError(f"not a newc cpio member at offset {offset}: magic {magic!r}{hint}")
    if len(raw) < HEADER_SIZE:
        raise CpioError(f"cpio archive truncated: header at offset {offset} is incomplete")
    values: list[int] = []
    for i, name in enumerate(FIELDS):
        text = raw[6 + 8 * i : 14 + 8 * i]
        try:
            if not all(c in b"0123456789abcdefABCDEF" for c in text):
                raise ValueError(text)
            values.append(int(text, 16))
        except ValueError:
            raise CpioError(
                f"cpio header at offset {offset}: field {name} is not hexadecimal: {text!r}"
            ) from None
    return RawHeader(magic, *values)
