"""A vhost-user vsock backend in Python: QEMU's ``nitro-enclave`` machine needs one.

QEMU refuses to start the machine without a live vhost-user backend behind its
``vsock=`` chardev, and rust-vmm's ``vhost-device-vsock`` cannot be installed here.
This backend speaks the vhost-user protocol (QEMU ``docs/interop/vhost-user.rst``)
over a Unix socket, maps the guest memory QEMU passes as file descriptors
(``SET_MEM_TABLE`` with ``SCM_RIGHTS``), and runs the three virtio-vsock
virtqueues (rx 0, tx 1, event 2; split rings, no event index, no indirect
descriptors), so the guest's ``AF_VSOCK`` stream sockets reach the host:

* guest -> host: a guest ``connect(cid, port)`` to any CID other than its own is
  accepted when a Unix socket ``<uds_path>_<port>`` is listening on the host
  (the ``vhost-device-vsock`` convention), refused with RST otherwise;
* host -> guest: a host program connects to ``<uds_path>``, writes
  ``CONNECT <port>\\n`` and reads ``OK <host port>\\n``; after that the Unix stream
  is the vsock stream (Firecracker's and vhost-device-vsock's convention).

Credit-based flow control follows the virtio specification (5.10.6.3): we
advertise ``buf_alloc`` and ``fwd_cnt`` in every header and never send the guest
more than its advertised free space.  Memory ordering relies on x86's
total-store-order: descriptors and used entries are written before the index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import mmap
import os
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from enclave_audit.errors import EnvironmentProblem, ProtocolError

# --- vhost-user protocol -------------------------------------------------------

GET_FEATURES = 1
SET_FEATURES = 2
SET_OWNER = 3
RESET_OWNER = 4
SET_MEM_TABLE = 5
SET_LOG_BASE = 6
SET_LOG_FD = 7
SET_VRING_NUM = 8
SET_VRING_ADDR = 9
SET_VRING_BASE = 10
GET_VRING_BASE = 11
SET_VRING_KICK = 12
SET_VRING_CALL = 13
SET_VRING_ERR = 14
GET_PROTOCOL_FEATURES = 15
SET_PROTOCOL_FEATURES = 16
GET_QUEUE_NUM = 17
SET_VRING_ENABLE = 18
GET_CONFIG = 24
SET_CONFIG = 25

REQUEST_NAMES = {
    value: name
    for name, value in globals().items()
    if name.isupper() and isinstance(value, int) and name.startswith(("GET_", "SET_", "RESET_"))
}

HEADER = struct.Struct("<III")  # request, flags, size
FLAG_VERSION = 0x1
FLAG_REPLY = 0x4
MAX_PAYLOAD = 4096
MAX_FDS = 32

VIRTIO_F_VERSION_1 = 1 << 32
VHOST_USER_F_PROTOCOL_FEATURES = 1 << 30
PROTOCOL_F_CONFIG = 1 << 9
#: What we offer: QEMU's vhost-user-vsock refuses a backend without CONFIG.
DEVICE_FEATURES = VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES
PROTOCOL_FEATURES = PROTOCOL_F_CONFIG

VRING_NOFD = 0x100
VRING_IDX_MASK = 0xFF

# --- virtio split rings -----------------------------------------------------------

DESC = struct.Struct("<QIHH")  # addr, len, flags, next
DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
RX_QUEUE, TX_QUEUE, EVENT_QUEUE = 0, 1, 2

# --- virtio-vsock -----------------------------------------------------------------

VSOCK_HDR = struct.Struct("<QQIIIHHIII")
TYPE_STREAM = 1
OP_REQUEST = 1
OP_RESPONSE = 2
OP_RST = 3
OP_SHUTDOWN = 4
OP_RW = 5
OP_CREDIT_UPDATE = 6
OP_CREDIT_REQUEST = 7
SHUTDOWN_RCV = 1
SHUTDOWN_SEND = 2

#: The parent instance's CID as an enclave sees it.
PARENT_CID = 3
BUF_ALLOC = 256 * 1024
MAX_PKT_PAYLOAD = 64 * 1024


@dataclass(frozen=True)
class VsockPacket:
    src_cid: int
    dst_cid: int
    src_port: int
    dst_port: int
    op: int
    flags: int = 0
    buf_alloc: int = BUF_ALLOC
    fwd_cnt: int = 0
    payload: bytes = b""
    type: int = TYPE_STREAM

    def pack(self) -> bytes:
        return (
            VSOCK_HDR.pack(
                self.src_cid,
                self.dst_cid,
                self.src_port,
                self.dst_port,
                len(self.payload),
                self.type,
                self.op,
                self.flags,
                self.buf_alloc,
                self.fwd_cnt,
            )
            + self.payload
        )

    @classmethod
    def unpack(cls, data: bytes) -> VsockPacket:
        if len(data) < VSOCK_HDR.size:
            raise ProtocolError(f"vsock packet of {len(data)} bytes is shorter than its header")
        (src_cid, dst_cid, src_port, dst_port, length, type_, op, flags, buf_alloc, fwd_cnt) = (
            VSOCK_HDR.unpack_from(data)
        )
        payload = data[VSOCK_HDR.size : VSOCK_HDR.size + length]
        if len(payload) != length:
            raise ProtocolError(f"vsock packet says {length} payload bytes, carries {len(payload)}")
        return cls(
            src_cid, dst_cid, src_port, dst_port, op, flags, buf_alloc, fwd_cnt, payload, type_
        )


@dataclass
class _Region:
    guest_phys: int
    size: int
    user_addr: int
    offset: int
    mem: mmap.mmap


@dataclass
class _Vring:
    index: int
    num: int = 0
    desc: int = 0  # QEMU user addresses until translated
    avail: int = 0
    used: int = 0
    last_avail: int = 0
    used_idx: int = 0
    kick: int | None = None
    call: int | None = None
    enabled: bool = False
    started: bool = False


@dataclass
class _Conn:
    """One vsock stream: the guest's (cid, port) and ours, and the host Unix socket."""

    guest_port: int
    local_cid: int
    local_port: int
    sock: socket.socket
    established: bool = False
    peer_buf_alloc: int = 0
    peer_fwd_cnt: int = 0
    tx_cnt: int = 0  # payload bytes we sent to the guest
    fwd_cnt: int = 0  # payload bytes from the guest written to the host socket
    reported_fwd: int = 0
    host_eof: bool = False
    guest_shut: int = 0
    connect_reply: bool = False  # host-initiated: answer "OK <port>" when established
    pending_out: bytearray = field(default_factory=bytearray)

    def peer_credit(self) -> int:
        return self.peer_buf_alloc - (self.tx_cnt - self.peer_fwd_cnt)


