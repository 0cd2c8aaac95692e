"""The untrusted transport: a control socket and a shared-memory bounce buffer.

Control frames are length-prefixed CBOR maps on a Unix stream socket.  Bulk
data never travels in a frame: the sender writes the ciphertext (or, in the
insecure baseline only, the plaintext) into its half of a shared-memory segment
and the frame says where.  The host can read and rewrite both, which is the
threat the channel's authentication answers.
"""

from __future__ import annotations

import mmap
import os
import re
import secrets
import socket
import struct
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import cbor2

from enclave_runtime import cbor
from enclave_runtime.errors import BridgeRefused, ProtocolError, ServiceUnavailable

MAX_FRAME = 1 << 20
#: bulk data moves in chunks of at most this many bytes (plus a 16-byte GCM tag)
CHUNK = 4 << 20
TAG = 16
REGION = CHUNK + TAG
_LEN = struct.Struct(">I")
_CREATED_HERE: set[str] = set()


def send_frame(sock: socket.socket, frame: dict[str, Any]) -> None:
    data = cbor2.dumps(frame)
    if len(data) > MAX_FRAME:
        raise ProtocolError("bridge frame too large")
    try:
        sock.sendall(_LEN.pack(len(data)) + data)
    except OSError as exc:
        raise ServiceUnavailable(f"bridge connection lost: {exc.strerror or exc}") from None


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    parts = bytearray()
    while len(parts) < n:
        try:
            chunk = sock.recv(n - len(parts))
        except OSError as exc:
            raise ServiceUnavailable(f"bridge connection lost: {exc.strerror or exc}") from None
        if not chunk:
            raise ServiceUnavailable("bridge connection closed by the peer")
        parts += chunk
    return bytes(parts)


def recv_frame(sock: socket.socket) -> dict[str, Any]:
    (length,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if length > MAX_FRAME:
        raise ProtocolError(f"bridge frame of {length} bytes exceeds {MAX_FRAME}")
    frame = cbor.loads(_recv_exact(sock, length), what="bridge frame", error=ProtocolError)
    if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
        raise ProtocolError("bridge frame lacks an op")
    if frame["op"] == "error":
        raise BridgeRefused(f"accelerator refused: {frame.get('message', 'unknown error')}")
    return frame


_FILE_NAME = re.compile(r"^file:(bridge-[0-9a-f]{32}\.buf)$")


class _FileSegment:
    """A file-backed mapping in a directory both sides see (the enclave's sandbox binds it)."""

    def __init__(self, path: Path, *, create: bool) -> None:
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            if create:
                os.ftruncate(fd, 2 * REGION)
            elif os.fstat(fd).st_size < 2 * REGION:
                raise ProtocolError("bounce buffer file is too small")
            self._map = mmap.mmap(fd, 2 * REGION)
        finally:
            os.close(fd)
        self.path = path
        self.name = f"file:{path.name}"
        self.size = 2 * REGION
        self.buf: memoryview | None = memoryview(self._map)

    def close(self) -> None:
        if self.buf is not None:
            self.buf.release()
            self.buf = None
            self._map.close()

    def unlink(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class BounceBuffer:
    """Two regions of one shared segment: enclave->device and device->enclave.

    The segment is POSIX shared memory, or a file mapping in a directory both sides
    see (``directory``): the enclave simulation runs in its own mount namespace, where
    the host's ``/dev/shm`` is not visible, so the launcher binds the accelerator's
    directory into it.
    """

    shm: shared_memory.SharedMemory | _FileSegment
    owner: bool
    high_water: tuple[int, int] = field(default=(0, 0))  # bytes ever written or read

    @classmethod
    def create(cls, directory: Path | None = None) -> BounceBuffer:
        if directory is not None:
            path = Path(directory) / f"bridge-{secrets.token_hex(16)}.buf"
            return cls(_FileSegment(path, create=True), owner=True)
        shm = shared_memory.SharedMemory(create=True, size=2 * REGION)
        _CREATED_HERE.add(shm.name)
        return cls(shm, owner=True)

    @classmethod
    def attach(cls, name: str, directory: Path | None = None) -> BounceBuffer:
        if name.startswith("file:"):
            match = _FILE_NAME.match(name)
            if match is None or directory is None:
                raise ProtocolError(f"bounce buffer {name[:60]!r} is not a buffer file name")
            try:
                return cls(
                    _FileSegment(Path(directory) / match.group(1), create=False), owner=False
                )
            except OSError as exc:
                raise ProtocolError(f"bounce buffer {name!r}: {exc.strerror or exc}") from None
        try:
            shm = shared_memory.SharedMemory(name=name)
        except (FileNotFoundError, ValueError) as exc:
            raise ProtocolError(f"bounce buffer {name!r} cannot be attached: {exc}") from None
        if shm.size < 2 * REGION:
            shm.close()
            raise ProtocolError("bounce buffer is too small")
        # attaching must not register another process's segment for cleanup here
        if name in _CREATED_HERE:
            return cls(shm, owner=False)
        try:
            from multiprocessing import resource_tracker

            resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        except (ImportError, AttributeError, KeyError):
            pass
        return cls(shm, owner=False)

    @property
    def name(self) -> str:
        return self.shm.name

    def _base(self, to_device: bool) -> int:
        return 0 if to_device else REGION

    def write(self, to_device: bool, data: bytes) -> int:
        if len(data) > REGION:
            raise ProtocolError(f"{len(data)} bytes do not fit the bounce buffer region")
        base = self._base(to_device)
        assert self.shm.buf is not None
        self.shm.buf[base : base + len(data)] = data
        e2d, d2e = self.high_water
        self.high_water = (max(e2d, len(data)), d2e) if to_device else (e2d, max(d2e, len(data)))
        return len(data)

    def read(self, to_device: bool, length: int) -> bytes:
        if not 0 <= length <= REGION:
            raise ProtocolError(f"bad bounce-buffer length {length}")
        base = self._base(to_device)
        assert self.shm.buf is not None
        e2d, d2e = self.high_water
        self.high_water = (max(e2d, length), d2e) if to_device else (e2d, max(d2e, length))
        return bytes(self.shm.buf[base : base + length])

    def snapshot(self) -> bytes:
        """Every byte this side has used, as the host sees it now (tests search it)."""
        assert self.shm.buf is not None
        e2d, d2e = self.high_water
        return bytes(self.shm.buf[:e2d]) + bytes(self.shm.buf[REGION : REGION + d2e])

    def close(self) -> None:
        self.shm.close()
        if self.owner:
            _CREATED_HERE.discard(self.shm.name)
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass
