"""The client <-> enclave protocol, shared by both ends (stdlib + cryptography only).

HTTP/1.1 carried through the untrusted host proxy:

* ``GET /v1/attestation?nonce=<hex>``: ``{"document": b64}``, an NSM attestation
  document whose ``public_key`` is the enclave's X25519 HPKE key (raw 32 bytes),
  ``user_data`` is :data:`HPKE_KEY_PURPOSE` and ``nonce`` the client's challenge.
* ``POST /v1/infer`` with ``{"enc": b64, "ciphertext": b64}``: HPKE base mode
  (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM), ``info`` =
  :data:`REQUEST_INFO`, plaintext a JSON request. Answer ``{"nonce": b64,
  "ciphertext": b64}``: AES-256-GCM under a key derived OHTTP-style from the request's
  HPKE context (:func:`enclave_runtime.hpke.response_keys`), so only the sender of
  that request can read it and it cannot be moved to another request.

Errors are ``{"error": "<short reason>"}`` with a 4xx/5xx status, never detail
that would tell a decryption failure from a malformed request: 400 (malformed or
undecryptable), 409 (a sealed request already answered: replay), 413 (the prompt is
over the enclave's token budget), 503 (busy: the queue is full or the wait too long,
or the request's time budget was spent).

Every request carries ``sent_at`` (the client's clock, Unix seconds) inside the
sealed plaintext; the enclave answers each encapsulated key (``enc``) once and only
within :data:`REPLAY_WINDOW` seconds of ``sent_at``, so a captured request cannot be
replayed to make the enclave work for the host.

JSON on both ends is parsed strictly (:mod:`enclave_runtime.strictjson`): a number out
of range, deep nesting, a duplicate key or a lone surrogate is a :class:`ProtocolError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave_runtime import hpke, strictjson
from enclave_runtime.errors import ProtocolError, ServiceUnavailable

HPKE_KEY_PURPOSE = b"enclave-audit/v1 hpke-key 0020-0001-0002"
REQUEST_INFO = b"enclave-audit/v1 inference request"
RESPONSE_LABEL = b"enclave-audit/v1 inference response"
RESPONSE_NONCE_SIZE = 32
MIN_NONCE = 16
MAX_NONCE = 512
MAX_BODY = 256 * 1024
MAX_PROMPT_CHARS = 8192
MAX_TOKENS_LIMIT = 512
#: seconds a sealed request stays acceptable around its ``sent_at``
REPLAY_WINDOW = 300.0


class Replayed(ProtocolError):
    """A sealed request the enclave has already answered (HTTP 409)."""


class OverBudget(ProtocolError):
    """A request over the enclave's prompt budget (HTTP 413)."""


class Busy(ServiceUnavailable):
    """The enclave cannot take the request now (HTTP 503)."""


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{what}: not valid base64") from None


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """A JSON object, parsed strictly; anything else is a :class:`ProtocolError`."""
    if len(body) > MAX_BODY:
        raise ProtocolError(f"{what}: body larger than {MAX_BODY} bytes")
    return strictjson.loads_object(body, what=what, error=ProtocolError, max_depth=8)


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ProtocolError(f"{what} must be a number")
    return float(value)


def _integer(value: object, what: str, high: int = 1 << 31) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ProtocolError(f"{what} must be an integer 0..{high}")
    return value


@dataclass(frozen=True)
class InferenceRequest:
    prompt: str
    max_tokens: int = 48
    sent_at: float = field(default_factory=time.time)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"prompt": self.prompt, "max_tokens": self.max_tokens, "sent_at": self.sent_at}
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> InferenceRequest:
        obj = json_object(data, "inference request")
        if set(obj) - {"prompt", "max_tokens", "sent_at"}:
            raise ProtocolError("inference request: unknown fields")
        prompt, max_tokens = obj.get("prompt"), obj.get("max_tokens", 48)
        if not isinstance(prompt, str) or not prompt or len(prompt) > MAX_PROMPT_CHARS:
            raise ProtocolError("inference request: prompt missing or too long")
        if (
            not isinstance(max_tokens, int)
            or isinstance(max_tokens, bool)
            or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
        ):
            raise ProtocolError(f"inference request: max_tokens must be 1..{MAX_TOKENS_LIMIT}")
        sent_at = _number(obj.get("sent_at"), "inference request: sent_at")
        return cls(prompt, max_tokens, sent_at)


