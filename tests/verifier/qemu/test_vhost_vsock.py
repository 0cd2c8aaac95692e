"""The vhost-user vsock backend, driven by a test front end + guest driver (no QEMU needed).

``Driver`` plays QEMU's part of the vhost-user protocol (features, config, memory
table over SCM_RIGHTS, vring setup with eventfds) and the guest kernel's part of the
virtqueues (posting rx buffers, queuing tx packets, reading used rings), over a memfd
that stands for guest RAM.
"""

from __future__ import annotations

import mmap
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from verifier.qemu import vhost_vsock as vv

MEM_SIZE = 1 << 20
USER_BASE = 0x7F00_0000_0000  # QEMU's virtual address of guest RAM (any value works)
QUEUE_SIZE = 8
BUF_SIZE = 4096
BUF_BASE = 0x10000


class Driver:
    def __init__(self, socket_path: Path, *, guest_cid: int = 16) -> None:
        self.cid = guest_cid
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(os.fspath(socket_path))
        self.sock.settimeout(5)
        self.memfd = os.memfd_create("guest-ram")
        os.ftruncate(self.memfd, MEM_SIZE)
        self.mem = mmap.mmap(self.memfd, MEM_SIZE)
        self.kicks = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(3)]
        self.calls = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(3)]
        self.avail_idx = [0, 0, 0]
        self.used_seen = [0, 0, 0]
        self.next_desc = [0, 0, 0]
        self.buf_cursor = BUF_BASE

    # --- vhost-user front end -------------------------------------------------------

    def message(
        self, request: int, payload: bytes = b"", fds: list[int] | None = None, reply: bool = False
    ) -> bytes:
        data = vv.HEADER.pack(request, vv.FLAG_VERSION, len(payload)) + payload
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.sendall(data)
        if not reply:
            return b""
        header = self._recv(vv.HEADER.size)
        got_request, flags, size = vv.HEADER.unpack(header)
        assert got_request == request and flags & vv.FLAG_REPLY
        return self._recv(size)

    def _recv(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "backend closed the connection"
            data += chunk
        return data

    def ring_addrs(self, q: int) -> tuple[int, int, int]:
        base = q * 0x3000
        return base, base + 0x1000, base + 0x2000  # desc, avail, used (guest physical)

    def handshake(self) -> tuple[int, int, int]:
        (features,) = struct.unpack("<Q", self.message(vv.GET_FEATURES, reply=True))
        self.message(vv.SET_FEATURES, struct.pack("<Q", features))
        (protocol,) = struct.unpack("<Q", self.message(vv.GET_PROTOCOL_FEATURES, reply=True))
        self.message(vv.SET_PROTOCOL_FEATURES, struct.pack("<Q", protocol))
        self.message(vv.SET_OWNER)
        config = self.message(vv.GET_CONFIG, struct.pack("<III", 0, 8, 0) + bytes(8), reply=True)
        (cid,) = struct.unpack_from("<Q", config, 12)
        table = struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, MEM_SIZE, USER_BASE, 0)
        self.message(vv.SET_MEM_TABLE, table, fds=[self.memfd])
        for q in range(3):
            desc, avail, used = self.ring_addrs(q)
            self.message(vv.SET_VRING_NUM, struct.pack("<II", q, QUEUE_SIZE))
            self.message(
                vv.SET_VRING_ADDR,
                struct.pack(
                    "<IIQQQQ", q, 0, USER_BASE + desc, USER_BASE + used, USER_BASE + avail, 0
                ),
            )
            self.message(vv.SET_VRING_BASE, struct.pack("<II", q, 0))
            self.message(vv.SET_VRING_CALL, struct.pack("<Q", q), fds=[self.calls[q]])
            self.message(vv.SET_VRING_KICK, struct.pack("<Q", q), fds=[self.kicks[q]])
            self.message(vv.SET_VRING_ENABLE, struct.pack("<II", q, 1))
        return features, protocol, cid

    # --- guest side of the rings ----------------------------------------------------------

    def _add_buffer(self, q: int, data: bytes | None, length: int) -> None:
        desc, avail, _used = self.ring_addrs(q)
        index = self.next_desc[q] % QUEUE_SIZE
        self.next_desc[q] += 1
        addr = self.buf_cursor
        self.buf_cursor += BUF_SIZE
        if self.buf_cursor + BUF_SIZE > MEM_SIZE:
            self.buf_cursor = BUF_BASE
        if data is not None:
            self.mem[addr : addr + len(data)] = data
        flags = 0 if data is not None else vv.DESC_F_WRITE
        vv.DESC.pack_into(self.mem, desc + 16 * index, addr, length, flags, 0)
        slot = self.avail_idx[q] % QUEUE_SIZE
        struct.pack_into("<H", self.mem, avail + 4 + 2 * slot, index)
        self.avail_idx[q] = (self.avail_idx[q] + 1) & 0xFFFF
        struct.pack_into("<H", self.mem, avail + 2, self.avail_idx[q])
        self.buffers = getattr(self, "buffers", {})
        self.buffers[(q, index)] = addr

    def kick(self, q: int) -> None:
        os.eventfd_write(self.kicks[q], 1)

    def post_rx(self, count: int = 4) -> None:
        for _ in range(count):
            self._add_buffer(vv.RX_QUEUE, None, BUF_SIZE)
        self.kick(vv.RX_QUEUE)

    def send(self, packet: vv.VsockPacket) -> None:
        data = packet.pack()
        self._add_buffer(vv.TX_QUEUE, data, len(data))
        self.kick(vv.TX_QUEUE)

    def packet(
        self,
        *,
        src_port: int,
        dst_port: int,
        op: int,
        payload: bytes = b"",
        buf_alloc: int = 65536,
        fwd_cnt: int = 0,
        flags: int = 0,
        dst_cid: int = vv.PARENT_CID,
    ) -> vv.VsockPacket:
        return vv.VsockPacket(
            self.cid, dst_cid, src_port, dst_port, op, flags, buf_alloc, fwd_cnt, payload
        )

    def recv(self, timeout: float = 5.0) -> vv.VsockPacket:
        """The next packet the backend put in the rx queue (reposting a buffer for it)."""
        _desc, _avail, used = self.ring_addrs(vv.RX_QUEUE)
        deadline = time.monotonic() + timeout
        while True:
            (used_idx,) = struct.unpack_from("<H", self.mem, used + 2)
            if used_idx != self.used_seen[vv.RX_QUEUE]:
                break
            left = deadline - time.monotonic()
            assert left > 0, "no packet from the backend"
            select.select([self.calls[vv.RX_QUEUE]], [], [], min(left, 0.05))
            try:
                os.eventfd_read(self.calls[vv.RX_QUEUE])
            except BlockingIOError:
                pass
        slot = self.used_seen[vv.RX_QUEUE] % QUEUE_SIZE
        head, length = struct.unpack_from("<II", self.mem, used + 4 + 8 * slot)
        self.used_seen[vv.RX_QUEUE] += 1
        addr = self.buffers[(vv.RX_QUEUE, head)]
        packet = vv.VsockPacket.unpack(bytes(self.mem[addr : addr + length]))
        self.post_rx(1)
        return packet

    def close(self) -> None:
        self.sock.close()
        self.mem.close()
        for fd in [self.memfd, *self.kicks, *self.calls]:
            os.close(fd)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[vv.VhostUserVsock]:
    with vv.VhostUserVsock(tmp_path / "vhost.sock", guest_cid=16, uds_path=tmp_path / "v") as b:
        yield b


