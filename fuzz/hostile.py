"""Hostile inputs shared by the hardening tests and the fuzz seeds.

EIFs whose (unmeasured, unsigned) metadata section holds what makes JSON readers
fail: an integer longer than Python will print (4,300 digits), nesting deeper than
the recursion limit, a lone surrogate, a duplicated key.  The CRC is recomputed, so
only the metadata is wrong.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path

#: metadata values (JSON text) put where the DockerInfo value was
METADATA_VALUES = {
    "big-integer": b"1" * 4400,
    "deep-nesting": b"[" * 2400 + b"]" * 2400,
    "lone-surrogate": b'"\\ud800"',
    "duplicate-key": b'{"a":1,"a":2}',
    "nan": b"NaN",
}
_PLACEHOLDER = "X" * 5000


def fix_crc(data: bytes) -> bytes:
    """Recompute the EIF header CRC (bytes 544..548 over everything else)."""
    crc = zlib.crc32(data[:544] + data[548:])
    return data[:544] + crc.to_bytes(4, "big") + data[548:]


def eif_with_metadata(folder: Path, kind: str) -> Path:
    """A small EIF whose metadata section carries ``METADATA_VALUES[kind]``."""
    from builder.eif import write_eif

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    kernel, ramdisk = folder / "hostile-kernel", folder / "hostile-ramdisk"
    kernel.write_bytes(rng.randbytes(4096))
    ramdisk.write_bytes(rng.randbytes(2048))
    path = folder / f"metadata-{kind}.eif"
    write_eif(
        path,
        kernel=kernel,
        cmdline="console=ttyS0",
        ramdisks=[ramdisk],
        name="hostile",
        version="1",
        build_time="2025-01-01T00:00:00+00:00",
        docker_info={"n": _PLACEHOLDER},
    )
    data = path.read_bytes()
    old = b'"' + _PLACEHOLDER.encode() + b'"'
    new = METADATA_VALUES[kind].ljust(len(old), b" ")
    assert data.count(old) == 1 and len(new) == len(old)
    path.write_bytes(fix_crc(data.replace(old, new)))
    return path
