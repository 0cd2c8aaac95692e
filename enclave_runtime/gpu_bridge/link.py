"""Sending and receiving whole messages over the bridge, chunk by chunk.

A message (a weight matrix, an activation, a result) is split into chunks that
fit a bounce-buffer region.  Each chunk is sealed by the channel with a
descriptor (op, tensor name, shape, chunk index and count, total length) in its
AAD; the receiver authenticates every chunk before it uses a byte of it, and
checks the descriptors form one complete message in order.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import cbor2

from enclave_runtime import cbor
from enclave_runtime.errors import BridgeRefused, ProtocolError
from enclave_runtime.gpu_bridge.channel import Channel, Direction, Kind, Sealed
from enclave_runtime.gpu_bridge.transport import CHUNK, BounceBuffer, recv_frame, send_frame

MAX_MESSAGE = 1 << 31


@dataclass
class LinkStats:
    messages: int = 0
    chunks: int = 0
    payload_bytes: int = 0  # sent
    received_bytes: int = 0


class SecureLink:
    """One side of the bridge.  ``channel`` None is the insecure plaintext baseline."""

    def __init__(
        self,
        sock: socket.socket,
        buffer: BounceBuffer,
        channel: Channel | None,
        *,
        enclave_side: bool,
    ) -> None:
        self.sock = sock
        self.buffer = buffer
        self.channel = channel
        self.enclave_side = enclave_side
        self.stats = LinkStats()

    @property
    def _peer_direction(self) -> Direction:
        return Direction.DEVICE_TO_ENCLAVE if self.enclave_side else Direction.ENCLAVE_TO_DEVICE

    def send(self, kind: Kind, descriptor: dict[str, Any], payload: bytes | memoryview) -> None:
        view = memoryview(payload).cast("B")
        total = len(view)
        count = max(1, -(-total // CHUNK))
        for index in range(count):
            chunk = view[index * CHUNK : (index + 1) * CHUNK]
            desc = cbor2.dumps({**descriptor, "chunk": index, "chunks": count, "total": total})
            frame: dict[str, Any] = {"op": "data", "kind": int(kind), "desc": desc}
            if self.channel is not None:
                sealed = self.channel.seal(kind, desc, chunk)
                data = sealed.ciphertext
                frame.update(epoch=sealed.epoch, counter=sealed.counter)
            else:
                data = bytes(chunk)
            frame["length"] = self.buffer.write(self.enclave_side, data)
            send_frame(self.sock, frame)
            if index + 1 < count:
                # the region is reused by the next chunk: wait until the peer has read it;
                # after the last chunk the peer's reply (or next request) says the same
                ack = recv_frame(self.sock)
                if ack.get("op") != "ack":
                    raise ProtocolError(f"expected an ack, got {ack.get('op')!r}")
            self.stats.chunks += 1
        self.stats.messages += 1
        self.stats.payload_bytes += total

    def recv(self, expect: Kind | None = None) -> tuple[Kind, dict[str, Any], bytes]:
        parts: list[bytes] = []
        first: dict[str, Any] | None = None
        kind: Kind | None = None
        while True:
            frame = recv_frame(self.sock)
            if frame.get("op") != "data":
                raise ProtocolError(f"expected data, got {frame.get('op')!r}")
            try:
                frame_kind = Kind(int(frame["kind"]))
                desc_bytes = frame["desc"]
                length = int(frame["length"])
            except (KeyError, ValueError, TypeError):
                raise ProtocolError("malformed data frame") from None
            if not isinstance(desc_bytes, bytes):
                raise ProtocolError("malformed data frame")
            data = self.buffer.read(not self.enclave_side, length)
            if self.channel is not None:
                try:
                    sealed = Sealed(
                        self._peer_direction,
                        int(frame["epoch"]),
                        int(frame["counter"]),
                        frame_kind,
                        desc_bytes,
                        data,
                    )
                except (KeyError, ValueError, TypeError):
                    raise ProtocolError("data frame lacks epoch/counter") from None
                plain = self.channel.open(sealed, expect_kind=expect)
            else:
                if expect is not None and frame_kind is not expect:
                    raise ProtocolError(f"expected {expect.name}, got {frame_kind.name}")
                plain = data
            # only authenticated descriptors are parsed
            try:
                desc = cbor.loads(desc_bytes, what="message descriptor", error=ProtocolError)
                if not isinstance(desc, dict):
                    raise TypeError("not a map")
                index, count, total = int(desc["chunk"]), int(desc["chunks"]), int(desc["total"])
            except (ProtocolError, KeyError, ValueError, TypeError):
                raise ProtocolError("malformed message descriptor") from None
            if first is None:
                first, kind = desc, frame_kind
                if not 0 < count <= MAX_MESSAGE // CHUNK + 1 or not 0 <= total <= MAX_MESSAGE:
                    raise BridgeRefused("message descriptor out of bounds")
            elif (
                frame_kind is not kind
                or count != first["chunks"]
                or total != first["total"]
                or {k: v for k, v in desc.items() if k != "chunk"}
                != {k: v for k, v in first.items() if k != "chunk"}
            ):
                raise BridgeRefused("chunk does not belong to the message in progress")
            if index != len(parts):
                raise BridgeRefused(f"chunk {index} out of order (expected {len(parts)})")
            parts.append(plain)
            if len(parts) < count:
                send_frame(self.sock, {"op": "ack"})
            if len(parts) == count:
                payload = b"".join(parts)
                if len(payload) != total:
                    raise BridgeRefused("message length does not match its descriptor")
                body = {k: v for k, v in first.items() if k not in ("chunk", "chunks", "total")}
                self.stats.received_bytes += total
                return frame_kind, body, payload
