"""The enclave's one NSM interface, over the real device or the simulator's socket.

``/dev/nsm`` (Nitro, QEMU's virtio-nsm) takes one ioctl, ``NSM_IOCTL_RAW`` =
``_IOWR(0x0A, 0, struct nsm_raw)`` = 0xC0200A00, where ``struct nsm_raw`` is two
``struct nsm_iovec { __u64 addr; __u64 len; }`` (request, response). In the
simulation there is no device: the launcher serves the same CBOR messages on a
Unix socket inside the enclave's root (4-byte big-endian length prefix each way).
Both transports carry the exact bytes of :mod:`enclave_runtime.nsm.protocol`.
Imports: standard library and cbor2 only (runs in the image).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from dataclasses import dataclass
from typing import Protocol

from enclave_runtime.errors import ProtocolError, ServiceUnavailable
from enclave_runtime.nsm import protocol

DEVICE = "/dev/nsm"
NSM_IOCTL_RAW = 0xC0200A00
#: where the launcher puts the simulated device inside the enclave's root
SOCKET_ENV = "ENCLAVE_NSM_SOCKET"
DEFAULT_SOCKET = "/run/enclave/nsm.sock"


class Transport(Protocol):
    def exchange(self, request: bytes) -> bytes: ...

    def close(self) -> None: ...


class DeviceTransport:
    """``/dev/nsm`` through ``NSM_IOCTL_RAW``."""

    def __init__(self, path: str = DEVICE) -> None:
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise ServiceUnavailable(f"cannot open {path}: {exc.strerror or exc}") from None
        self.path = path

    def exchange(self, request: bytes) -> bytes:
        if len(request) > protocol.MAX_REQUEST:
            raise ProtocolError(f"NSM request of {len(request)} bytes exceeds 4096")
        req = ctypes.create_string_buffer(request, len(request))
        resp = ctypes.create_string_buffer(protocol.MAX_RESPONSE)
        raw = bytearray(
            struct.pack(
                "=QQQQ",
                ctypes.addressof(req),
                len(request),
                ctypes.addressof(resp),
                protocol.MAX_RESPONSE,
            )
        )
        try:
            fcntl.ioctl(self._fd, NSM_IOCTL_RAW, raw, True)
        except OSError as exc:
            raise ServiceUnavailable(f"NSM ioctl failed: {exc.strerror or exc}") from None
        length = struct.unpack_from("=Q", raw, 24)[0]
        return resp.raw[: min(length, protocol.MAX_RESPONSE)]

    def close(self) -> None:
        os.close(self._fd)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ServiceUnavailable("simulated NSM closed the connection")
        buf += chunk
    return bytes(buf)


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def recv_frame(sock: socket.socket, limit: int) -> bytes:
    (length,) = struct.unpack(">I", _recv_exact(sock, 4))
    if length > limit:
        raise ProtocolError(f"NSM frame of {length} bytes exceeds {limit}")
    return _recv_exact(sock, length)


class SocketTransport:
    """The simulated device: the same CBOR messages over a Unix stream socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            raise ServiceUnavailable(f"cannot reach the simulated NSM at {path}: {exc}") from None

    def exchange(self, request: bytes) -> bytes:
        send_frame(self._sock, request)
        return recv_frame(self._sock, protocol.MAX_RESPONSE)

    def close(self) -> None:
        self._sock.close()


@dataclass(frozen=True)
class PcrState:
    locked: bool
    value: bytes


@dataclass(frozen=True)
class NsmDescription:
    version: tuple[int, int, int]
    module_id: str
    max_pcrs: int
    locked_pcrs: tuple[int, ...]
    digest: str


class NsmClient:
    """Typed NSM calls over any :class:`Transport`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> NsmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, request: bytes, name: str) -> dict[str, object]:
        return protocol.decode_response(self.transport.exchange(request), name)

    def describe_pcr(self, index: int) -> PcrState:
        fields = self._call(protocol.describe_pcr(index), "DescribePCR")
        lock, data = fields.get("lock"), fields.get("data")
        if not isinstance(lock, bool) or not isinstance(data, bytes):
            raise ProtocolError("NSM DescribePCR response lacks lock/data")
        return PcrState(lock, data)

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        fields = self._call(protocol.extend_pcr(index, data), "ExtendPCR")
        value = fields.get("data")
        if not isinstance(value, bytes):
            raise ProtocolError("NSM ExtendPCR response lacks data")
        return value

    def lock_pcr(self, index: int) -> None:
        self._call(protocol.lock_pcr(index), "LockPCR")

    def lock_pcrs(self, range_: int) -> None:
        self._call(protocol.lock_pcrs(range_), "LockPCRs")

    def describe_nsm(self) -> NsmDescription:
        f = self._call(protocol.describe_nsm(), "DescribeNSM")
        try:
            return NsmDescription(
                (int(f["version_major"]), int(f["version_minor"]), int(f["version_patch"])),  # type: ignore[call-overload]
                str(f["module_id"]),
                int(f["max_pcrs"]),  # type: ignore[call-overload]
                tuple(int(i) for i in f["locked_pcrs"]),  # type: ignore[attr-defined]
                str(f["digest"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("NSM DescribeNSM response malformed") from None

    def attestation(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        request = protocol.attestation(user_data=user_data, nonce=nonce, public_key=public_key)
        document = self._call(request, "Attestation").get("document")
        if not isinstance(document, bytes):
            raise ProtocolError("NSM Attestation response lacks the document")
        return document

    def get_random(self) -> bytes:
        value = self._call(protocol.get_random(), "GetRandom").get("random")
        if not isinstance(value, bytes):
            raise ProtocolError("NSM GetRandom response lacks random bytes")
        return value


def open_nsm(socket_path: str | None = None) -> NsmClient:
    """The device when it exists, else the simulated device's socket.

    ``socket_path`` (or ``$ENCLAVE_NSM_SOCKET``, or ``nsm.sock`` in
    ``$ENCLAVE_RUN_DIR``, default ``/run/enclave/nsm.sock``) is only used when
    there is no ``/dev/nsm``.
    """
    if socket_path is None and os.path.exists(DEVICE):
        return NsmClient(DeviceTransport(DEVICE))
    run_dir = os.environ.get("ENCLAVE_RUN_DIR")
    path = (
        socket_path
        or os.environ.get(SOCKET_ENV)
        or (os.path.join(run_dir, "nsm.sock") if run_dir else DEFAULT_SOCKET)
    )
    return NsmClient(SocketTransport(path))
