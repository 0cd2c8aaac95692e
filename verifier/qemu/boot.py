"""Boot an EIF under QEMU's ``nitro-enclave`` machine and compare the guest's PCRs with ours.

QEMU measures the EIF itself (``hw/core/eif.c``) and its emulated NSM reports
those PCRs in an attestation document, so a guest document is a measurement
made by code that is not ours.  We start our vhost-user vsock backend, boot the
image under TCG with an unmeasured ``-append`` asking the guest to attest with
a fresh nonce, read the NSM response off the serial console, and compare:

* PCR0/1/2 (and PCR8 when signed) with :func:`builder.eif.describe_eif`;
* PCR3/PCR4 with :func:`builder.eif.extend_string` of ``parent-role``/``parent-id``
  (zero when not given, as QEMU leaves them);
* the nonce, via :func:`verifier.nitro.verify_attestation` in its explicit
  ``unsigned_emulator`` mode: QEMU's documents are unsigned, so signature and
  chain are reported as not checked, never as passed.

QEMU and the backend are stopped on every exit path (the QEMU process group is
killed in ``finally``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from builder.eif import describe_eif, extend_string
from enclave_audit.errors import EnclaveAuditError, InvalidInput, QemuBootFailed
from enclave_audit.fsutil import sha256_file
from enclave_audit.model.findings import Check, CheckOutcome, verdict_of
from enclave_audit.model.measurements import PcrSet
from enclave_audit.progress import NullProgress, ProgressSink
from verifier.nitro import parse_attestation, verify_attestation
from verifier.qemu.build import require_qemu
from verifier.qemu.guest import (
    LISTENING,
    SerialScanner,
    document_from_response,
    extra_cmdline,
)
from verifier.qemu.result import BootTimings, PcrComparison, QemuBootResult
from verifier.qemu.session import QemuEnclave

ZERO_PCR: Final = bytes(48)
#: vsock ports on the parent (CID 3) that the host side serves during a boot.
HEARTBEAT_PORT: Final = 9000
DOCUMENT_PORT: Final = 9901
#: guest vsock port on which the guest answers one attestation request from the host.
SERVE_PORT: Final = 9902
HEARTBEAT_BYTE: Final = 0xB7
DEFAULT_TIMEOUT: Final = 300.0
#: after the document arrived on the console: how long to wait for its vsock copy.
VSOCK_GRACE_S: Final = 10.0
SERIAL_TAIL_LINES: Final = 40


def expected_pcrs(
    eif: Path,
    *,
    parent_role: str | None,
    parent_id: str | None,
    image_pcrs: PcrSet | None = None,
) -> tuple[PcrSet, dict[int, str], str]:
    """Our PCRs for this boot, where each came from, and the EIF's sha256.

    PCR0/1/2/8 come from ``image_pcrs`` when given (e.g. the builder's recorded
    measurements of the image that *should* be running), else from describe-eif.
    """
    description = describe_eif(eif)
    if not description.crc_ok:
        raise InvalidInput(f"{eif}: EIF CRC does not match; QEMU would refuse it")
    values = {i: description.pcrs[i] for i in (0, 1, 2)}
    sources = dict.fromkeys((0, 1, 2), "describe-eif")
    if image_pcrs is not None:
        missing = [i for i in (0, 1, 2) if image_pcrs.get(i) is None]
        if missing:
            raise InvalidInput(f"expected measurements lack PCR{missing[0]}")
        values = {i: image_pcrs[i] for i in (0, 1, 2)}
        sources = dict.fromkeys((0, 1, 2), "expected measurements")
    values[3] = extend_string(parent_role) if parent_role else ZERO_PCR
    sources[3] = "extend_string(parent-role)" if parent_role else "zero (no parent-role)"
    values[4] = extend_string(parent_id) if parent_id else ZERO_PCR
    sources[4] = "extend_string(parent-id)" if parent_id else "zero (no parent-id)"
    pcr8 = description.pcrs.get(8) if description.is_signed else None
    values[8] = pcr8 if pcr8 is not None else ZERO_PCR
    sources[8] = "describe-eif (signing certificate)" if pcr8 is not None else "zero (unsigned)"
    given8 = image_pcrs.get(8) if image_pcrs is not None else None
    if given8 is not None:
        values[8], sources[8] = given8, "expected measurements"
    return PcrSet(values=values), sources, sha256_file(eif)


class HostPort:
    """A host Unix socket standing for a vsock port on the parent (CID 3).

    ``handler_name`` is ``"heartbeat"`` (echo the Nitro boot byte 0xB7, set
    :attr:`acknowledged`) or ``"document"`` (receive a length-prefixed NSM response
    into :attr:`received`).
    """

    def __init__(self, path: Path, handler_name: Literal["heartbeat", "document"]) -> None:
        self.path = path
        self.received: bytes | None = None
        self.acknowledged = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(os.fspath(path))
        self._sock.listen(4)
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._handler = getattr(self, handler_name)
        self._thread = threading.Thread(target=self._serve, daemon=True, name=path.name)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(30)
                with contextlib.suppress(OSError):
                    self._handler(conn)

    def heartbeat(self, conn: socket.socket) -> None:
        byte = conn.recv(1)
        if byte:
            conn.sendall(byte)
            self.acknowledged = byte[0] == HEARTBEAT_BYTE

    def document(self, conn: socket.socket) -> None:
        head = _recv_exact(conn, 4)
        length = int.from_bytes(head, "big")
        if length > 0x3000:
            return
        self.received = _recv_exact(conn, length)
        conn.sendall(b"\x01")

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=5)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("short read")
        data += chunk
    return data


def request_over_vsock(uds: Path, port: int, nonce: bytes, *, timeout: float = 30.0) -> bytes:
    """Host -> guest: ask the guest's ``nsm-attest`` on vsock ``port`` for a document.

    Goes through the backend's host listener (``CONNECT <port>``), so it exercises
    the host-initiated half of the vsock data path.  Returns the NSM response.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(uds))
        sock.sendall(f"CONNECT {port}\n".encode())
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                raise ConnectionError(f"vsock port {port}: connection refused by the guest")
            line += chunk
        if not line.startswith(b"OK "):
            raise ConnectionError(f"vsock port {port}: unexpected answer {line[:40]!r}")
        sock.sendall(len(nonce).to_bytes(4, "big") + nonce)
        length = int.from_bytes(_recv_exact(sock, 4), "big")
        if length > 0x3000:
            raise ConnectionError(f"vsock port {port}: response of {length} bytes")
        return _recv_exact(sock, length)