@dataclass(frozen=True)
class InferenceAnswer:
    text: str
    tokens: int
    prompt_tokens: int
    stop_reason: str
    prefill_seconds: float
    decode_seconds: float

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> InferenceAnswer:
        obj = json_object(data, "inference answer")
        fields = ("text", "tokens", "prompt_tokens", "stop_reason")
        if any(name not in obj for name in (*fields, "prefill_seconds", "decode_seconds")):
            raise ProtocolError("inference answer: fields missing")
        text, reason = obj["text"], obj["stop_reason"]
        if not isinstance(text, str) or not isinstance(reason, str):
            raise ProtocolError("inference answer: text and stop_reason must be strings")
        return cls(
            text=text,
            tokens=_integer(obj["tokens"], "inference answer: tokens"),
            prompt_tokens=_integer(obj["prompt_tokens"], "inference answer: prompt_tokens"),
            stop_reason=reason,
            prefill_seconds=_number(obj["prefill_seconds"], "inference answer: prefill_seconds"),
            decode_seconds=_number(obj["decode_seconds"], "inference answer: decode_seconds"),
        )


# --- client side -------------------------------------------------------------------


@dataclass
class SealedRequest:
    """What the client keeps to read the answer: the HPKE context and ``enc``."""

    body: bytes
    enc: bytes
    context: hpke.Context


def seal_request(public_key: X25519PublicKey, request: InferenceRequest) -> SealedRequest:
    enc, ctx = hpke.setup_base_sender(public_key, REQUEST_INFO)
    ct = ctx.seal(request.to_bytes())
    body = json.dumps({"enc": b64e(enc), "ciphertext": b64e(ct)}).encode()
    return SealedRequest(body, enc, ctx)


@dataclass(frozen=True)
class SealedAnswer:
    """The answer's envelope as relayed by the host: not yet authenticated."""

    nonce: bytes
    ciphertext: bytes


def parse_answer(body: bytes) -> SealedAnswer:
    """The envelope ``{"nonce", "ciphertext"}``; :class:`ProtocolError` if malformed."""
    obj = json_object(body, "enclave answer")
    nonce = b64d(obj.get("nonce"), "answer nonce")
    ct = b64d(obj.get("ciphertext"), "answer ciphertext")
    if len(nonce) != RESPONSE_NONCE_SIZE:
        raise ProtocolError("answer nonce has the wrong length")
    return SealedAnswer(nonce, ct)


def open_answer(sealed: SealedRequest, body: bytes | SealedAnswer) -> InferenceAnswer:
    envelope = body if isinstance(body, SealedAnswer) else parse_answer(body)
    nonce, ct = envelope.nonce, envelope.ciphertext
    key, iv = hpke.response_keys(sealed.context, sealed.enc, nonce, RESPONSE_LABEL)
    try:
        plaintext = AESGCM(key).decrypt(iv, ct, b"")
    except (InvalidTag, ValueError):
        raise ProtocolError("answer does not decrypt under this request's response key") from None
    return InferenceAnswer.from_bytes(plaintext)


# --- enclave side ------------------------------------------------------------------


@dataclass
class OpenedRequest:
    request: InferenceRequest
    enc: bytes
    context: hpke.Context


def open_request(private_key: X25519PrivateKey, body: bytes) -> OpenedRequest:
    obj = json_object(body, "sealed request")
    enc = b64d(obj.get("enc"), "enc")
    ct = b64d(obj.get("ciphertext"), "ciphertext")
    try:
        ctx = hpke.setup_base_recipient(enc, private_key, REQUEST_INFO)
        plaintext = ctx.open(ct)
    except hpke.HpkeError:
        raise ProtocolError("request does not decrypt") from None
    return OpenedRequest(InferenceRequest.from_bytes(plaintext), enc, ctx)


def seal_answer(opened: OpenedRequest, answer: InferenceAnswer) -> bytes:
    nonce = os.urandom(RESPONSE_NONCE_SIZE)
    key, iv = hpke.response_keys(opened.context, opened.enc, nonce, RESPONSE_LABEL)
    ct = AESGCM(key).encrypt(iv, answer.to_bytes(), b"")
    return json.dumps({"nonce": b64e(nonce), "ciphertext": b64e(ct)}).encode()
