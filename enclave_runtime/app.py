"""The enclave application: boot, attested key release, measured model load, serving.

Boot, in order (each step fails closed; nothing is served before the last one):

1. read the pinned runtime config baked into the image;
2. open the NSM (device or simulated device) and make an RSA-2048 key pair (for
   KMS) and an X25519 key pair (for clients), both in enclave memory only;
3. fetch the encrypted model file and the parent's KMS credentials from the host;
4. ask KMS (boto3, through a local forwarder to the host's KMS relay) to decrypt the
   model's wrapped data key with a ``Recipient``: an attestation document whose
   ``public_key`` is the RSA key; open ``CiphertextForRecipient`` with that key;
5. decrypt the model, check its SHA-384 against the pinned digest, extend PCR16 with
   that digest and lock PCR16, so every later attestation names the model;
6. load the model and serve ``/v1/attestation`` and ``/v1/infer`` (see :mod:`.wire`).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import http.server
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from enclave_runtime import wire
from enclave_runtime.channels import Endpoint, Forwarder, http_get
from enclave_runtime.config import MODEL_PCR, HostLinks, RuntimeConfig
from enclave_runtime.errors import (
    EnclaveAuditError,
    KmsRefused,
    ModelTampered,
    ProtocolError,
    ServiceUnavailable,
)
from enclave_runtime.model_loader import EncryptedModel
from enclave_runtime.nsm.client import NsmClient, open_nsm

MAX_MODEL_BYTES = 2 << 30
KEY_ENCRYPTION_ALGORITHM = "RSAES_OAEP_SHA_256"
#: client connections served at once (each one a thread); more are closed at once
MAX_CLIENT_CONNECTIONS = 64
#: seconds a client connection may take for each read (request line, headers, body)
CLIENT_READ_TIMEOUT = 15
#: encapsulated keys remembered (one per request answered within the replay window)
REPLAY_CAPACITY = 100_000


class ReplayGuard:
    """Each sealed request (its HPKE ``enc``) is answered once, and only around ``sent_at``.

    ``enc`` is fresh randomness of the client's for every request, and the request
    decrypts only with it: the same ``enc`` twice is the same request twice.  Keys are
    remembered for :data:`wire.REPLAY_WINDOW` seconds; a request whose ``sent_at`` is
    further than that from the enclave's clock is refused, so forgetting older keys
    lets nothing through.  A full cache refuses new requests (fail closed).
    """

    def __init__(
        self,
        *,
        window: float = wire.REPLAY_WINDOW,
        capacity: int = REPLAY_CAPACITY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.capacity = capacity
        self.clock = clock
        self._seen: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def admit(self, enc: bytes, sent_at: float) -> None:
        now = self.clock()
        if not now - self.window <= sent_at <= now + self.window:
            raise wire.Replayed("request outside the replay window (check the client's clock)")
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - self.window:
                self._seen.popitem(last=False)
            if enc in self._seen:
                raise wire.Replayed("request already answered")
            if len(self._seen) >= self.capacity:
                raise wire.Busy("replay cache full")
            self._seen[enc] = now


class InferenceQueue:
    """One inference at a time; at most ``depth`` requests wait, each at most ``timeout`` s."""

    def __init__(self, depth: int, timeout: float) -> None:
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(depth + 1)  # the running one and the waiting
        self._model = threading.Lock()

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            raise wire.Busy("busy: the inference queue is full")
        try:
            if not self._model.acquire(timeout=self.timeout):
                raise wire.Busy(f"busy: no turn within {self.timeout:g} s")
            try:
                yield
            finally:
                self._model.release()
        finally:
            self._slots.release()


def log(event: str, **fields: Any) -> None:
    """One JSON line per event on stdout (the launcher reads ``ready``)."""
    print(json.dumps({"event": event, **fields}), flush=True)


@dataclass
class EnclaveKeys:
    kms_key: rsa.RSAPrivateKey
    client_key: X25519PrivateKey

    @classmethod
    def generate(cls) -> EnclaveKeys:
        return cls(
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            X25519PrivateKey.generate(),
        )

    def kms_public_der(self) -> bytes:
        return self.kms_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def client_public_raw(self) -> bytes:
        return self.client_key.public_key().public_bytes_raw()


@dataclass(frozen=True)
class ParentCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None
    region: str | None

    @classmethod
    def fetch(cls, parent: Endpoint) -> ParentCredentials:
        body = http_get(parent, "/v1/credentials", limit=16 * 1024)
        obj = wire.json_object(body, "parent credentials")
        access, secret = obj.get("access_key_id"), obj.get("secret_access_key")
        if not isinstance(access, str) or not isinstance(secret, str):
            raise ProtocolError("parent credentials: access_key_id/secret_access_key missing")
        token, region = obj.get("session_token"), obj.get("region")
        return cls(
            access,
            secret,
            token if isinstance(token, str) else None,
            region if isinstance(region, str) else None,
        )


def fetch_data_key(
    *,
    nsm: NsmClient,
    keys: EnclaveKeys,
    kms_url: str,
    credentials: ParentCredentials,
    region: str,
    model: EncryptedModel,
) -> bytes:
    """KMS Decrypt with a Recipient; returns the data key opened from the CMS envelope."""
    import boto3
    import botocore.config
    import botocore.exceptions

    from enclave_runtime.cms import open_enveloped_data

    document = nsm.attestation(public_key=keys.kms_public_der())
    client = boto3.client(
        "kms",
        endpoint_url=kms_url,
        region_name=credentials.region or region,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=credentials.session_token,
        config=botocore.config.Config(retries={"max_attempts": 2}, connect_timeout=10),
    )
    request: dict[str, Any] = {
        "CiphertextBlob": model.ciphertext_blob,
        "Recipient": {
            "AttestationDocument": document,
            "KeyEncryptionAlgorithm": KEY_ENCRYPTION_ALGORITHM,
        },
    }
    if model.encryption_context:
        request["EncryptionContext"] = dict(model.encryption_context)
    if model.key_id:
        request["KeyId"] = model.key_id
    try:
        response = client.decrypt(**request)
    except botocore.exceptions.ClientError as exc:
        err = exc.response.get("Error", {})
        raise KmsRefused(
            f"KMS refused Decrypt: {err.get('Code', '?')}: {err.get('Message', '')}"
        ) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ServiceUnavailable(f"KMS unreachable through the host relay: {exc}") from None
    if response.get("Plaintext"):
        raise KmsRefused("KMS returned a plaintext data key to an attested request; refusing it")
    envelope = response.get("CiphertextForRecipient")
    if not isinstance(envelope, bytes | bytearray):
        raise KmsRefused("KMS answer carries no CiphertextForRecipient")
    return open_enveloped_data(bytes(envelope), keys.kms_key)


#: where the launcher binds the GPU bridge's directory when the host offers an accelerator
ACCELERATOR_SOCKET = "/run/accelerator/accelerator.sock"


def accelerator_backend() -> Any:
    """The GPU bridge when the host offers an accelerator, else None (local NumPy).

    The accelerator is verified against the reference values pinned in this image
    (device root, signed RIM) before any session key exists; a device that does not
    verify stops the boot (fail closed) rather than falling back silently.
    """
    path = os.environ.get("ENCLAVE_ACCELERATOR") or ACCELERATOR_SOCKET
    if not os.path.exists(path):
        return None
    from enclave_runtime.gpu_bridge.client import BridgeBackend, load_reference_values

    bridge = BridgeBackend(Path(path), load_reference_values(), buffer_dir=Path(path).parent)
    device = bridge.connect()
    log(
        "accelerator-verified",
        subject=device.subject,
        serial=f"{device.serial:x}",
        firmware=device.measurements.get("firmware", "")[:16],
    )
    return bridge


class Enclave:
    """A booted enclave: keys, the loaded model, the NSM; ``serve`` answers clients."""

    def __init__(self, config: RuntimeConfig, links: HostLinks, nsm: NsmClient) -> None:
        self.config = config
        self.links = links
        self.nsm = nsm
        self.keys = EnclaveKeys.generate()
        self.chat: Any = None
        self.model_digest = b""
        limits = config.limits
        self.queue = InferenceQueue(limits.queue_depth, limits.queue_seconds)
        self.replays = ReplayGuard()
        self._nsm_lock = threading.Lock()
        self._connections = threading.BoundedSemaphore(MAX_CLIENT_CONNECTIONS)

    def boot(self) -> None:
        t0 = time.perf_counter()
        blob = http_get(
            self.links.parent, f"/v1/models/{self.config.model_file}", limit=MAX_MODEL_BYTES
        )
        model = EncryptedModel.parse(blob, what=self.config.model_file)
        log("model-fetched", bytes=len(blob))
        credentials = ParentCredentials.fetch(self.links.parent)
        forwarder = Forwarder(Endpoint("tcp", "127.0.0.1", 0), self.links.kms)
        try:
            data_key = fetch_data_key(
                nsm=self.nsm,
                keys=self.keys,
                kms_url=f"http://127.0.0.1:{forwarder.port}",
                credentials=credentials,
                region=self.config.kms_region,
                model=model,
            )
        finally:
            forwarder.close()
        log("data-key-released")
        plaintext = model.decrypt(data_key, expected_sha256=self.config.model_sha256)
        del data_key
        digest = hashlib.sha256(plaintext).digest()
        if digest != self.config.model_sha256:  # decrypt checked it; never extend anything else
            raise ModelTampered(f"model {self.config.model_file}: not the pinned model")
        self.nsm.extend_pcr(MODEL_PCR, digest)
        self.nsm.lock_pcr(MODEL_PCR)
        self.model_digest = digest
        log("model-measured", pcr=MODEL_PCR, sha256=digest.hex())
        from enclave_runtime.model.chat import ChatModel

        bridge = accelerator_backend()
        self.chat = ChatModel.from_gguf(plaintext, backend=bridge, what=self.config.model_name)
        log(
            "model-loaded",
            seconds=round(time.perf_counter() - t0, 2),
            accelerator=bridge is not None,
        )

    # -- request handlers --------------------------------------------------------

    def attestation(self, nonce: bytes) -> bytes:
        if not wire.MIN_NONCE <= len(nonce) <= wire.MAX_NONCE:
            raise ProtocolError(f"nonce must be {wire.MIN_NONCE}..{wire.MAX_NONCE} bytes")
        with self._nsm_lock:
            return self.nsm.attestation(
                public_key=self.keys.client_public_raw(),
                user_data=wire.HPKE_KEY_PURPOSE,
                nonce=nonce,
            )

    def infer(self, body: bytes) -> bytes:
        """Open, admit (once, in the window), check the budget, wait a turn, answer.

        Everything that can refuse a request is done before it waits for the model:
        a refused request costs a decryption and a tokenization, never inference time.
        """
        from enclave_runtime.model.chat import Message

        opened = wire.open_request(self.keys.client_key, body)
        request = opened.request
        self.replays.admit(opened.enc, request.sent_at)
        limits = self.config.limits
        ids = self.chat.prompt_ids([Message("user", request.prompt)])
        if len(ids) > limits.max_prompt_tokens:
            raise wire.OverBudget(
                f"prompt is {len(ids)} tokens, the budget is {limits.max_prompt_tokens}"
            )
        max_new = min(request.max_tokens, self.config.max_tokens)
        context = self.chat.model.config.context_length
        if len(ids) + max_new > context:
            raise wire.OverBudget(f"prompt and answer exceed the model's {context} positions")
        with self.queue.turn():
            generation = self.chat.generate_ids(
                ids, max_new, deadline=time.monotonic() + limits.request_seconds
            )
        answer = wire.InferenceAnswer(
            text=generation.text,
            tokens=len(generation.token_ids),
            prompt_tokens=generation.prompt_tokens,
            stop_reason=generation.stop_reason,
            prefill_seconds=generation.prefill_seconds,
            decode_seconds=generation.decode_seconds,
        )
        return wire.seal_answer(opened, answer)

    def serve(self, stop: threading.Event | None = None) -> None:
        listener = self.links.listen.listen()
        log("ready", listen=str(self.links.listen), model_sha256=self.model_digest.hex())
        stop = stop or threading.Event()

        def watch() -> None:
            stop.wait()
            _close(listener)

        threading.Thread(target=watch, daemon=True, name="stop-watch").start()
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                break
            if not self._connections.acquire(blocking=False):
                _close(conn)  # over the limit: refuse rather than grow without bound
                continue
            threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            _Handler(conn, ("enclave-client", 0), self)
        finally:
            self._connections.release()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "enclave-audit-enclave/1"
    sys_version = ""
    timeout = CLIENT_READ_TIMEOUT

    def __init__(self, request: socket.socket, address: Any, enclave: Enclave) -> None:
        self.enclave = enclave
        try:
            super().__init__(request, address, None)  # type: ignore[arg-type]
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                request.close()

    def log_message(self, format: str, *args: Any) -> None:
        return  # no request logging: nothing about a client's request leaves the enclave

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, reason: str) -> None:
        self._send(status, json.dumps({"error": reason}).encode())

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/v1/attestation":
            self._error(404, "not found")
            return
        values = parse_qs(url.query).get("nonce", [])
        try:
            nonce = bytes.fromhex(values[0]) if len(values) == 1 else b""
            document = self.enclave.attestation(nonce)
        except (ValueError, ProtocolError):
            self._error(400, "nonce must be 16..512 bytes of hex")
            return
        except EnclaveAuditError:
            self._error(503, "attestation unavailable")
            return
        self._send(200, json.dumps({"document": wire.b64e(document)}).encode())

    def do_POST(self) -> None:
        if self.path != "/v1/infer":
            self._error(404, "not found")
            return
        try:
            length = int(self.headers.get("Content-Length", "-1"))
        except ValueError:
            length = -1
        if not 0 < length <= wire.MAX_BODY:
            self._error(400, "bad request")
            return
        body = self.rfile.read(length)
        try:
            answer = self.enclave.infer(body)
        except wire.Replayed as exc:
            self._error(409, exc.message)
            return
        except wire.OverBudget as exc:
            self._error(413, exc.message)
            return
        except ProtocolError:
            self._error(400, "bad request")
            return
        except ServiceUnavailable as exc:  # busy, or the request's time budget was spent
            self._error(503, exc.message)
            return
        except EnclaveAuditError:
            self._error(500, "inference failed")
            return
        self._send(200, answer)


def run_enclave(
    *, config: RuntimeConfig, links: HostLinks, nsm: NsmClient, stop: threading.Event | None = None
) -> None:
    enclave = Enclave(config, links, nsm)
    enclave.boot()
    enclave.serve(stop)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--self-test"]:
        from enclave_runtime import selftest

        return selftest.run()
    if args not in ([], ["--serve"]):
        print("usage: python3 -m enclave_runtime [--self-test]", file=sys.stderr)
        return 2
    try:
        config = RuntimeConfig.load()
        links = HostLinks.detect()
        with open_nsm() as nsm:
            run_enclave(config=config, links=links, nsm=nsm)
    except EnclaveAuditError as exc:
        log("failed", error=exc.diagnostic(), exit_code=exc.exit_code)
        print(exc.diagnostic(), file=sys.stderr, flush=True)
        return exc.exit_code
    return 0
