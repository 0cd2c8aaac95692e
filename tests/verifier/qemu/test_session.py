"""QemuEnclave: a running guest reachable over vsock from plain Unix sockets; always stopped."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from verifier.nitro import parse_attestation
from verifier.qemu.boot import HEARTBEAT_PORT, HostPort
from verifier.qemu.build import QemuInstall
from verifier.qemu.guest import LISTENING, document_from_response, extra_cmdline
from verifier.qemu.session import QemuEnclave
from verifier.qemu.testimage import ProbeImage

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

#: the reference runtime's vsock ports on the parent (enclave_runtime/config.py)
KMS_PORT = 8000
PARENT_PORT = 8001


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "guest closed the stream early"
        data += chunk
    return data


def test_forwarded_port_reaches_guest_listener(
    qemu_install: QemuInstall, probe: ProbeImage
) -> None:
    nonce = os.urandom(48)
    with QemuEnclave(
        probe.eif, append=extra_cmdline(None, None, 7777), forward_ports=(7777,), qemu=qemu_install
    ) as vm:
        vm.boot()
        assert any(LISTENING in line for _at, line in _until_listening(vm))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(30)
            client.connect(str(vm.guest_port_path(7777)))  # plain Unix: no CONNECT line
            client.sendall(len(nonce).to_bytes(4, "big") + nonce)
            length = int.from_bytes(_recv_exact(client, 4), "big")
            response = _recv_exact(client, length)
        document = parse_attestation(document_from_response(response))
        assert document.nonce == nonce
        assert document.pcrs[0] == probe.pcrs[0]


def _until_listening(vm: QemuEnclave) -> list[tuple[float, str]]:
    seen = []
    for at, line in vm.console(timeout=120):
        seen.append((at, line))
        if LISTENING in line:
            break
    return seen


def test_qemu_is_stopped_when_the_caller_fails(
    qemu_install: QemuInstall, probe: ProbeImage
) -> None:
    vm = QemuEnclave(probe.eif, append=extra_cmdline(None, None, 7778), qemu=qemu_install)
    with pytest.raises(RuntimeError, match="caller bug"), vm:
        vm.boot()
        workdir = vm.workdir
        raise RuntimeError("caller bug")
    assert vm.returncode() is not None  # QEMU's process group was killed
    assert not Path(workdir).exists()


class _ParentService:
    """A host service on (CID 3, port): records what arrives, answers HTTP 503."""

    def __init__(self, path: Path) -> None:
        self.received: list[bytes] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(4)
        self._sock.settimeout(0.5)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    self.received.append(conn.recv(4096))
                    conn.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self._sock.close()
        self._thread.join(timeout=5)


def test_reference_runtime_reaches_the_host_over_vsock(
    qemu_install: QemuInstall, reference_build_eif: Path
) -> None:
    """The real image under QEMU: init's heartbeat and the runtime's first request to its
    parent channel cross our vhost-user vsock backend (the KMS/proxy data path)."""
    with QemuEnclave(reference_build_eif, qemu=qemu_install) as vm:
        heartbeat = HostPort(vm.parent_port_path(HEARTBEAT_PORT), "heartbeat")
        services = [_ParentService(vm.parent_port_path(p)) for p in (KMS_PORT, PARENT_PORT)]
        try:
            vm.boot()
            for _at, _line in vm.console(timeout=600):
                if any(s.received for s in services):
                    break
        finally:
            heartbeat.close()
            for s in services:
                s.close()
    assert heartbeat.acknowledged
    first = next(data for s in services for data in s.received)
    assert first  # the runtime spoke to its host through the backend
