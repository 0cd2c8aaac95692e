"""EIF v4 byte layout: the 548-byte header and the 12-byte section headers.

All integers are big-endian.  See ``shared/specs/nitro.md`` section 1 for the
layout; this module only packs and unpacks, it does no IO.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b".eif"
CURRENT_VERSION = 4
SUPPORTED_VERSIONS = (2, 3, 4)
MAX_SECTIONS = 32
HEADER_SIZE = 548
SECTION_HEADER_SIZE = 12
CRC_OFFSET = 544
#: the CRC-32 field covers bytes [CRC_OFFSET, CRC_END); it is computed over every other byte
CRC_END = CRC_OFFSET + 4
DEFAULT_MEM = 1 << 30
DEFAULT_CPUS = 2
ARCH_ARM64 = 1
#: the spec caps the signature section at 32 KiB
MAX_SIGNATURE_SIZE = 32768
#: metadata and cmdline are read whole; anything bigger is not a real EIF
MAX_SMALL_SECTION = 1 << 20

_HEADER_HEAD = struct.Struct(">4sHHQQHH")  # magic, version, flags, mem, cpus, reserved, count
_TABLE = struct.Struct(f">{MAX_SECTIONS}Q")
_HEADER_TAIL = struct.Struct(">II")  # unused, crc
_SECTION = struct.Struct(">HHQ")


class SectionType(IntEnum):
    KERNEL = 1
    CMDLINE = 2
    RAMDISK = 3
    SIGNATURE = 4
    METADATA = 5

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class EifHeader:
    version: int
    flags: int
    default_mem: int
    default_cpus: int
    num_sections: int
    section_offsets: tuple[int, ...]
    section_sizes: tuple[int, ...]
    crc32: int
    reserved: int = 0
    unused: int = 0
    magic: bytes = MAGIC

    @property
    def arch(self) -> str:
        return "aarch64" if self.flags & ARCH_ARM64 else "x86_64"

    def pack(self) -> bytes:
        offsets = list(self.section_offsets) + [0] * (MAX_SECTIONS - len(self.section_offsets))
        sizes = list(self.section_sizes) + [0] * (MAX_SECTIONS - len(self.section_sizes))
        return b"".join(
            (
                _HEADER_HEAD.pack(
                    self.magic,
                    self.version,
                    self.flags,
                    self.default_mem,
                    self.default_cpus,
                    self.reserved,
                    self.num_sections,
                ),
                _TABLE.pack(*offsets),
                _TABLE.pack(*sizes),
                _HEADER_TAIL.pack(self.unused, self.crc32),
            )
        )

    @classmethod
    def unpack(cls, raw: bytes) -> EifHeader:
        assert len(raw) == HEADER_SIZE
        magic, version, flags, mem, cpus, reserved, count = _HEADER_HEAD.unpack_from(raw, 0)
        offsets = _TABLE.unpack_from(raw, _HEADER_HEAD.size)
        sizes = _TABLE.unpack_from(raw, _HEADER_HEAD.size + _TABLE.size)
        unused, crc = _HEADER_TAIL.unpack_from(raw, _HEADER_HEAD.size + 2 * _TABLE.size)
        return cls(
            version=version,
            flags=flags,
            default_mem=mem,
            default_cpus=cpus,
            num_sections=count,
            section_offsets=tuple(offsets),
            section_sizes=tuple(sizes),
            crc32=crc,
            reserved=reserved,
            unused=unused,
            magic=magic,
        )


def pack_section_header(section_type: SectionType, size: int) -> bytes:
    return _SECTION.pack(int(section_type), 0, size)


def unpack_section_header(raw: bytes) -> tuple[int, int, int]:
    """(type, flags, size) of a 12-byte section header."""
    return _SECTION.unpack(raw)


def crc_update(crc: int, data: bytes | memoryview) -> int:
    """CRC-32/ISO-HDLC as zlib computes it (what AWS and QEMU use)."""
    return zlib.crc32(data, crc)


def image_crc(data: bytes | bytearray | memoryview) -> int:
    """The header CRC of a whole image held in memory: every byte except the CRC field."""
    view = memoryview(data)
    return zlib.crc32(view[CRC_END:], zlib.crc32(view[:CRC_OFFSET]))


def restamp_crc(data: bytearray) -> None:
    """Write :func:`image_crc` into the header, so an edited image is well-formed again.

    For deliberate edits (the demo's tampered image, tests, fuzz corpora): the result
    is a consistent image whose measurements, not its CRC, show the change.
    """
    if len(data) < HEADER_SIZE:
        raise ValueError(f"an EIF is at least {HEADER_SIZE} bytes, got {len(data)}")
    data[CRC_OFFSET:CRC_END] = image_crc(data).to_bytes(4, "big")


@dataclass(frozen=True)
class EifSection:
    """One section as found in a file (offsets are absolute file offsets)."""

    index: int
    type: SectionType
    header_offset: int
    size: int

    @property
    def data_offset(self) -> int:
        return self.header_offset + SECTION_HEADER_SIZE

    @property
    def end(self) -> int:
        return self.data_offset + self.size
