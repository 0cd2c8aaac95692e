"""One read pass feeding every hasher an EIF needs, on both cores.

Every measured byte goes into two SHA-384 hashers: PCR0's (the whole image)
and either PCR1's (kernel, cmdline, first ramdisk) or PCR2's (later ramdisks).
PCR0's hasher runs in a worker thread fed through a bounded queue; the calling
thread reads the file and runs the PCR1/PCR2 hasher and the CRC.  hashlib and
zlib release the GIL on large buffers, so the wall time approaches one SHA-384
pass while memory stays at a few buffers.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import zlib
from enum import Enum
from typing import IO

from builder.eif.pcr import tpm_extend
from enclave_audit.errors import EifTruncated
from enclave_audit.model.measurements import PcrSet
from enclave_audit.progress import NullProgress, ProgressSink

BUFFER_SIZE = 4 << 20
BUFFERS = 6


class Role(Enum):
    """Which PCRs a run of bytes belongs to."""

    BOOT = "boot"  # kernel, cmdline, first ramdisk: PCR0 and PCR1
    APP = "app"  # later ramdisks: PCR0 and PCR2
    UNMEASURED = "unmeasured"  # headers, metadata, signature: CRC only


_STOP = None


class Measurer:
    """Accumulates PCR0/1/2 and a CRC-32 over bytes fed in file order."""

    def __init__(self, progress: ProgressSink | None = None) -> None:
        self._pcr0 = hashlib.sha384()
        self._pcr1 = hashlib.sha384()
        self._pcr2 = hashlib.sha384()
        self.crc = 0
        self.crc_length = 0
        self._progress = progress or NullProgress()
        self._pool: queue.Queue[bytearray] = queue.Queue()
        for _ in range(BUFFERS):
            self._pool.put(bytearray(BUFFER_SIZE))
        self._work: queue.Queue[tuple[memoryview, bytearray | None] | None] = queue.Queue(
            maxsize=BUFFERS
        )
        self._worker = threading.Thread(target=self._run, name="pcr0-hasher", daemon=True)
        self._worker.start()
        self._closed = False

    def _run(self) -> None:
        while (item := self._work.get()) is not _STOP:
            view, buf = item
            self._pcr0.update(view)
            if buf is not None:
                self._pool.put(buf)

    def _consume(self, view: memoryview, buf: bytearray | None, role: Role, crc: bool) -> None:
        if role is not Role.UNMEASURED:
            self._work.put((view, buf))
            (self._pcr1 if role is Role.BOOT else self._pcr2).update(view)
        elif buf is not None:
            self._pool.put(buf)
        if crc:
            self.crc = zlib.crc32(view, self.crc)
            self.crc_length += len(view)

    def feed(self, data: bytes, role: Role, *, crc: bool = True) -> None:
        """Feed a small in-memory run of bytes (headers, cmdline, metadata)."""
        self._consume(memoryview(bytes(data)), None, role, crc)

    def stream(
        self,
        source: IO[bytes],
        length: int,
        role: Role,
        *,
        sink: IO[bytes] | None = None,
        crc: bool = True,
        what: str = "section",
    ) -> None:
        """Read exactly ``length`` bytes from ``source``, hash them, optionally copy to ``sink``."""
        remaining = length
        while remaining:
            buf = self._pool.get()
            want = min(remaining, BUFFER_SIZE)
            view = memoryview(buf)[:want]
            got = source.readinto(view)  # type: ignore[attr-defined]
            if not got:
                self._pool.put(buf)
                raise EifTruncated(f"{what}: input ended {remaining} bytes early")
            view = view[:got]
            if sink is not None:
                sink.write(view)
            # the worker returns ``buf`` to the pool; this thread is done with it
            # before it asks the pool for another buffer
            self._consume(view, buf, role, crc)
            remaining -= got
            self._progress.advance(got)

    def finish(self) -> PcrSet:
        """Wait for the worker and return PCR0/1/2."""
        if not self._closed:
            self._work.put(_STOP)
            self._worker.join()
            self._closed = True
        return PcrSet(
            values={
                0: tpm_extend(self._pcr0.digest()),
                1: tpm_extend(self._pcr1.digest()),
                2: tpm_extend(self._pcr2.digest()),
            }
        )

    def close(self) -> None:
        """Stop the worker without computing results (error paths)."""
        if not self._closed:
            self._work.put(_STOP)
            self._worker.join()
            self._closed = True


# --- CRC-32 combination (zlib's crc32_combine, which Python's zlib lacks) ---------

_CRC_POLY = 0xEDB88320


def _gf2_times(matrix: list[int], vec: int) -> int:
    total = 0
    i = 0
    while vec:
        if vec & 1:
            total ^= matrix[i]
        vec >>= 1
        i += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC of A||B from crc(A), crc(B) and len(B)."""
    if len2 <= 0:
        return crc1
    odd = [_CRC_POLY] + [1 << n for n in range(31)]  # operator for one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:
        even = _gf2_square(odd)
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2
