"""The bridge's encrypted channel: keys bound to the verified report, strict counters.

Key schedule (after the device report verified)::

    master  = HKDF-Extract(salt = transcript hash, IKM = X25519 shared secret)
    export  = HKDF-Expand(master, "enclave-audit bridge export", 32)
    k[dir]  = HKDF-Expand(export, "key/<dir>", 32)      dir in {e2d, d2e}
    m[dir]  = HKDF-Expand(export, "mask/<dir>", 12)

Each message is AES-256-GCM with IV = BE96(counter) XOR mask; the AAD binds the
direction, key epoch, counter, message kind and the command descriptor, so a
ciphertext cannot be replayed, reordered, moved to the other direction or
attached to another command.  A receiver accepts only ``counter == expected``.
When a counter reaches the rotation threshold the key moves to the next epoch
(``k' = HKDF-Expand(SHA-256(k), "rotate", 32)``); a sender that would pass the
hard limit without rotating refuses to send.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from enclave_runtime.errors import BridgeRefused

#: rotate keys after this many messages in one direction (small values in tests)
DEFAULT_ROTATE_AFTER = 1 << 32
#: a key never protects more messages than this
COUNTER_LIMIT = 1 << 32

_AAD = struct.Struct(">4sBIQBI")  # magic, direction, epoch, counter, kind, descriptor length
_MAGIC = b"EABR"


class Direction(IntEnum):
    ENCLAVE_TO_DEVICE = 1
    DEVICE_TO_ENCLAVE = 2

    @property
    def label(self) -> str:
        return "e2d" if self is Direction.ENCLAVE_TO_DEVICE else "d2e"


class Kind(IntEnum):
    WEIGHTS = 1
    INPUT = 2
    OUTPUT = 3
    COMMAND = 4


def _expand(key: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(key)


def derive_export(shared_secret: bytes, transcript_hash: bytes) -> bytes:
    """HKDF-Extract(transcript hash, secret) then Expand to the export secret."""
    import hmac

    master = hmac.new(transcript_hash, shared_secret, hashlib.sha256).digest()
    return _expand(master, b"enclave-audit bridge export", 32)


@dataclass
class _KeyState:
    key: bytes
    mask: bytes
    epoch: int = 0
    counter: int = 0  # counter of the next message

    def __post_init__(self) -> None:
        self.aead = AESGCM(self.key)
        self.mask_int = int.from_bytes(self.mask, "big")

    def iv(self, counter: int) -> bytes:
        """BE96(counter) XOR mask."""
        return (counter ^ self.mask_int).to_bytes(12, "big")

    def rotate(self) -> None:
        self.key = _expand(hashlib.sha256(self.key).digest(), b"rotate", 32)
        self.mask = _expand(hashlib.sha256(self.mask).digest(), b"rotate-mask", 12)
        self.aead = AESGCM(self.key)
        self.mask_int = int.from_bytes(self.mask, "big")
        self.epoch += 1
        self.counter = 0


@dataclass(frozen=True)
class Sealed:
    """What crosses the untrusted transport: header fields plus ciphertext (tag appended)."""

    direction: Direction
    epoch: int
    counter: int
    kind: Kind
    descriptor: bytes
    ciphertext: bytes


class Channel:
    """One side's sending and receiving state."""

    def __init__(
        self,
        export: bytes,
        *,
        sending: Direction,
        rotate_after: int = DEFAULT_ROTATE_AFTER,
        counter_limit: int = COUNTER_LIMIT,
        auto_rotate: bool = True,
    ) -> None:
        if rotate_after > counter_limit:
            raise BridgeRefused("rotation threshold above the counter limit")
        receiving = (
            Direction.DEVICE_TO_ENCLAVE
            if sending is Direction.ENCLAVE_TO_DEVICE
            else Direction.ENCLAVE_TO_DEVICE
        )
        self.sending, self.receiving = sending, receiving
        self._tx = _KeyState(
            _expand(export, f"key/{sending.label}".encode(), 32),
            _expand(export, f"mask/{sending.label}".encode(), 12),
        )
        self._rx = _KeyState(
            _expand(export, f"key/{receiving.label}".encode(), 32),
            _expand(export, f"mask/{receiving.label}".encode(), 12),
        )
        self.rotate_after = rotate_after
        self.counter_limit = counter_limit
        self.auto_rotate = auto_rotate
        self.bytes_sealed = 0

    @staticmethod
    def _aad(
        direction: Direction, epoch: int, counter: int, kind: Kind, descriptor: bytes
    ) -> bytes:
        return _AAD.pack(_MAGIC, direction, epoch, counter, kind, len(descriptor)) + descriptor

    def seal(self, kind: Kind, descriptor: bytes, plaintext: bytes | memoryview) -> Sealed:
        state = self._tx
        if state.counter >= self.rotate_after:
            if not self.auto_rotate:
                if state.counter >= self.counter_limit:
                    raise BridgeRefused(
                        f"{self.sending.label}: message counter exhausted at {state.counter}"
                        " and key rotation is disabled; refusing to reuse an IV"
                    )
            else:
                state.rotate()
        if state.counter >= self.counter_limit:
            raise BridgeRefused(f"{self.sending.label}: message counter exhausted")
        aad = self._aad(self.sending, state.epoch, state.counter, kind, descriptor)
        ct = state.aead.encrypt(state.iv(state.counter), plaintext, aad)
        sealed = Sealed(self.sending, state.epoch, state.counter, kind, descriptor, ct)
        state.counter += 1
        self.bytes_sealed += len(plaintext)
        return sealed

    def open(self, sealed: Sealed, *, expect_kind: Kind | None = None) -> bytes:
        """Authenticate and decrypt the next message; anything out of order is refused."""
        state = self._rx
        if sealed.direction is not self.receiving:
            raise BridgeRefused(
                f"message for direction {sealed.direction.label} received on {self.receiving.label}"
            )
        if expect_kind is not None and sealed.kind is not expect_kind:
            raise BridgeRefused(f"expected a {expect_kind.name} message, got {sealed.kind.name}")
        if (
            sealed.epoch == state.epoch + 1
            and sealed.counter == 0
            and (state.counter >= self.rotate_after)
        ):
            state.rotate()
        if sealed.epoch != state.epoch:
            raise BridgeRefused(f"key epoch {sealed.epoch}, expected {state.epoch}")
        if sealed.counter != state.counter:
            what = "replayed" if sealed.counter < state.counter else "reordered or dropped"
            raise BridgeRefused(
                f"message counter {sealed.counter}, expected {state.counter} ({what} message)"
            )
        aad = self._aad(
            sealed.direction, sealed.epoch, sealed.counter, sealed.kind, sealed.descriptor
        )
        try:
            plain = state.aead.decrypt(state.iv(sealed.counter), sealed.ciphertext, aad)
        except InvalidTag:
            raise BridgeRefused(
                f"{self.receiving.label} message {sealed.counter}: authentication failed"
                " (tampered ciphertext or descriptor)"
            ) from None
        state.counter += 1
        return plain