@pytest.fixture
def driver(backend: vv.VhostUserVsock) -> Iterator[Driver]:
    d = Driver(backend.socket_path)
    d.handshake()
    d.post_rx(4)
    yield d
    d.close()


def _listen(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)
    s.settimeout(5)
    return s


def test_handshake_offers_what_qemu_requires(backend: vv.VhostUserVsock) -> None:
    d = Driver(backend.socket_path)
    try:
        features, protocol, cid = d.handshake()
        assert features & vv.VIRTIO_F_VERSION_1
        assert features & vv.VHOST_USER_F_PROTOCOL_FEATURES
        assert protocol & vv.PROTOCOL_F_CONFIG  # QEMU's vhost-user-vsock refuses without it
        assert cid == 16
        reply = d.message(vv.GET_VRING_BASE, struct.pack("<II", vv.TX_QUEUE, 0), reply=True)
        assert struct.unpack("<II", reply) == (vv.TX_QUEUE, 0)
    finally:
        d.close()
    deadline = time.monotonic() + 5
    while "SET_VRING_ENABLE" not in backend.stats.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.stats.device_started
    assert "SET_MEM_TABLE" in backend.stats.requests
    assert backend.error is None


def test_guest_connects_to_host_and_data_flows_both_ways(
    backend: vv.VhostUserVsock, driver: Driver, tmp_path: Path
) -> None:
    listener = _listen(tmp_path / "v_5000")
    driver.send(driver.packet(src_port=40000, dst_port=5000, op=vv.OP_REQUEST))
    reply = driver.recv()
    assert (reply.op, reply.src_cid, reply.src_port, reply.dst_port) == (
        vv.OP_RESPONSE,
        vv.PARENT_CID,
        5000,
        40000,
    )
    host, _ = listener.accept()
    host.settimeout(5)
    driver.send(driver.packet(src_port=40000, dst_port=5000, op=vv.OP_RW, payload=b"hello"))
    assert host.recv(100) == b"hello"
    host.sendall(b"world")
    data = driver.recv()
    assert (data.op, data.payload) == (vv.OP_RW, b"world")
    assert data.fwd_cnt == 5  # the backend accounts for what it forwarded
    host.close()
    shutdown = driver.recv()
    assert shutdown.op == vv.OP_SHUTDOWN
    assert shutdown.flags == vv.SHUTDOWN_RCV | vv.SHUTDOWN_SEND
    listener.close()


