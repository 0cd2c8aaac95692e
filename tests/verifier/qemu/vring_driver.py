"""A minimal vhost-user front end and virtio-vsock *driver* for testing the backend without QEMU.

It plays QEMU's part of the protocol (features, config, memory table over
SCM_RIGHTS, vring setup with eventfds) and the guest kernel's part of the
virtqueues (posting rx buffers, queuing tx packets, reading used rings), over
a memfd that stands for guest RAM.
"""

from __future__ import annotations

import mmap
import os
import select
import socket
import struct
import time
from pathlib import Path

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
