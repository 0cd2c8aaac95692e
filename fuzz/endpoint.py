"""Fuzz targets for the enclave endpoint and the host proxy's client channel.

``enclave_infer``: the enclave's request path (:meth:`Enclave.infer`: strict JSON,
HPKE, the replay guard, the prompt budget, the queue, the tiny model) on arbitrary
bodies.  Property: only project errors; a body that was answered once is refused
the second time (the replay cache).

``proxy_http``: arbitrary bytes written to a running proxy's client port, whose
"enclave" is a recorder that answers every request it gets.  Properties: the proxy
answers or closes (never hangs, never dies), and forwards only whole requests (a
head and exactly ``Content-Length`` body bytes), in order, each one bytes it received.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@functools.cache
def enclave_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.from_private_bytes(bytes(range(32)))


@functools.cache
def tiny_enclave() -> Any:
    """An :class:`Enclave` with the tiny model loaded and a fixed client key (no NSM)."""
    import hashlib

    from enclave_runtime.app import Enclave, ReplayGuard
    from enclave_runtime.config import Limits, RuntimeConfig
    from enclave_runtime.model.chat import ChatModel
    from reference_enclave.model.tiny_gguf import write_tiny_gguf

    folder = Path(tempfile.mkdtemp(prefix="enclave-audit-fuzz-endpoint-"))
    gguf = write_tiny_gguf(folder / "tiny.gguf").read_bytes()
    config = RuntimeConfig(
        model_name="tiny",
        model_file="tiny.cimf",
        model_sha256=hashlib.sha256(gguf).digest(),
        kms_region="us-east-1",
        max_tokens=4,
        limits=Limits(max_prompt_tokens=128, request_seconds=2.0),
    )
    enclave = Enclave(config, None, None)  # type: ignore[arg-type]  # no boot: no host links
    enclave.keys.client_key = enclave_key()
    enclave.chat = ChatModel.from_gguf(gguf)
    # seeds are sealed when the corpus is written: accept any sent_at for the fuzzer
    # (the window itself is tested in tests/hardening); replays must still be refused
    enclave.replays = ReplayGuard(window=float(1 << 40))
    return enclave


def enclave_infer(data: bytes) -> None:
    from enclave_audit.errors import EnclaveAuditError
    from enclave_runtime import wire

    enclave = tiny_enclave()
    enclave.infer(data)  # project errors (refusals) end the input here
    try:
        enclave.infer(data)
    except wire.Replayed:
        return
    except EnclaveAuditError as exc:
        raise AssertionError(f"a replayed request was refused for another reason: {exc}") from None
    raise AssertionError("the same sealed request was answered twice")


def enclave_infer_seeds() -> list[bytes]:
    from enclave_runtime.wire import InferenceRequest, seal_request

    public = enclave_key().public_key()
    bodies = [
        seal_request(public, InferenceRequest("What is 2+2?", 2)).body,
        seal_request(public, InferenceRequest("x" * 2000, 2)).body,  # over the budget
        seal_request(public, InferenceRequest("hi", 4, sent_at=0.0)).body,
    ]
    first = bodies[0]
    bodies.append(first[:-1] + b', "n": ' + b"1" * 5000 + b"}")
    bodies.append(first.replace(b'{"enc"', b'{"enc": "AAAA", "enc"', 1))
    return bodies


# --- the proxy's client channel ---------------------------------------------------------------


@dataclass
class _Recorder:
    """The stand-in enclave: reads whole requests (Content-Length) and answers 200."""

    path: Path
    received: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(self.path))
        sock.listen(64)
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        with conn, contextlib.suppress(OSError):
            conn.settimeout(10)
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                end = data.index(b"\r\n\r\n") + 4
                head = data[:end].lower()
                length = 0
                for line in head.split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                while len(data) < end + length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                with self.lock:
                    self.received.append(data[: end + length])
                data = data[end + length :]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@dataclass(frozen=True)
class _Proxy:
    address: tuple[str, int]
    recorder: _Recorder


@functools.cache
def _proxy() -> _Proxy:
    import atexit

    from enclave_runtime.channels import Endpoint
    from reference_enclave.proxy import ProxySettings, start_proxy

    folder = Path(tempfile.mkdtemp(prefix="enclave-audit-fuzz-proxy-"))
    (folder / "store").mkdir()
    recorder = _Recorder(folder / "enclave.sock")
    recorder.start()
    proxy = start_proxy(
        ProxySettings(
            client_listen=Endpoint("tcp", "127.0.0.1", 0),
            enclave_client=Endpoint("unix", str(recorder.path)),
            kms_listen=Endpoint("unix", str(folder / "kms.sock")),
            kms_url="http://127.0.0.1:9",
            parent_listen=Endpoint("unix", str(folder / "parent.sock")),
            model_store=folder / "store",
            credentials={},
        )
    )
    atexit.register(proxy.stop)
    return _Proxy(("127.0.0.1", proxy.client.port), recorder)


def proxy_http(data: bytes) -> None:
    proxy = _proxy()
    with proxy.recorder.lock:
        proxy.recorder.received.clear()
    started = time.monotonic()
    with socket.create_connection(proxy.address, timeout=10) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # the client is done: the proxy must not wait
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass
    if time.monotonic() - started > 8:
        raise AssertionError("the proxy held a finished client for more than 8 s")
    time.sleep(0.005)  # let the recorder file what it got
    with proxy.recorder.lock:
        forwarded = b"".join(proxy.recorder.received)
    if not data.startswith(forwarded):
        raise AssertionError("the proxy forwarded bytes that are not the client's, in order")


def proxy_http_seeds() -> list[bytes]:
    get = b"GET /v1/attestation?nonce=00 HTTP/1.1\r\nHost: e\r\n\r\n"
    post = b"POST /v1/infer HTTP/1.1\r\nHost: e\r\nContent-Length: 5\r\n\r\nhello"
    return [
        get,
        post,
        get + post,
        post[:-2],  # body cut short
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 20000 + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: \xb2\r\n\r\nhi",
    ]
