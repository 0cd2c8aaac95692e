"""The accelerator service: attests itself, then runs matrix products it is sent.

Runs outside the enclave (on the host with the accelerator).  It owns a device
identity issued by the (simulated) vendor root, answers each connection's
handshake with a signed report bound to the enclave's nonce and key share, and
computes only on messages the channel authenticated.  Backends: NumPy on the
CPU always; CuPy or PyTorch on CUDA when present.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from enclave_audit.errors import (
    BridgeRefused,
    EnclaveAuditError,
    EnvironmentProblem,
    ProtocolError,
)
from enclave_runtime import cbor
from enclave_runtime.gpu_bridge.attestation import transcript_hash
from enclave_runtime.gpu_bridge.channel import Channel, Direction, Kind, derive_export
from enclave_runtime.gpu_bridge.link import SecureLink
from enclave_runtime.gpu_bridge.transport import BounceBuffer, recv_frame, send_frame
from reference_enclave.gpu_bridge.vendor import Device, Vendor, make_report

F32 = npt.NDArray[np.float32]


def simulated_measurement(component: str, version: str) -> str:
    return hashlib.sha384(f"simulated {component} {version}".encode()).hexdigest()


FIRMWARE_VERSION = "96.00.9F.00.04"
DRIVER_VERSION = "570.124.06"
DEFAULT_MEASUREMENTS = {
    "firmware": simulated_measurement("firmware", FIRMWARE_VERSION),
    "driver": simulated_measurement("driver", DRIVER_VERSION),
    "vbios": simulated_measurement("vbios", "96.00.9F.00.04-gsp"),
}


class DeviceBackend(Protocol):
    name: str

    def load(self, name: str, weight: F32) -> None: ...
    def matmul(self, name: str, x: F32) -> F32: ...


class NumpyDevice:
    name = "cpu"

    def __init__(self) -> None:
        self.weights: dict[str, F32] = {}

    def load(self, name: str, weight: F32) -> None:
        self.weights[name] = np.ascontiguousarray(weight.T)  # (in, out) for x @ W.T

    def matmul(self, name: str, x: F32) -> F32:
        out: F32 = x @ self.weights[name]
        return out


class CudaDevice:
    """CuPy, else PyTorch, on the first CUDA device."""

    def __init__(self) -> None:
        self.weights: dict[str, Any] = {}
        try:
            import cupy

            cupy.cuda.runtime.getDeviceCount()
            self._xp: Any = cupy
            self.name = "cuda (cupy)"
            self._torch = None
        except Exception:
            try:
                import torch

                if not torch.cuda.is_available():
                    raise RuntimeError("no CUDA device")
                self._torch = torch
                self._xp = None
                self.name = f"cuda (torch, {torch.cuda.get_device_name(0)})"
            except Exception as exc:
                raise EnvironmentProblem(f"--device cuda: no usable CUDA backend ({exc})") from None

    def load(self, name: str, weight: F32) -> None:
        if self._torch is not None:
            self.weights[name] = self._torch.from_numpy(np.ascontiguousarray(weight.T)).cuda()
        else:
            self.weights[name] = self._xp.asarray(np.ascontiguousarray(weight.T))

    def matmul(self, name: str, x: F32) -> F32:
        if self._torch is not None:
            out = self._torch.from_numpy(np.ascontiguousarray(x)).cuda() @ self.weights[name]
            return np.asarray(out.cpu().numpy(), dtype=np.float32)
        return np.asarray(
            self._xp.asnumpy(self._xp.asarray(x) @ self.weights[name]), dtype=np.float32
        )


@dataclass
class ServiceConfig:
    socket_path: Path
    device: Device
    measurements: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MEASUREMENTS))
    cc_mode: bool = True
    debug: bool = False
    allow_insecure_plaintext: bool = False
    backend_factory: Callable[[], DeviceBackend] = NumpyDevice


def _array(desc: dict[str, Any], payload: bytes) -> F32:
    shape = desc.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and 0 < d < 1 << 24 for d in shape)
    ):
        raise ProtocolError("tensor descriptor has a bad shape")
    if desc.get("dtype") != "float32" or int(np.prod(shape)) * 4 != len(payload):
        raise ProtocolError("tensor payload does not match its descriptor")
    return np.frombuffer(payload, dtype=np.float32).reshape(shape)


def serve_connection(conn: socket.socket, config: ServiceConfig) -> None:
    """One enclave session: handshake, then load/matmul until close."""
    buffer: BounceBuffer | None = None
    try:
        hello = recv_frame(conn)
        if hello.get("op") != "hello":
            raise ProtocolError("expected hello")
        nonce, share, shm_name = hello.get("nonce"), hello.get("share"), hello.get("shm")
        params = hello.get("params", b"")
        if not (
            isinstance(nonce, bytes)
            and 16 <= len(nonce) <= 64
            and isinstance(share, bytes)
            and len(share) == 32
            and isinstance(shm_name, str)
            and isinstance(params, bytes)
        ):
            raise ProtocolError("malformed hello")
        try:
            settings = cbor.loads(params, what="hello parameters", error=ProtocolError)
            if not isinstance(settings, dict):
                raise TypeError("not a map")
            rotate_after = int(settings["rotate_after"])
            insecure = bool(settings.get("insecure_plaintext", False))
        except (ProtocolError, KeyError, TypeError, ValueError):
            raise ProtocolError("malformed hello parameters") from None
        if insecure and not config.allow_insecure_plaintext:
            raise BridgeRefused("insecure plaintext mode is not enabled on this accelerator")
        buffer = BounceBuffer.attach(shm_name, config.socket_path.parent)
        ephemeral = X25519PrivateKey.generate()
        device_share = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        report = make_report(
            config.device,
            nonce=nonce,
            enclave_share=share,
            device_share=device_share,
            measurements=config.measurements,
            cc_mode=config.cc_mode,
            debug=config.debug,
            version=FIRMWARE_VERSION,
            params=params,
        )
        send_frame(conn, {"op": "report", "report": report})
        channel = None
        if not insecure:
            signed = cbor.loads(report, what="own report", error=ProtocolError)
            assert isinstance(signed, dict)
            body = signed["body"]
            transcript = transcript_hash(nonce, share, device_share, body, params)
            secret = ephemeral.exchange(X25519PublicKey.from_public_bytes(share))
            channel = Channel(
                derive_export(secret, transcript),
                sending=Direction.DEVICE_TO_ENCLAVE,
                rotate_after=rotate_after,
            )
        link = SecureLink(conn, buffer, channel, enclave_side=False)
        backend = config.backend_factory()
        while True:
            kind, desc, payload = link.recv()
            op = desc.get("op")
            name = desc.get("name")
            if kind is Kind.COMMAND and op == "close":
                return
            if not isinstance(name, str):
                raise ProtocolError("tensor descriptor lacks a name")
            if kind is Kind.WEIGHTS and op == "load":
                backend.load(name, _array(desc, payload).copy())
                link.send(Kind.COMMAND, {"op": "loaded", "name": name}, b"")
            elif kind is Kind.INPUT and op == "matmul":
                x = _array(desc, payload)
                out = np.ascontiguousarray(backend.matmul(name, x), dtype=np.float32)
                link.send(
                    Kind.OUTPUT,
                    {"op": "result", "name": name, "shape": list(out.shape), "dtype": "float32"},
                    out.tobytes(),
                )
            else:
                raise ProtocolError(f"unexpected {kind.name} {op!r}")
    except EnclaveAuditError as exc:
        try:
            send_frame(conn, {"op": "error", "message": exc.message})
        except EnclaveAuditError:
            pass
    finally:
        if buffer is not None:
            buffer.close()
        conn.close()


class AcceleratorService:
    """A Unix-socket server; one thread per enclave session."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        path = config.socket_path
        if path.exists():
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        os.chmod(path, 0o600)
        self._sock.listen(8)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="accelerator", daemon=True)

    def start(self) -> AcceleratorService:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=serve_connection, args=(conn, self.config), daemon=True).start()

    def serve_forever(self) -> None:
        self._loop()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        try:
            self.config.socket_path.unlink()
        except FileNotFoundError:
            pass


def device_identity(now: dt.datetime, serial: str = "SIM-0001") -> Device:
    """A device identity issued by the project's simulated vendor root."""
    return Vendor.simulated().issue_device(serial, now)
