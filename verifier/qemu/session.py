"""A running QEMU ``nitro-enclave`` guest with its vsock backend: start, talk to it, stop.

::

    with QemuEnclave(eif, append="...", forward_ports=(5000,)) as vm:
        kms = listen_unix(vm.parent_port_path(8000))  # guest -> host (CID 3, port 8000)
        vm.boot()
        client = connect_unix(vm.guest_port_path(5000))  # host -> guest port 5000
        for at, line in vm.console(timeout=60): ...

Entering the context creates a private directory and starts the vhost-user backend
(so host services can bind their ``parent_port_path`` sockets before the guest
boots); :meth:`boot` starts QEMU under TCG; leaving the context kills QEMU's process
group and stops the backend, on every path.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Final

from enclave_audit.errors import InvalidInput, QemuBootFailed
from verifier.qemu.build import MACHINE, QemuInstall, require_qemu
from verifier.qemu.vhost_vsock import VhostUserVsock

GUEST_CID: Final = 16


def _machine_value(text: str) -> str:
    if any(ch in text for ch in "\n\0"):
        raise InvalidInput(f"QEMU machine option value {text!r} contains a control character")
    return text.replace(",", ",,")


def qemu_command(
    qemu: QemuInstall,
    eif: Path,
    *,
    chardev_socket: Path,
    append: str,
    parent_role: str | None,
    parent_id: str | None,
    memory_mib: int,
    cpus: int = 1,
) -> list[str]:
    machine = f"{MACHINE},vsock=c0"
    if parent_role:
        machine += f",parent-role={_machine_value(parent_role)}"
    if parent_id:
        machine += f",parent-id={_machine_value(parent_id)}"
    return [
        os.fspath(qemu.binary),
        "-M", machine,
        "-accel", "tcg",
        "-L", os.fspath(qemu.firmware_dir),
        "-kernel", os.fspath(eif),
        *(["-append", append] if append else []),
        "-nographic",
        "-no-reboot",
        "-m", f"{memory_mib}M",
        "-smp", str(cpus),
        "-chardev", f"socket,id=c0,path={chardev_socket}",
    ]  # fmt: skip


def memory_for(eif: Path) -> int:
    """RAM for the guest: the initramfs is unpacked next to its compressed copy."""
    size_mib = eif.stat().st_size // (1 << 20)
    return max(1024, 512 + 3 * size_mib)


def _pump(stream: IO[bytes], lines: queue.Queue[tuple[float, str] | None], t0: float) -> None:
    for raw in iter(stream.readline, b""):
        lines.put((time.monotonic() - t0, raw.decode("utf-8", "replace").rstrip("\r\n")))
    lines.put(None)


class QemuEnclave:
    """One QEMU guest.  Timestamps are seconds since :meth:`boot` started QEMU."""

    def __init__(
        self,
        eif: Path,
        *,
        append: str = "",
        parent_role: str | None = None,
        parent_id: str | None = None,
        memory_mib: int | None = None,
        cpus: int = 1,
        forward_ports: Sequence[int] = (),
        qemu: QemuInstall | None = None,
    ) -> None:
        self.eif = Path(eif)
        self.append = append
        self.parent_role = parent_role
        self.parent_id = parent_id
        self.memory_mib = memory_mib
        self.cpus = cpus
        self.forward_ports = tuple(forward_ports)
        self.qemu = qemu
        self.proc: subprocess.Popen[bytes] | None = None
        self.backend: VhostUserVsock | None = None
        self.t0 = 0.0
        self.exited_at: float | None = None
        self.stderr_tail: deque[str] = deque(maxlen=10)
        self._dir: Path | None = None
        self._lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self._errs: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self._stdout_open = True
        self._pumps: list[threading.Thread] = []

    # --- paths for host services ----------------------------------------------------

    @property
    def workdir(self) -> Path:
        if self._dir is None:
            raise QemuBootFailed("QemuEnclave used outside its 'with' block")
        return self._dir

    @property
    def uds_path(self) -> Path:
        """Host programs connect here and write ``CONNECT <port>\\n`` to reach the guest."""
        return self.workdir / "vsock"

    def parent_port_path(self, port: int) -> Path:
        """Where a host service listens to accept guest connections to (CID 3, ``port``)."""
        return Path(f"{self.uds_path}_{port}")

    def guest_port_path(self, port: int) -> Path:
        """A plain Unix socket that reaches the guest's vsock ``port`` (``forward_ports``)."""
        if port not in self.forward_ports:
            raise InvalidInput(f"guest port {port} was not forwarded (forward_ports=)")
        return self.workdir / f"guest-{port}.sock"

    # --- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> QemuEnclave:
        self.qemu = self.qemu or require_qemu()
        # AF_UNIX paths are limited to 108 bytes: keep the directory short
        self._dir = Path(tempfile.mkdtemp(prefix="ea-qemu-", dir="/tmp"))
        try:
            self.backend = VhostUserVsock(
                self._dir / "vhost-user.sock",
                guest_cid=GUEST_CID,
                uds_path=self.uds_path,
                forward={p: self.guest_port_path(p) for p in self.forward_ports},
            )
            self.backend.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def boot(self) -> None:
        assert self.qemu is not None and self.backend is not None, "enter the context first"
        argv = qemu_command(
            self.qemu,
            self.eif,
            chardev_socket=self.backend.socket_path,
            append=self.append,
            parent_role=self.parent_role,
            parent_id=self.parent_id,
            memory_mib=self.memory_mib or memory_for(self.eif),
            cpus=self.cpus,
        )
        self.t0 = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise QemuBootFailed(f"cannot start {self.qemu.binary}: {exc.strerror}") from None
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream, sink in ((self.proc.stdout, self._lines), (self.proc.stderr, self._errs)):
            pump = threading.Thread(target=_pump, args=(stream, sink, self.t0), daemon=True)
            pump.start()
            self._pumps.append(pump)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def read_line(self, timeout: float) -> tuple[float, str] | None:
        """The next console line, or None when there is none within ``timeout``.

        Also notices QEMU's exit: after that, :attr:`exited_at` is set and
        :meth:`running` is false once the console is drained.
        """
        if not self._stdout_open:
            self._note_exit()
            return None
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            self._stdout_open = False
            self._note_exit(wait=2.0)
        return item

    def console(self, timeout: float) -> Iterator[tuple[float, str]]:
        """Console lines until QEMU exits or ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            item = self.read_line(min(0.2, max(0.0, deadline - time.monotonic())))
            if item is not None:
                yield item

    def running(self) -> bool:
        return self.proc is not None and (self._stdout_open or self.proc.poll() is None)

    def _note_exit(self, wait: float = 0.0) -> None:
        if self.proc is None or self.exited_at is not None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=wait)
        if self.proc.poll() is not None:
            self.exited_at = self.elapsed()

    def wait_exit(self, timeout: float) -> bool:
        """Give QEMU ``timeout`` seconds to exit by itself (the guest rebooting)."""
        if self.proc is None:
            return True
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        self._note_exit()
        return self.proc.poll() is not None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        """Kill QEMU's process group, stop the backend, remove the directory."""
        if self.proc is not None:
            self._note_exit()
            _stop_process(self.proc)
            for pump in self._pumps:
                pump.join(timeout=2)
            while True:
                try:
                    err = self._errs.get_nowait()
                except queue.Empty:
                    break
                if err:
                    self.stderr_tail.append(err[1])
        if self.backend is not None:
            self.backend.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