def boot_and_attest(
    eif: Path,
    *,
    parent_role: str | None = None,
    parent_id: str | None = None,
    nonce: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: ProgressSink | None = None,
    memory_mib: int | None = None,
    expected: PcrSet | None = None,
) -> QemuBootResult:
    """Boot ``eif`` under QEMU (TCG), get one attestation from the guest, compare PCRs.

    ``nonce`` defaults to 32 fresh random bytes.  ``expected`` (PCR0/1/2, and 8)
    replaces describe-eif's values as what the guest must report, e.g. the
    builder's recorded measurements.  Raises :class:`QemuBootFailed`
    when the guest does not attest within ``timeout`` seconds, and
    :class:`EnvironmentProblem` when no QEMU with the machine is available.
    A PCR difference is not an exception: it is a FAIL verdict in the result.
    """
    progress = progress or NullProgress()
    eif = Path(eif)
    if timeout <= 0:
        raise InvalidInput(f"timeout must be positive, got {timeout}")
    progress.start(f"measuring {eif.name}")
    wanted, sources, eif_sha256 = expected_pcrs(
        eif, parent_role=parent_role, parent_id=parent_id, image_pcrs=expected
    )
    qemu = require_qemu()
    nonce = os.urandom(32) if nonce is None else nonce
    append = extra_cmdline(nonce, DOCUMENT_PORT, SERVE_PORT)
    host_nonce = os.urandom(32)
    served: bytes | None = None
    serve_error: str | None = None

    scanner = SerialScanner()
    tail: deque[str] = deque(maxlen=SERIAL_TAIL_LINES)
    first_output: float | None = None
    banner: float | None = None
    attested: float | None = None
    vsock_sent_line = False
    vm = QemuEnclave(
        eif,
        append=append,
        parent_role=parent_role,
        parent_id=parent_id,
        memory_mib=memory_mib,
        qemu=qemu,
    )
    ports: list[HostPort] = []
    with vm:
        try:
            heartbeat = HostPort(vm.parent_port_path(HEARTBEAT_PORT), "heartbeat")
            ports.append(heartbeat)
            doc_port = HostPort(vm.parent_port_path(DOCUMENT_PORT), "document")
            ports.append(doc_port)
            progress.start(f"booting {eif.name} under QEMU (TCG)")
            vm.boot()
            grace_until: float | None = None
            for at, line in vm.console(timeout):
                tail.append(line)
                first_output = at if first_output is None else first_output
                if banner is None and "Linux version" in line:
                    banner = at
                if "NSM-ATTEST VSOCK" in line:
                    vsock_sent_line = True
                if "NSM-ATTEST SERVE failed" in line:
                    serve_error = line.split("NSM-ATTEST ", 1)[1]
                if LISTENING in line and served is None and serve_error is None:
                    try:
                        served = request_over_vsock(vm.uds_path, SERVE_PORT, host_nonce)
                    except OSError as exc:
                        serve_error = f"host request over vsock: {exc}"
                if attested is None and scanner.feed(line):
                    attested = at
                    if scanner.error is not None and not scanner.garbled:
                        break
                    # garbled on the console: the vsock copy may still be intact
                    grace_until = time.monotonic() + VSOCK_GRACE_S
                copied = doc_port.received is not None or vsock_sent_line
                if grace_until is not None and (
                    time.monotonic() > grace_until
                    or (copied and (served is not None or serve_error is not None))
                ):
                    break
            if scanner.response is not None:
                vm.wait_exit(3.0)  # the probe reboots right after attesting
            total = vm.elapsed()
        finally:
            for port in ports:
                port.close()
    exited = vm.exited_at
    received_on_vsock = doc_port.received
    heartbeat_ok = heartbeat.acknowledged
    backend_started = vm.backend is not None and (
        vm.backend.stats.device_started or vm.backend.stats.tx_packets > 0
    )

    progress.done()
    response = scanner.response
    if response is None and scanner.garbled and received_on_vsock is not None:
        response = received_on_vsock  # same bytes, carried by vsock instead of the console
    elif scanner.error is not None:
        raise QemuBootFailed(f"{eif.name}: the guest's attestation helper failed: {scanner.error}")
    if response is None:
        raise QemuBootFailed(_no_attestation(eif, timeout, vm, tail))
    assert attested is not None
    document = document_from_response(response)
    attestation = verify_attestation(
        document,
        expected_pcrs=wanted,
        nonce=nonce,
        unsigned_emulator=True,
        now=datetime.now(UTC),
    )
    guest = attestation.pcrs
    comparisons = [
        PcrComparison(
            index=i,
            expected=wanted.hex(i),
            guest=guest.hex(i) if guest.get(i) is not None else None,
            source=sources[i],
            match=guest.get(i) == wanted[i],
        )
        for i in wanted.indices()
    ]
    checks = [
        Check(
            name=f"qemu.pcr{c.index}",
            outcome=CheckOutcome.PASS if c.match else CheckOutcome.FAIL,
            detail=f"guest PCR{c.index} {'equals' if c.match else 'differs from'} {c.source}",
        )
        for c in comparisons
    ]
    checks += attestation.checks
    vsock_match = (
        None
        if received_on_vsock is None or scanner.response is None
        else received_on_vsock == scanner.response
    )
    served_ok = _check_served(served, host_nonce, guest, checks) if served is not None else None
    if vsock_match is False:
        checks.append(
            Check(
                name="qemu.vsock_document",
                outcome=CheckOutcome.FAIL,
                detail="the document sent over vsock differs from the one on the console",
            )
        )
    return QemuBootResult(
        verdict=verdict_of(checks),
        eif=os.fspath(eif),
        eif_sha256=eif_sha256,
        qemu_version=qemu.version,
        accelerator="tcg",
        module_id=attestation.module_id,
        nonce=nonce.hex(),
        expected_pcrs=wanted,
        guest_pcrs=guest,
        comparisons=comparisons,
        checks=checks,
        attestation=attestation,
        vsock_device_started=backend_started,
        vsock_heartbeat=True if heartbeat_ok else None,
        vsock_document_match=vsock_match,
        vsock_request_ok=served_ok,
        vsock_error=serve_error,
        timings=BootTimings(
            first_output_s=_round(first_output),
            kernel_banner_s=_round(banner),
            attestation_s=round(attested, 3),
            qemu_exit_s=_round(exited),
            total_s=round(total, 3),
        ),
        document=document,
        serial_tail=list(tail),
    )


