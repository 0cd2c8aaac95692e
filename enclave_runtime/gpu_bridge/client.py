"""The enclave side of the bridge: a MatmulBackend that runs products on the accelerator.

``connect`` verifies the accelerator's report against the image's pinned
reference values before any key exists; weights are sent once per session,
activations per step, everything through the authenticated channel.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path

import cbor2
import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from enclave_runtime.errors import BridgeRefused, ProtocolError, ServiceUnavailable
from enclave_runtime.gpu_bridge.attestation import ReferenceValues, VerifiedDevice, verify_report
from enclave_runtime.gpu_bridge.channel import (
    DEFAULT_ROTATE_AFTER,
    Channel,
    Direction,
    Kind,
    derive_export,
)
from enclave_runtime.gpu_bridge.link import SecureLink
from enclave_runtime.gpu_bridge.transport import BounceBuffer, recv_frame, send_frame

F32 = npt.NDArray[np.float32]
REFERENCE_VALUES = Path(__file__).with_name("reference-values.json")


class BridgeBackend:
    """``MatmulBackend`` over the encrypted bridge."""

    def __init__(
        self,
        socket_path: Path,
        reference: ReferenceValues,
        *,
        now: dt.datetime | None = None,
        rotate_after: int = DEFAULT_ROTATE_AFTER,
        insecure_plaintext: bool = False,
        buffer_dir: Path | None = None,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.buffer_dir = buffer_dir
        self.reference = reference
        self.now = now
        self.rotate_after = rotate_after
        self.insecure_plaintext = insecure_plaintext
        self.device: VerifiedDevice | None = None
        self._link: SecureLink | None = None
        self._buffer: BounceBuffer | None = None
        self._sock: socket.socket | None = None

    # -- session ---------------------------------------------------------------------

    def connect(self) -> VerifiedDevice:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.socket_path))
        except OSError as exc:
            sock.close()
            raise ServiceUnavailable(
                f"accelerator at {self.socket_path}: {exc.strerror or exc}"
            ) from None
        self._sock = sock
        self._buffer = BounceBuffer.create(self.buffer_dir)
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        nonce = os.urandom(32)
        params = cbor2.dumps(
            {"rotate_after": self.rotate_after, "insecure_plaintext": self.insecure_plaintext}
        )
        send_frame(
            sock,
            {
                "op": "hello",
                "nonce": nonce,
                "share": share,
                "shm": self._buffer.name,
                "params": params,
            },
        )
        frame = recv_frame(sock)
        report = frame.get("report")
        if frame.get("op") != "report" or not isinstance(report, bytes):
            raise ProtocolError("accelerator did not answer with a report")
        when = self.now or dt.datetime.now(dt.UTC)
        device = verify_report(
            report, self.reference, nonce=nonce, enclave_share=share, now=when, params=params
        )
        channel = None
        if not self.insecure_plaintext:
            secret = ephemeral.exchange(X25519PublicKey.from_public_bytes(device.device_share))
            channel = Channel(
                derive_export(secret, device.transcript),
                sending=Direction.ENCLAVE_TO_DEVICE,
                rotate_after=self.rotate_after,
            )
        self._link = SecureLink(sock, self._buffer, channel, enclave_side=True)
        self.device = device
        return device

    @property
    def link(self) -> SecureLink:
        if self._link is None:
            raise BridgeRefused("bridge used before the accelerator was verified")
        return self._link

    @property
    def buffer(self) -> BounceBuffer:
        if self._buffer is None:
            raise BridgeRefused("bridge not connected")
        return self._buffer

    def close(self) -> None:
        if self._link is not None:
            try:
                self._link.send(Kind.COMMAND, {"op": "close"}, b"")
            except (ServiceUnavailable, ProtocolError, BridgeRefused):
                pass
        if self._sock is not None:
            self._sock.close()
        if self._buffer is not None:
            self._buffer.close()
        self._link = self._sock = self._buffer = None

    def __enter__(self) -> BridgeBackend:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- MatmulBackend -----------------------------------------------------------------

    def register_weight(self, name: str, w: F32) -> None:
        weight = np.ascontiguousarray(w, dtype=np.float32)
        self.link.send(
            Kind.WEIGHTS,
            {"op": "load", "name": name, "shape": list(weight.shape), "dtype": "float32"},
            weight.data,
        )
        _kind, desc, _ = self.link.recv(Kind.COMMAND)
        if desc.get("op") != "loaded" or desc.get("name") != name:
            raise ProtocolError(f"accelerator did not confirm loading {name}")

    def matmul(self, name: str, x: F32) -> F32:
        arr = np.ascontiguousarray(x, dtype=np.float32)
        squeeze = arr.ndim == 1
        if squeeze:
            arr = arr[None, :]
        self.link.send(
            Kind.INPUT,
            {"op": "matmul", "name": name, "shape": list(arr.shape), "dtype": "float32"},
            arr.data,
        )
        _, desc, payload = self.link.recv(Kind.OUTPUT)
        shape = desc.get("shape")
        if desc.get("name") != name or not isinstance(shape, list) or len(shape) != 2:
            raise ProtocolError("accelerator result does not answer the request")
        if shape[0] != arr.shape[0] or int(np.prod(shape)) * 4 != len(payload):
            raise ProtocolError("accelerator result has the wrong shape")
        out = np.frombuffer(payload, dtype=np.float32).reshape(shape).copy()
        return out[0] if squeeze else out


def load_reference_values(path: Path | None = None) -> ReferenceValues:
    from enclave_runtime.files import read_bytes

    target = path or REFERENCE_VALUES
    return ReferenceValues.from_json(read_bytes(target, limit=1 << 20), source=str(target))
