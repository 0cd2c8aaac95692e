"""The vhost-user vsock backend, driven by a test front end + guest driver (no QEMU needed)."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.verifier.qemu.vring_driver import Driver
from verifier.qemu import vhost_vsock as vv


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