def _check_served(response: bytes, nonce: bytes, guest: PcrSet, checks: list[Check]) -> bool:
    """The document the host asked for over vsock: our fresh nonce, the same PCRs."""
    try:
        served = parse_attestation(document_from_response(response))
    except EnclaveAuditError as exc:
        problem: str | None = f"not a document: {exc.message}"
    else:
        problem = None
        if served.nonce != nonce:
            problem = "it does not carry the nonce the host sent"
        elif served.pcrs.values != guest.values:
            problem = "its PCRs differ from the console document's"
    checks.append(
        Check(
            name="qemu.vsock_request",
            outcome=CheckOutcome.FAIL if problem else CheckOutcome.PASS,
            detail=(
                f"document requested by the host over vsock: {problem}"
                if problem
                else "document requested by the host over vsock carries its nonce and the same PCRs"
            ),
        )
    )
    return problem is None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _no_attestation(eif: Path, timeout: float, vm: QemuEnclave, tail: deque[str]) -> str:
    last_err = next((ln for ln in reversed(vm.stderr_tail) if ln.strip()), "")
    last_out = next((ln for ln in reversed(tail) if ln.strip()), "")
    if vm.exited_at is not None:
        why = f"QEMU exited with code {vm.returncode()} before the guest attested"
    else:
        why = f"no attestation from the guest within {timeout:g} s"
    detail = last_err or (f"last console line: {last_out}" if last_out else "no console output")
    return (
        f"{eif.name}: {why} ({detail}); the image must run nsm-attest when its kernel"
        " command line has enclave_audit.attest=1"
    )
