"""QemuEnclave: a running guest reachable over vsock from plain Unix sockets; always stopped."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from verifier.nitro import parse_attestation
from verifier.qemu.build import QemuInstall
from verifier.qemu.guest import LISTENING, document_from_response, extra_cmdline
from verifier.qemu.session import QemuEnclave
from verifier.qemu.testimage import ProbeImage

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


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