def test_guest_connect_without_listener_is_reset(driver: Driver) -> None:
    driver.send(driver.packet(src_port=40001, dst_port=6000, op=vv.OP_REQUEST))
    assert driver.recv().op == vv.OP_RST


def test_host_connects_to_guest_port(backend: vv.VhostUserVsock, driver: Driver) -> None:
    assert backend.uds_path is not None
    host = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    host.settimeout(5)
    host.connect(str(backend.uds_path))
    host.sendall(b"CONNECT 7000\n")
    request = driver.recv()
    assert (request.op, request.dst_port, request.dst_cid) == (vv.OP_REQUEST, 7000, 16)
    driver.send(driver.packet(src_port=7000, dst_port=request.src_port, op=vv.OP_RESPONSE))
    assert host.recv(100) == f"OK {request.src_port}\n".encode()
    driver.send(
        driver.packet(src_port=7000, dst_port=request.src_port, op=vv.OP_RW, payload=b"ping")
    )
    assert host.recv(100) == b"ping"
    host.close()


def test_host_data_respects_guest_credit(
    backend: vv.VhostUserVsock, driver: Driver, tmp_path: Path
) -> None:
    listener = _listen(tmp_path / "v_5001")
    driver.send(driver.packet(src_port=40002, dst_port=5001, op=vv.OP_REQUEST, buf_alloc=4))
    assert driver.recv().op == vv.OP_RESPONSE
    host, _ = listener.accept()
    host.sendall(b"0123456789")
    first = driver.recv()
    assert first.payload == b"0123"  # only the 4 bytes the guest has room for
    driver.send(
        driver.packet(src_port=40002, dst_port=5001, op=vv.OP_CREDIT_UPDATE, buf_alloc=4, fwd_cnt=4)
    )
    assert driver.recv().payload == b"4567"
    host.close()
    listener.close()


def test_packet_round_trip_and_truncation() -> None:
    p = vv.VsockPacket(16, 3, 1, 2, vv.OP_RW, payload=b"abc")
    assert vv.VsockPacket.unpack(p.pack()) == p
    with pytest.raises(vv.ProtocolError):
        vv.VsockPacket.unpack(p.pack()[:-1])


def test_large_host_write_is_split_to_fit_guest_buffers(
    backend: vv.VhostUserVsock, driver: Driver, tmp_path: Path
) -> None:
    listener = _listen(tmp_path / "v_5002")
    driver.send(driver.packet(src_port=40003, dst_port=5002, op=vv.OP_REQUEST))
    assert driver.recv().op == vv.OP_RESPONSE
    host, _ = listener.accept()
    blob = bytes(range(256)) * 40  # 10240 bytes, more than one 4 KiB rx buffer
    host.sendall(blob)
    got = b""
    while len(got) < len(blob):
        packet = driver.recv()
        assert packet.op == vv.OP_RW
        assert len(packet.payload) <= 4096 - vv.VSOCK_HDR.size
        got += packet.payload
    assert got == blob
    host.close()
    listener.close()


def test_forwarded_unix_socket_reaches_guest_port(tmp_path: Path) -> None:
    forward = tmp_path / "client.sock"
    with vv.VhostUserVsock(
        tmp_path / "vhost.sock", uds_path=tmp_path / "v", forward={5000: forward}
    ) as backend:
        d = Driver(backend.socket_path)
        try:
            d.handshake()
            d.post_rx(4)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(5)
            client.connect(str(forward))  # a plain Unix client: no CONNECT line
            request = d.recv()
            assert (request.op, request.dst_port) == (vv.OP_REQUEST, 5000)
            d.send(d.packet(src_port=5000, dst_port=request.src_port, op=vv.OP_RESPONSE))
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = d.recv()
            assert (data.op, data.payload) == (vv.OP_RW, b"GET / HTTP/1.0\r\n\r\n")
            client.close()
        finally:
            d.close()
    assert not forward.exists()  # cleaned up on stop
