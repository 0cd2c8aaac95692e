"""One read pass feeding every hasher an EIF needs, on both cores.

Every measured byte goes into two SHA-384 hashers: PCR0's (the whole image)
and either PCR1's (kernel, cmdline, first ramdisk) or PCR2's (later ramdisks).
A writer can also ask for the output file's own SHA-256 and SHA-384, fed every
byte (headers, metadata and signature included).  Each of those whole-stream
hashers runs in a worker thread (a "lane") fed through a queue; the calling
thread reads the file, writes the copy and runs the PCR1/PCR2 hasher and the
CRC.  hashlib and zlib release the GIL on large buffers, so the lanes share the
cores while memory stays at a few buffers: a buffer goes back to the pool when
the last lane is done with it.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import zlib
from dataclasses import dataclass
from enum import Enum
from typing import IO, Protocol

from builder.eif.pcr import tpm_extend
from enclave_audit.errors import EifTruncated
from enclave_audit.model.measurements import PcrSet
from enclave_audit.progress import NullProgress, ProgressSink

BUFFER_SIZE = 4 << 20
BUFFERS = 8


class Sink(Protocol):
    """Where a stream's bytes are copied to (a file, or a wrapper around one)."""

    def write(self, data: bytes | memoryview, /) -> int: ...


class Role(Enum):
    """Which PCRs a run of bytes belongs to."""

    BOOT = "boot"  # kernel, cmdline, first ramdisk: PCR0 and PCR1
    APP = "app"  # later ramdisks: PCR0 and PCR2
    UNMEASURED = "unmeasured"  # headers, metadata, signature: CRC only


@dataclass(frozen=True)
class OutputDigests:
    """SHA-256 and SHA-384 of every byte fed, in order (the written file)."""

    size: int
    sha256: bytes
    sha384: bytes


class _Chunk:
    """A run of bytes on its way through the lanes; its buffer is pooled again at zero."""

    __slots__ = ("buf", "pending", "view")

    def __init__(self, view: memoryview, buf: bytearray | None, pending: int) -> None:
        self.view = view
        self.buf = buf
        self.pending = pending


class _Lane:
    """A worker thread updating one hasher with every chunk it is given."""

    def __init__(self, name: str, hasher: hashlib._Hash, done: _Release) -> None:
        self._hasher = hasher
        self._queue: queue.Queue[_Chunk | None] = queue.Queue()
        self._done = done
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._stopped = False

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._hasher.update(chunk.view)
            self._done(chunk)

    def put(self, chunk: _Chunk) -> None:
        self._queue.put(chunk)

    def stop(self) -> None:
        if not self._stopped:
            self._queue.put(None)
            self._thread.join()
            self._stopped = True


class _Release:
    """Counts a chunk's consumers down and returns its buffer to the pool after the last."""

    def __init__(self, pool: queue.Queue[bytearray]) -> None:
        self._pool = pool
        self._lock = threading.Lock()

    def __call__(self, chunk: _Chunk) -> None:
        with self._lock:
            chunk.pending -= 1
            last = chunk.pending == 0
        if last and chunk.buf is not None:
            self._pool.put(chunk.buf)


class Measurer:
    """Accumulates PCR0/1/2 and a CRC-32 over bytes fed in file order.

    With ``output_digests`` it also hashes every byte fed (measured or not) with
    SHA-256 and SHA-384: the digests of the file being written, without reading
    it back.
    """

    def __init__(
        self, progress: ProgressSink | None = None, *, output_digests: bool = False
    ) -> None:
        self._pcr0 = hashlib.sha384()
        self._pcr1 = hashlib.sha384()
        self._pcr2 = hashlib.sha384()
        self._out256 = hashlib.sha256()
        self._out384 = hashlib.sha384()
        self.crc = 0
        self.size = 0
        self._progress = progress or NullProgress()
        self._pool: queue.Queue[bytearray] = queue.Queue()
        for _ in range(BUFFERS):
            self._pool.put(bytearray(BUFFER_SIZE))
        self._release = _Release(self._pool)
        self._measured = _Lane("pcr0-hasher", self._pcr0, self._release)
        self._whole: list[_Lane] = []
        if output_digests:
            self._whole = [
                _Lane("output-sha384", self._out384, self._release),
                _Lane("output-sha256", self._out256, self._release),
            ]
        self._output_digests = output_digests
        self._closed = False

    def _consume(self, view: memoryview, buf: bytearray | None, role: Role, crc: bool) -> None:
        lanes = list(self._whole)
        if role is not Role.UNMEASURED:
            lanes.append(self._measured)
        # the calling thread holds one claim on the chunk until its own work is done
        chunk = _Chunk(view, buf, len(lanes) + 1)
        for lane in lanes:
            lane.put(chunk)
        if role is not Role.UNMEASURED:
            (self._pcr1 if role is Role.BOOT else self._pcr2).update(view)
        if crc:
            self.crc = zlib.crc32(view, self.crc)
        self.size += len(view)
        self._release(chunk)

    def feed(self, data: bytes, role: Role, *, crc: bool = True) -> None:
        """Feed a small in-memory run of bytes (headers, cmdline, metadata)."""
        self._consume(memoryview(bytes(data)), None, role, crc)

    def stream(
        self,
        source: IO[bytes],
        length: int,
        role: Role,
        *,
        sink: Sink | None = None,
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
            # the lanes and this thread share ``buf``; the last one done pools it again
            self._consume(view, buf, role, crc)
            remaining -= got
            self._progress.advance(got)

    def finish(self) -> PcrSet:
        """Wait for the lanes and return PCR0/1/2."""
        self.close()
        return PcrSet(
            values={
                0: tpm_extend(self._pcr0.digest()),
                1: tpm_extend(self._pcr1.digest()),
                2: tpm_extend(self._pcr2.digest()),
            }
        )

    def output_digests(self) -> OutputDigests:
        """The digests of every byte fed (after :meth:`finish`)."""
        if not self._output_digests or not self._closed:
            raise RuntimeError("output digests need output_digests=True and finish()")
        return OutputDigests(self.size, self._out256.digest(), self._out384.digest())

    def close(self) -> None:
        """Stop the lanes (also on error paths, where results are not wanted)."""
        if not self._closed:
            for lane in (self._measured, *self._whole):
                lane.stop()
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
