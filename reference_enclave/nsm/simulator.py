"""A simulated NSM on the host side, reachable by the enclave through a Unix socket.

It keeps 32 SHA-384 PCRs: PCR0/1/2 (and 8) are the measurements of the EIF being
launched (from :func:`builder.eif.describe_eif`, never configured by hand), PCR3 is
zero (no parent role) and PCR4 the extend of the simulated instance id, as on
Nitro; PCR0-15 are locked at "boot". It answers DescribePCR, ExtendPCR, LockPCR,
LockPCRs, DescribeNSM, Attestation and GetRandom with the device's CBOR encodings,
and signs attestation documents ES384 in AWS's exact layout with the simulation
CA (:mod:`reference_enclave.nsm.sim_ca`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from builder.eif.pcr import extend_string, tpm_extend
from enclave_audit.cose import Sign1
from enclave_audit.errors import InvalidInput, ProtocolError, ServiceUnavailable
from enclave_runtime import cbor
from enclave_runtime.nsm import protocol
from enclave_runtime.nsm.client import recv_frame, send_frame
from reference_enclave.nsm.document import sign_document
from reference_enclave.nsm.sim_ca import SimulationCa, new_module_id

MAX_PCRS = 32
BOOT_LOCKED = 16
PCR_SIZE = 48
ATTESTATION_FIELD_LIMIT = 1024


class SimulatedNsm:
    """The NSM state machine. ``handle`` takes request bytes and returns response bytes."""

    def __init__(
        self,
        image_pcrs: Mapping[int, bytes],
        ca: SimulationCa,
        *,
        now: Any = None,
    ) -> None:
        for index in image_pcrs:
            if index not in (0, 1, 2, 8):
                raise InvalidInput(f"image PCR{index}: only PCR0/1/2/8 come from the image")
        self.instance_id, self.module_id = new_module_id()
        self._pcrs = [bytes(PCR_SIZE) for _ in range(MAX_PCRS)]
        for index, value in image_pcrs.items():
            if len(value) != PCR_SIZE:
                raise InvalidInput(f"image PCR{index}: must be {PCR_SIZE} bytes")
            self._pcrs[index] = bytes(value)
        self._pcrs[4] = extend_string(self.instance_id)
        self._locked = set(range(BOOT_LOCKED))
        self._ca = ca
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._leaf, self._leaf_key = ca.issue_leaf(self.module_id, now=self._now())
        self._lock = threading.Lock()

    @classmethod
    def for_eif(cls, image: Path, ca: SimulationCa) -> SimulatedNsm:
        """The simulator for the EIF at ``image``: PCRs measured from the file itself."""
        from builder.eif import describe_eif

        description = describe_eif(image)
        return cls(dict(description.pcrs.values), ca)

    # -- state inspection (host side, for tests and the launcher's log) -------------

    def pcr(self, index: int) -> bytes:
        return self._pcrs[index]

    def locked(self) -> list[int]:
        return sorted(self._locked)

    @property
    def leaf_certificate_der(self) -> bytes:
        return self._leaf.public_bytes(serialization.Encoding.DER)

    # -- the device ------------------------------------------------------------------

    def handle(self, data: bytes) -> bytes:
        with self._lock:
            try:
                request = protocol.decode_request(data)
            except protocol.NsmError as exc:
                return protocol.encode_error(exc.code)
            except ProtocolError:
                return protocol.encode_error("InvalidOperation")
            try:
                return self._dispatch(request)
            except _DeviceError as exc:
                return protocol.encode_error(exc.code)

    def _index(self, fields: dict[str, Any]) -> int:
        index = fields.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 0x10000:
            raise _DeviceError("InvalidArgument")
        if index >= MAX_PCRS:
            raise _DeviceError("InvalidIndex")
        return index

    def _dispatch(self, request: protocol.Request) -> bytes:
        name, fields = request.name, request.fields
        if name == "DescribePCR":
            index = self._index(fields)
            return protocol.encode_response(
                name, {"lock": index in self._locked, "data": self._pcrs[index]}
            )
        if name == "ExtendPCR":
            index = self._index(fields)
            data = fields.get("data")
            if not isinstance(data, bytes):
                raise _DeviceError("InvalidArgument")
            if index in self._locked:
                raise _DeviceError("ReadOnlyIndex")
            self._pcrs[index] = tpm_extend(data, self._pcrs[index])
            return protocol.encode_response(name, {"data": self._pcrs[index]})
        if name == "LockPCR":
            self._locked.add(self._index(fields))
            return protocol.encode_response(name, None)
        if name == "LockPCRs":
            range_ = fields.get("range")
            if (
                not isinstance(range_, int)
                or isinstance(range_, bool)
                or not 0 <= range_ <= MAX_PCRS
            ):
                raise _DeviceError("InvalidIndex")
            self._locked.update(range(range_))
            return protocol.encode_response(name, None)
        if name == "DescribeNSM" and not fields:
            return protocol.encode_response(
                name,
                {
                    "version_major": 1,
                    "version_minor": 0,
                    "version_patch": 0,
                    "module_id": self.module_id,
                    "max_pcrs": MAX_PCRS,
                    "locked_pcrs": sorted(self._locked),
                    "digest": "SHA384",
                },
            )
        if name == "GetRandom" and not fields:
            return protocol.encode_response(name, {"random": secrets.token_bytes(256)})
        if name == "Attestation":
            return protocol.encode_response(name, {"document": self._attest(fields)})
        raise _DeviceError("InvalidOperation")

    def _attest(self, fields: dict[str, Any]) -> bytes:
        values: dict[str, bytes | None] = {}
        for key in ("user_data", "nonce", "public_key"):
            value = fields.get(key)
            if value is not None and not isinstance(value, bytes):
                raise _DeviceError("InvalidArgument")
            if value is not None and len(value) > ATTESTATION_FIELD_LIMIT:
                raise _DeviceError("InputTooLarge")
            values[key] = value
        now = self._now()
        if now >= self._leaf.not_valid_after_utc - dt.timedelta(minutes=5):
            self._leaf, self._leaf_key = self._ca.issue_leaf(self.module_id, now=now)
        return sign_document(
            module_id=self.module_id,
            timestamp_ms=int(now.timestamp() * 1000),
            pcrs={i: self._pcrs[i] for i in sorted(self._locked)},
            leaf=self._leaf,
            leaf_key=self._leaf_key,
            cabundle=[self._ca.root, self._ca.intermediate],
            public_key=values["public_key"],
            user_data=values["user_data"],
            nonce=values["nonce"],
        )


class _DeviceError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class NsmSocketServer:
    """Serves a :class:`SimulatedNsm` on a Unix socket (one thread per connection)."""

    def __init__(self, nsm: SimulatedNsm, path: Path) -> None:
        self.nsm = nsm
        self.path = Path(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._sock.bind(os.fspath(self.path))
            os.chmod(self.path, 0o600)  # the enclave side runs as root, like /init
            self._sock.listen(8)
        except OSError as exc:
            self._sock.close()
            raise ServiceUnavailable(f"cannot serve the simulated NSM at {path}: {exc}") from None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="nsm-sim", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    request = recv_frame(conn, protocol.MAX_REQUEST + 64)
                except (ServiceUnavailable, ProtocolError, OSError):
                    return
                if len(request) > protocol.MAX_REQUEST:
                    response = protocol.encode_error("InputTooLarge")
                else:
                    response = self.nsm.handle(request)
                try:
                    send_frame(conn, response)
                except OSError:
                    return

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> NsmSocketServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def decode_document_payload(document: bytes) -> dict[str, Any]:
    """The payload map of a COSE_Sign1 document (no verification; for logs and tests)."""
    message = Sign1.decode(document, what="attestation document")
    fields = cbor.loads(message.payload, what="attestation document payload")
    if not isinstance(fields, dict):
        raise InvalidInput("attestation document payload is not a map")
    return dict(fields)
