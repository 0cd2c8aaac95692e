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
that would tell a decryption failure from a malformed request.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave_runtime import hpke
from enclave_runtime.errors import ProtocolError

HPKE_KEY_PURPOSE = b"enclave-audit/v1 hpke-key 0020-0001-0002"
REQUEST_INFO = b"enclave-audit/v1 inference request"
RESPONSE_LABEL = b"enclave-audit/v1 inference response"
RESPONSE_NONCE_SIZE = 32
MIN_NONCE = 16
MAX_NONCE = 512
MAX_BODY = 256 * 1024
MAX_PROMPT_CHARS = 8192
MAX_TOKENS_LIMIT = 512


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
    if len(body) > MAX_BODY:
        raise ProtocolError(f"{what}: body larger than {MAX_BODY} bytes")
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ProtocolError(f"{what}: not JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: not a JSON object")
    return value


@dataclass(frozen=True)
class InferenceRequest:
    prompt: str
    max_tokens: int = 48

    def to_bytes(self) -> bytes:
        return json.dumps({"prompt": self.prompt, "max_tokens": self.max_tokens}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> InferenceRequest:
        obj = json_object(data, "inference request")
        prompt, max_tokens = obj.get("prompt"), obj.get("max_tokens", 48)
        if not isinstance(prompt, str) or not prompt or len(prompt) > MAX_PROMPT_CHARS:
            raise ProtocolError("inference request: prompt missing or too long")
        if (
            not isinstance(max_tokens, int)
            or isinstance(max_tokens, bool)
            or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
        ):
            raise ProtocolError(f"inference request: max_tokens must be 1..{MAX_TOKENS_LIMIT}")
        return cls(prompt, max_tokens)


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
        try:
            return cls(
                text=str(obj["text"]),
                tokens=int(obj["tokens"]),
                prompt_tokens=int(obj["prompt_tokens"]),
                stop_reason=str(obj["stop_reason"]),
                prefill_seconds=float(obj["prefill_seconds"]),
                decode_seconds=float(obj["decode_seconds"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("inference answer: fields missing or of the wrong type") from None


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


def open_answer(sealed: SealedRequest, body: bytes) -> InferenceAnswer:
    obj = json_object(body, "enclave answer")
    nonce = b64d(obj.get("nonce"), "answer nonce")
    ct = b64d(obj.get("ciphertext"), "answer ciphertext")
    if len(nonce) != RESPONSE_NONCE_SIZE:
        raise ProtocolError("answer nonce has the wrong length")
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