@dataclass
class BackendStats:
    requests: list[str] = field(default_factory=list)
    features_acked: int = 0
    device_started: bool = False
    tx_packets: int = 0
    rx_packets: int = 0
    connections: int = 0


class VhostUserVsock:
    """The backend.  Use as a context manager: it listens on ``socket_path`` at once.

    ``uds_path`` enables the data path (see the module docstring); without it the
    backend still completes the device start but refuses every guest connection.
    ``forward`` maps guest ports to host Unix socket paths on which the backend
    listens: every connection accepted there becomes a vsock stream to that guest
    port with no ``CONNECT`` line (for programs that only know Unix sockets, such
    as a proxy relaying clients to the enclave's listener).
    """

    def __init__(
        self,
        socket_path: Path,
        *,
        guest_cid: int = 16,
        uds_path: Path | None = None,
        forward: Mapping[int, Path] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.guest_cid = guest_cid
        self.uds_path = Path(uds_path) if uds_path is not None else None
        self.forward = {int(port): Path(path) for port, path in (forward or {}).items()}
        self._forward_listeners: dict[socket.socket, int] = {}
        self.stats = BackendStats()
        self.error: str | None = None
        self._log = log or (lambda _msg: None)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._host_listener: socket.socket | None = None
        self._front: socket.socket | None = None
        self._regions: list[_Region] = []
        self._rings = [_Vring(i) for i in range(3)]
        self._protocol_acked = False
        self._rx_pending: deque[VsockPacket] = deque()
        self._conns: dict[tuple[int, int], _Conn] = {}  # (guest_port, local_port)
        self._host_handshakes: dict[socket.socket, bytearray] = {}
        self._next_local_port = 1024

    # --- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> VhostUserVsock:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _paths(self) -> list[Path]:
        extra = [self.uds_path] if self.uds_path is not None else []
        return [self.socket_path, *extra, *self.forward.values()]

    def start(self) -> None:
        for path in self._paths():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        try:
            self._listener = _listen(self.socket_path)
            if self.uds_path is not None:
                self._host_listener = _listen(self.uds_path)
            for port, path in self.forward.items():
                self._forward_listeners[_listen(path)] = port
        except OSError as exc:
            self._close_all()
            raise EnvironmentProblem(
                f"vhost-user vsock backend cannot listen on {self.socket_path}: {exc.strerror}"
            ) from None
        self._sel.register(self._listener, selectors.EVENT_READ, self._accept_front)
        if self._host_listener is not None:
            self._sel.register(self._host_listener, selectors.EVENT_READ, self._accept_host)
        for listener in self._forward_listeners:
            self._sel.register(listener, selectors.EVENT_READ, self._accept_forward)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._serve, name="vhost-user-vsock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._close_all()

    def _close_all(self) -> None:
        for conn in list(self._conns.values()):
            self._drop(conn)
        for sock in list(self._host_handshakes):
            self._unregister(sock)
            sock.close()
        self._host_handshakes.clear()
        self._reset_device()
        for s in (self._front, self._listener, self._host_listener):
            if s is not None:
                self._unregister(s)
                s.close()
        self._front = self._listener = self._host_listener = None
        for listener in self._forward_listeners:
            self._unregister(listener)
            listener.close()
        self._forward_listeners.clear()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        with contextlib.suppress(Exception):
            self._sel.close()
        for path in self._paths():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _unregister(self, fileobj: socket.socket | int) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(fileobj)

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                for key, _mask in self._sel.select(timeout=0.5):
                    if self._stop.is_set():
                        break
                    handler = key.data
                    if handler is not None:
                        handler(key.fileobj)
        except (ProtocolError, OSError, struct.error, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self._log(f"vhost-user backend stopped: {self.error}")

    # --- front end (QEMU) ---------------------------------------------------------

    def _accept_front(self, listener: object) -> None:
        assert self._listener is not None
        conn, _ = self._listener.accept()
        if self._front is not None:  # one front end at a time
            conn.close()
            return
        self._front = conn
        self._sel.register(conn, selectors.EVENT_READ, self._on_front)

    def _on_front(self, sock: object) -> None:
        assert self._front is not None
        try:
            msg = _recv_message(self._front)
        except ProtocolError as exc:
            self._log(f"front end: {exc}")
            msg = None
        if msg is None:  # QEMU went away; be ready for a new one
            self._unregister(self._front)
            self._front.close()
            self._front = None
            self._reset_device()
            return
        request, _flags, payload, fds = msg
        try:
            self._dispatch(request, payload, fds)
        finally:
            for fd in fds:
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def _reply(self, request: int, payload: bytes) -> None:
        assert self._front is not None
        self._front.sendall(HEADER.pack(request, FLAG_VERSION | FLAG_REPLY, len(payload)) + payload)

    def _dispatch(self, request: int, payload: bytes, fds: list[int]) -> None:
        name = REQUEST_NAMES.get(request, str(request))
        self.stats.requests.append(name)
        if request == GET_FEATURES:
            self._reply(request, struct.pack("<Q", DEVICE_FEATURES))
        elif request == SET_FEATURES:
            (self.stats.features_acked,) = struct.unpack_from("<Q", payload)
            self._protocol_acked = bool(self.stats.features_acked & VHOST_USER_F_PROTOCOL_FEATURES)
        elif request == GET_PROTOCOL_FEATURES:
            self._reply(request, struct.pack("<Q", PROTOCOL_FEATURES))
        elif request == GET_QUEUE_NUM:
            self._reply(request, struct.pack("<Q", 3))
        elif request == GET_CONFIG:
            offset, size, cfg_flags = struct.unpack_from("<III", payload)
            config = struct.pack("<Q", self.guest_cid).ljust(max(size + offset, 8), b"\0")
            body = config[offset : offset + size]
            self._reply(request, struct.pack("<III", offset, size, cfg_flags) + body)
        elif request == SET_MEM_TABLE:
            self._set_mem_table(payload, fds)
            # mapped regions keep their own reference; the caller closes the fds
        elif request == SET_VRING_NUM:
            index, num = struct.unpack_from("<II", payload)
            self._ring(index).num = num
        elif request == SET_VRING_ADDR:
            index, _flags, desc, used, avail, _log = struct.unpack_from("<IIQQQQ", payload)
            ring = self._ring(index)
            ring.desc, ring.used, ring.avail = desc, used, avail
        elif request == SET_VRING_BASE:
            index, base = struct.unpack_from("<II", payload)
            ring = self._ring(index)
            ring.last_avail = ring.used_idx = base
        elif request == GET_VRING_BASE:
            index, _ = struct.unpack_from("<II", payload)
            ring = self._ring(index)
            self._stop_ring(ring)
            self._reply(request, struct.pack("<II", index, ring.last_avail & 0xFFFF))
        elif request in (SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR):
            (value,) = struct.unpack_from("<Q", payload)
            ring = self._ring(value & VRING_IDX_MASK)
            fd = None if value & VRING_NOFD or not fds else os.dup(fds[0])
            if request == SET_VRING_KICK:
                self._set_kick(ring, fd)
            elif request == SET_VRING_CALL:
                if ring.call is not None:
                    os.close(ring.call)
                ring.call = fd
            elif fd is not None:
                os.close(fd)
        elif request == SET_VRING_ENABLE:
            index, enable = struct.unpack_from("<II", payload)
            ring = self._ring(index)
            ring.enabled = bool(enable)
            if ring.enabled:
                self._process_ring(ring)
        elif request == RESET_OWNER:
            self._reset_device()
        # SET_OWNER, SET_PROTOCOL_FEATURES, SET_CONFIG, SET_LOG_*: nothing to do

    def _ring(self, index: int) -> _Vring:
        if not 0 <= index < len(self._rings):
            raise ProtocolError(f"vhost-user: vring index {index} out of range for vsock")
        return self._rings[index]

    def _set_mem_table(self, payload: bytes, fds: list[int]) -> None:
        (count,) = struct.unpack_from("<I", payload)
        if count != len(fds):
            raise ProtocolError(f"SET_MEM_TABLE: {count} regions but {len(fds)} descriptors")
        self._unmap()
        for i in range(count):
            gpa, size, uaddr, offset = struct.unpack_from("<QQQQ", payload, 8 + 32 * i)
            mem = mmap.mmap(fds[i], size + offset, mmap.MAP_SHARED)
            self._regions.append(_Region(gpa, size, uaddr, offset, mem))

    def _unmap(self) -> None:
        for region in self._regions:
            with contextlib.suppress(BufferError, ValueError):
                region.mem.close()
        self._regions = []

    def _set_kick(self, ring: _Vring, fd: int | None) -> None:
        if ring.kick is not None:
            self._unregister(ring.kick)
            os.close(ring.kick)
        ring.kick = fd
        if fd is None:
            return
        ring.started = True
        if not self._protocol_acked:
            ring.enabled = True
        if all(r.started for r in self._rings[:2]):
            self.stats.device_started = True  # latched: "the guest's driver came up"
        self._sel.register(fd, selectors.EVENT_READ, lambda _f, r=ring: self._on_kick(r))
        self._process_ring(ring)

    def _stop_ring(self, ring: _Vring) -> None:
        if ring.kick is not None:
            self._unregister(ring.kick)
            os.close(ring.kick)
            ring.kick = None
        ring.started = False
        ring.enabled = False

    def _reset_device(self) -> None:
        for ring in self._rings:
            self._stop_ring(ring)
            if ring.call is not None:
                with contextlib.suppress(OSError):
                    os.close(ring.call)
            self._rings[ring.index] = _Vring(ring.index)
        self._rx_pending.clear()
        for conn in list(self._conns.values()):
            self._drop(conn)
        self._unmap()

    # --- guest memory and rings -----------------------------------------------------

    def _gpa(self, addr: int, length: int) -> tuple[mmap.mmap, int]:
        for r in self._regions:
            if r.guest_phys <= addr and addr + length <= r.guest_phys + r.size:
                return r.mem, r.offset + addr - r.guest_phys
        raise ProtocolError(f"guest address {addr:#x}+{length} is outside the memory table")

    def _uva(self, addr: int, length: int) -> tuple[mmap.mmap, int]:
        for r in self._regions:
            if r.user_addr <= addr and addr + length <= r.user_addr + r.size:
                return r.mem, r.offset + addr - r.user_addr
        raise ProtocolError(f"ring address {addr:#x}+{length} is outside the memory table")

    def _on_kick(self, ring: _Vring) -> None:
        assert ring.kick is not None
        try:
            os.read(ring.kick, 8)
        except BlockingIOError:
            pass
        self._process_ring(ring)

    def _ready(self, ring: _Vring) -> bool:
        return ring.started and ring.enabled and ring.num > 0 and bool(self._regions)

    def _avail_idx(self, ring: _Vring) -> int:
        mem, off = self._uva(ring.avail, 4)
        return int(struct.unpack_from("<H", mem, off + 2)[0])

    def _pop(self, ring: _Vring) -> tuple[int, list[tuple[int, int, int]]] | None:
        """Next available chain: (head, [(addr, len, flags)...]) or None."""
        if ring.last_avail == self._avail_idx(ring):
            return None
        mem, off = self._uva(ring.avail, 4 + 2 * ring.num)
        (head,) = struct.unpack_from("<H", mem, off + 4 + 2 * (ring.last_avail % ring.num))
        ring.last_avail = (ring.last_avail + 1) & 0xFFFF
        chain: list[tuple[int, int, int]] = []
        index = head
        dmem, doff = self._uva(ring.desc, DESC.size * ring.num)
        for _ in range(ring.num):
            if index >= ring.num:
                raise ProtocolError(f"descriptor index {index} out of range {ring.num}")
            addr, length, flags, nxt = DESC.unpack_from(dmem, doff + DESC.size * index)
            if flags & DESC_F_INDIRECT:
                raise ProtocolError("indirect descriptors were not negotiated")
            chain.append((addr, length, flags))
            if not flags & DESC_F_NEXT:
                return head, chain
            index = nxt
        raise ProtocolError("descriptor chain loops")

    def _push(self, ring: _Vring, head: int, written: int) -> None:
        mem, off = self._uva(ring.used, 4 + 8 * ring.num)
        struct.pack_into("<II", mem, off + 4 + 8 * (ring.used_idx % ring.num), head, written)
        ring.used_idx = (ring.used_idx + 1) & 0xFFFF
        struct.pack_into("<H", mem, off + 2, ring.used_idx)

    def _notify(self, ring: _Vring) -> None:
        if ring.call is not None:
            with contextlib.suppress(BlockingIOError):
                os.write(ring.call, struct.pack("<Q", 1))

    def _process_ring(self, ring: _Vring) -> None:
        if not self._ready(ring):
            return
        if ring.index == TX_QUEUE:
            self._drain_tx(ring)
        elif ring.index == RX_QUEUE:
            self._fill_rx()
        # the event queue only carries transport resets, which we never send

    def _drain_tx(self, ring: _Vring) -> None:
        handled = False
        while (item := self._pop(ring)) is not None:
            head, chain = item
            data = bytearray()
            for addr, length, flags in chain:
                if flags & DESC_F_WRITE:
                    continue
                mem, off = self._gpa(addr, length)
                data += mem[off : off + length]
            self._push(ring, head, 0)
            handled = True
            self.stats.tx_packets += 1
            try:
                packet = VsockPacket.unpack(bytes(data))
            except ProtocolError as exc:
                self._log(f"guest tx: {exc}")
                continue
            self._from_guest(packet)
        if handled:
            self._notify(ring)
        self._fill_rx()

    def _fill_rx(self) -> None:
        ring = self._rings[RX_QUEUE]
        if not self._ready(ring):
            return
        delivered = False
        while self._rx_pending:
            item = self._pop(ring)
            if item is None:
                break
            head, chain = item
            packet = self._rx_pending.popleft()
            room = sum(length for _a, length, flags in chain if flags & DESC_F_WRITE)
            room -= VSOCK_HDR.size
            if packet.op == OP_RW and len(packet.payload) > room > 0:
                # Linux posts 4 KiB rx buffers: split the payload, keep the rest queued
                rest = dataclasses.replace(packet, payload=packet.payload[room:])
                self._rx_pending.appendleft(rest)
                packet = dataclasses.replace(packet, payload=packet.payload[:room])
            data = packet.pack()
            written = 0
            for addr, length, flags in chain:
                if not flags & DESC_F_WRITE or written >= len(data):
                    continue
                n = min(length, len(data) - written)
                mem, off = self._gpa(addr, n)
                mem[off : off + n] = data[written : written + n]
                written += n
            if written < len(data):
                self._log(f"guest rx buffer too small ({written} of {len(data)} bytes)")
            self._push(ring, head, written)
            self.stats.rx_packets += 1
            delivered = True
        if delivered:
            self._notify(ring)
        self._resume_host_reads()

    # --- vsock streams --------------------------------------------------------------

    def _send(self, conn: _Conn, op: int, *, flags: int = 0, payload: bytes = b"") -> None:
        conn.reported_fwd = conn.fwd_cnt
        self._rx_pending.append(
            VsockPacket(
                conn.local_cid,
                self.guest_cid,
                conn.local_port,
                conn.guest_port,
                op,
                flags,
                BUF_ALLOC,
                conn.fwd_cnt,
                payload,
            )
        )
        if op == OP_RW:
            conn.tx_cnt += len(payload)

    def _rst(self, packet: VsockPacket) -> None:
        self._rx_pending.append(
            VsockPacket(packet.dst_cid, self.guest_cid, packet.dst_port, packet.src_port, OP_RST)
        )

    def _from_guest(self, p: VsockPacket) -> None:
        if p.type != TYPE_STREAM or p.src_cid != self.guest_cid:
            if p.op != OP_RST:
                self._rst(p)
            return
        conn = self._conns.get((p.src_port, p.dst_port))
        if conn is not None:
            conn.peer_buf_alloc, conn.peer_fwd_cnt = p.buf_alloc, p.fwd_cnt
        if p.op == OP_REQUEST:
            if conn is not None:
                self._rst(p)
                return
            self._guest_connect(p)
        elif conn is None:
            if p.op != OP_RST:
                self._rst(p)
        elif p.op == OP_RESPONSE:
            conn.established = True
            if conn.connect_reply:
                _send_all(conn.sock, f"OK {conn.local_port}\n".encode())
                conn.connect_reply = False
            self._watch_host(conn)
        elif p.op == OP_RW:
            self._to_host(conn, p.payload)
        elif p.op == OP_SHUTDOWN:
            conn.guest_shut |= p.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND)
            if p.flags & SHUTDOWN_SEND:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_WR)
            if conn.guest_shut == SHUTDOWN_RCV | SHUTDOWN_SEND:
                self._send(conn, OP_RST)
                self._drop(conn)
        elif p.op == OP_RST:
            self._drop(conn)
        elif p.op == OP_CREDIT_REQUEST:
            self._send(conn, OP_CREDIT_UPDATE)
        elif p.op == OP_CREDIT_UPDATE:
            self._resume_host_reads()

    def _guest_connect(self, p: VsockPacket) -> None:
        if self.uds_path is None:
            self._rst(p)
            return
        target = f"{self.uds_path}_{p.dst_port}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            self._log(f"guest connect to port {p.dst_port}: nothing listens on {target}")
            self._rst(p)
            return
        sock.setblocking(False)
        conn = _Conn(p.src_port, p.dst_cid, p.dst_port, sock, established=True)
        conn.peer_buf_alloc, conn.peer_fwd_cnt = p.buf_alloc, p.fwd_cnt
        self._conns[(p.src_port, p.dst_port)] = conn
        self.stats.connections += 1
        self._send(conn, OP_RESPONSE)
        self._watch_host(conn)

    def _to_host(self, conn: _Conn, data: bytes) -> None:
        conn.pending_out += data
        self._flush_host(conn)

    def _flush_host(self, conn: _Conn) -> None:
        while conn.pending_out:
            try:
                n = conn.sock.send(conn.pending_out)
            except BlockingIOError:
                break
            except OSError:
                self._send(conn, OP_RST)
                self._drop(conn)
                return
            del conn.pending_out[:n]
            conn.fwd_cnt += n
        if conn.fwd_cnt - conn.reported_fwd >= BUF_ALLOC // 4:
            self._send(conn, OP_CREDIT_UPDATE)
        self._watch_host(conn)

    def _watch_host(self, conn: _Conn) -> None:
        events = 0
        if conn.established and not conn.host_eof and conn.peer_credit() > 0:
            events |= selectors.EVENT_READ
        if conn.pending_out:
            events |= selectors.EVENT_WRITE
        self._unregister(conn.sock)
        if events:
            self._sel.register(conn.sock, events, lambda _s, c=conn: self._on_host_stream(c))

    def _resume_host_reads(self) -> None:
        for conn in list(self._conns.values()):
            self._watch_host(conn)

    def _on_host_stream(self, conn: _Conn) -> None:
        if conn.pending_out:
            self._flush_host(conn)
            if (conn.guest_port, conn.local_port) not in self._conns:
                return
        credit = min(conn.peer_credit(), MAX_PKT_PAYLOAD)
        if conn.host_eof or credit <= 0 or not conn.established:
            self._watch_host(conn)
            self._fill_rx()
            return
        try:
            data = conn.sock.recv(credit)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._send(conn, OP_RW, payload=data)
        else:
            conn.host_eof = True
            self._send(conn, OP_SHUTDOWN, flags=SHUTDOWN_RCV | SHUTDOWN_SEND)
        self._watch_host(conn)
        self._fill_rx()

    def _drop(self, conn: _Conn) -> None:
        self._conns.pop((conn.guest_port, conn.local_port), None)
        self._unregister(conn.sock)
        conn.sock.close()

    # --- host-initiated connections ---------------------------------------------------

    def _accept_host(self, listener: object) -> None:
        assert self._host_listener is not None
        sock, _ = self._host_listener.accept()
        sock.setblocking(False)
        self._host_handshakes[sock] = bytearray()
        self._sel.register(sock, selectors.EVENT_READ, self._on_host_handshake)

    def _on_host_handshake(self, fileobj: object) -> None:
        assert isinstance(fileobj, socket.socket)
        sock = fileobj
        buf = self._host_handshakes[sock]
        try:
            chunk = sock.recv(64)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        buf += chunk
        if b"\n" not in buf and chunk and len(buf) < 64:
            return
        self._unregister(sock)
        del self._host_handshakes[sock]
        line = bytes(buf).split(b"\n", 1)[0].decode("ascii", "replace").split()
        # before the guest's driver is up the REQUEST waits in the rx queue
        if len(line) != 2 or line[0] != "CONNECT" or not line[1].isdigit():
            sock.close()
            return
        self._connect_guest(int(line[1]), sock, reply=True)

    def _accept_forward(self, fileobj: object) -> None:
        assert isinstance(fileobj, socket.socket)
        sock, _ = fileobj.accept()
        sock.setblocking(False)
        self._connect_guest(self._forward_listeners[fileobj], sock, reply=False)

    def _connect_guest(self, guest_port: int, sock: socket.socket, *, reply: bool) -> None:
        """Open a vsock stream to ``guest_port`` for ``sock`` (REQUEST; data after RESPONSE)."""
        self._next_local_port += 1
        conn = _Conn(guest_port, PARENT_CID, self._next_local_port, sock)
        conn.connect_reply = reply
        self._conns[(conn.guest_port, conn.local_port)] = conn
        self.stats.connections += 1
        self._send(conn, OP_REQUEST)
        self._fill_rx()


def _listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        sock.listen(8)
    except OSError:
        sock.close()
        raise
    return sock


def _send_all(sock: socket.socket, data: bytes) -> None:
    deadline = time.monotonic() + 5
    view = memoryview(data)
    while view and time.monotonic() < deadline:
        try:
            n = sock.send(view)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        except OSError:
            return
        view = view[n:]


def _recv_message(sock: socket.socket) -> tuple[int, int, bytes, list[int]] | None:
    """One vhost-user message (request, flags, payload, fds) or None at EOF."""
    try:
        header, fds, _flags, _addr = socket.recv_fds(sock, HEADER.size, MAX_FDS)
    except OSError as exc:
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            return None
        raise
    if not header:
        return None
    while len(header) < HEADER.size:
        more = sock.recv(HEADER.size - len(header))
        if not more:
            return None
        header += more
    request, flags, size = HEADER.unpack(header)
    if size > MAX_PAYLOAD:
        for fd in fds:
            os.close(fd)
        raise ProtocolError(f"vhost-user message {request} announces {size} payload bytes")
    payload = b""
    while len(payload) < size:
        more = sock.recv(size - len(payload))
        if not more:
            return None
        payload += more
    return request, flags, payload, list(fds)
