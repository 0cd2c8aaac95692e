"""The host proxy's three channels: clients, the enclave's KMS relay, the parent service.

The client channel faces the network, so it reads each request itself before the
enclave sees a byte of it: the request head must arrive within
:data:`HEADER_TIMEOUT` seconds (and the next one on a kept-alive connection within
that time of the last answer), the body within :data:`BODY_TIMEOUT`, with a
``Content-Length`` no larger than the enclave accepts; one address holds at most
:data:`MAX_PER_PEER` connections at once and all clients together
:data:`MAX_CONNECTIONS`.  A connection over a limit is answered 429/503 at once, so
idle or slow connections can neither queue up in front of the enclave nor starve
other clients.  The relay does not look inside the (HPKE-sealed) bodies.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from enclave_audit.errors import InvalidInput, ServiceUnavailable
from enclave_runtime.channels import Endpoint, pump
from reference_enclave.proxy.capture import Capture

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CHUNK = 1 << 20
#: concurrent connections per channel (vsock-proxy's -w is 4; clients need more)
MAX_CONNECTIONS = 64
#: concurrent client connections from one address
MAX_PER_PEER = 8
#: seconds for a whole request head to arrive (and between requests of one connection)
HEADER_TIMEOUT = 5.0
#: seconds for a request body to arrive once its head is in
BODY_TIMEOUT = 15.0
#: seconds to wait for the enclave's answer (inference included)
ANSWER_TIMEOUT = 600.0
#: the largest request head and body the client channel relays
MAX_HEAD = 16 * 1024
MAX_REQUEST_BODY = 256 * 1024
MAX_ANSWER = 4 << 20
_LENGTH = re.compile(rb"^content-length:[ \t]*([0-9]{1,10})[ \t]*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class ProxySettings:
    """Where the proxy listens and relays to.

    ``client_listen``: TCP for clients; ``enclave_client``: the enclave's listener;
    ``kms_listen``: where the enclave's KMS channel arrives; ``kms_url``: the KMS;
    ``parent_listen``: the enclave's parent channel; ``model_store``: encrypted models.
    """

    client_listen: Endpoint
    enclave_client: Endpoint
    kms_listen: Endpoint
    kms_url: str
    parent_listen: Endpoint
    model_store: Path
    credentials: dict[str, str]
    capture: Path | None = None


def _url_endpoint(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise InvalidInput(f"KMS URL {url!r}: expected http://HOST:PORT")
    return Endpoint("tcp", parts.hostname, parts.port or 80)


class _Listener:
    def __init__(
        self,
        endpoint: Endpoint,
        handle: Callable[[socket.socket], None],
        *,
        per_peer: int | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.sock = endpoint.listen(backlog=128)
        name = self.sock.getsockname()
        self.port = name[1] if isinstance(name, tuple) else 0
        self._handle = handle
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._per_peer = per_peer
        self._peers: dict[str, int] = {}
        self._peers_lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name=f"proxy {endpoint}").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, address = self.sock.accept()
            except OSError:
                return
            peer = address[0] if isinstance(address, tuple) else "local"
            if not self._take(peer):
                _refuse(conn, 429, "too many connections from this address")
                continue
            if not self._slots.acquire(blocking=False):
                self._give_back(peer)
                _refuse(conn, 503, "too many connections")  # refuse, never queue without bound
                continue
            threading.Thread(target=self._run, args=(conn, peer), daemon=True).start()

    def _take(self, peer: str) -> bool:
        if self._per_peer is None:
            return True
        with self._peers_lock:
            held = self._peers.get(peer, 0)
            if held >= self._per_peer:
                return False
            self._peers[peer] = held + 1
            return True

    def _give_back(self, peer: str) -> None:
        if self._per_peer is None:
            return
        with self._peers_lock:
            held = self._peers.get(peer, 1) - 1
            if held > 0:
                self._peers[peer] = held
            else:
                self._peers.pop(peer, None)

    def _run(self, conn: socket.socket, peer: str) -> None:
        try:
            self._handle(conn)
        finally:
            self._slots.release()
            self._give_back(peer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self.endpoint.kind == "unix":
            with contextlib.suppress(FileNotFoundError):
                Path(self.endpoint.address).unlink()


#: connections being refused at once (each drained briefly so the answer is not lost)
_REFUSALS = threading.BoundedSemaphore(32)


def _refuse(conn: socket.socket, status: int, reason: str) -> None:
    """Answer a connection the proxy will not serve, then close it.

    Closing a socket with unread input makes the kernel send a reset, which can
    destroy the answer before the client reads it; so the request is drained for a
    moment (in a thread, at most 32 at once) before the close.
    """
    body = json.dumps({"error": reason}).encode()
    text = {400: "Bad Request", 408: "Request Timeout", 413: "Payload Too Large"}.get(
        status, "Too Many Requests" if status == 429 else "Service Unavailable"
    )
    head = (
        f"HTTP/1.1 {status} {text}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    try:
        conn.settimeout(1.0)
        conn.sendall(head.encode() + body)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        conn.close()
        return
    if _REFUSALS.acquire(blocking=False):
        threading.Thread(target=_drain_and_close, args=(conn,), daemon=True).start()
    else:
        conn.close()


def _drain_and_close(conn: socket.socket) -> None:
    try:
        deadline = time.monotonic() + 1.0
        conn.settimeout(0.2)
        while time.monotonic() < deadline:
            if not conn.recv(65536):
                break
    except OSError:
        pass
    finally:
        conn.close()
        _REFUSALS.release()


class _Closed(Exception):
    """The peer closed, stalled past its deadline or sent what the channel does not relay."""

    def __init__(self, status: int | None = None, reason: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _read_head(
    sock: socket.socket, buffered: bytes, deadline: float, limit: int
) -> tuple[bytes, bytes]:
    """One HTTP message head (through the blank line) and the bytes read past it.

    The whole head must arrive before ``deadline`` (``time.monotonic()``): a client
    sending a byte now and then cannot hold the connection (slowloris).
    """
    data = buffered
    while b"\r\n\r\n" not in data:
        if len(data) > limit:
            raise _Closed(400, "request head too large")
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Closed(408 if data else None, "request head not received in time")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise _Closed(408 if data else None, "request head not received in time") from None
        except OSError:
            raise _Closed() from None
        if not chunk:
            raise _Closed()
        data += chunk
    end = data.index(b"\r\n\r\n") + 4
    if end > limit:
        raise _Closed(400, "request head too large")
    return data[:end], data[end:]


def _read_body(
    sock: socket.socket, buffered: bytes, length: int, deadline: float
) -> tuple[bytes, bytes]:
    data = buffered
    while len(data) < length:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Closed(408, "request body not received in time")
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(65536, length - len(data)))
        except TimeoutError:
            raise _Closed(408, "request body not received in time") from None
        except OSError:
            raise _Closed() from None
        if not chunk:
            raise _Closed()
        data += chunk
    return data[:length], data[length:]


def _content_length(head: bytes, *, limit: int) -> int:
    lowered = head.lower()
    if b"\ntransfer-encoding:" in lowered:
        raise _Closed(400, "Transfer-Encoding is not relayed")
    lines = [ln for ln in lowered.split(b"\r\n") if ln.startswith(b"content-length:")]
    if not lines:
        return 0
    match = _LENGTH.match(lines[0]) if len(lines) == 1 else None
    if match is None:
        raise _Closed(400, "Content-Length must be one decimal number")
    length = int(match.group(1))
    if length > limit:
        raise _Closed(413, "request body too large")
    return length


def _wants_close(head: bytes) -> bool:
    return any(ln.strip() == b"connection: close" for ln in head.lower().split(b"\r\n"))


def _client_session(conn: socket.socket, upstream: Endpoint, capture: Capture | None) -> None:
    """Relay whole requests from one client to the enclave, and whole answers back."""
    to_enclave = capture.tap("client", "to-enclave") if capture else None
    from_enclave = capture.tap("client", "from-enclave") if capture else None
    up: socket.socket | None = None
    pending = b""
    up_pending = b""
    try:
        while True:
            try:
                head, pending = _read_head(
                    conn, pending, time.monotonic() + HEADER_TIMEOUT, MAX_HEAD
                )
                length = _content_length(head, limit=MAX_REQUEST_BODY)
                body, pending = _read_body(conn, pending, length, time.monotonic() + BODY_TIMEOUT)
            except _Closed as exc:
                if exc.status is not None:
                    _refuse(conn, exc.status, exc.reason)
                return
            if up is None:
                try:
                    up = upstream.connect()
                except ServiceUnavailable:
                    _refuse(conn, 503, "enclave unreachable")
                    return
            request = head + body
            if to_enclave is not None:
                to_enclave(request)
            try:
                up.sendall(request)
                answer_head, up_pending = _read_head(
                    up, up_pending, time.monotonic() + ANSWER_TIMEOUT, MAX_HEAD
                )
                answer_length = _content_length(answer_head, limit=MAX_ANSWER)
                answer_body, up_pending = _read_body(
                    up, up_pending, answer_length, time.monotonic() + ANSWER_TIMEOUT
                )
            except (_Closed, OSError):
                return  # the enclave went away mid-answer: the client sees the cut
            answer = answer_head + answer_body
            if from_enclave is not None:
                from_enclave(answer)
            conn.settimeout(BODY_TIMEOUT)
            conn.sendall(answer)
            if _wants_close(head) or _wants_close(answer_head):
                return
    except OSError:
        return
    finally:
        with contextlib.suppress(OSError):
            conn.close()
        if up is not None:
            with contextlib.suppress(OSError):
                up.close()


def _relay(
    conn: socket.socket,
    upstream: Endpoint,
    capture: Capture | None,
    channel: str,
) -> None:
    try:
        up = upstream.connect()
    except ServiceUnavailable:
        conn.close()
        return
    out_tap = (
        capture.tap(channel, "to-enclave" if channel == "client" else "from-enclave")
        if capture
        else None
    )
    in_tap = (
        capture.tap(channel, "from-enclave" if channel == "client" else "to-enclave")
        if capture
        else None
    )
    t = threading.Thread(target=pump, args=(up, conn, in_tap), daemon=True)
    t.start()
    pump(conn, up, out_tap)
    t.join()
    conn.close()
    up.close()


class _ParentHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "enclave-audit-proxy/1"
    sys_version = ""
    proxy: HostProxy

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/v1/credentials":
            self._send(200, json.dumps(self.proxy.settings.credentials).encode())
            return
        prefix = "/v1/models/"
        name = self.path[len(prefix) :] if self.path.startswith(prefix) else ""
        path = self.proxy.settings.model_store / name
        if not _MODEL_NAME.match(name) or not path.is_file():
            self._send(404, b'{"error": "no such model"}')
            return
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        tap = self.proxy.capture.tap("parent", "to-enclave") if self.proxy.capture else None
        with open(path, "rb") as fh:
            while block := fh.read(_CHUNK):
                if tap is not None:
                    tap(block)
                self.wfile.write(block)


class HostProxy:
    """The running proxy; ``client_url`` is what clients use; ``stop()`` ends it."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self.capture = Capture(settings.capture) if settings.capture else None
        kms = _url_endpoint(settings.kms_url)
        self._listeners: list[_Listener] = []
        try:
            self.client = self._listen(
                settings.client_listen,
                lambda c: _client_session(c, settings.enclave_client, self.capture),
                per_peer=MAX_PER_PEER,
            )
            self._listen(settings.kms_listen, lambda c: _relay(c, kms, self.capture, "kms"))
            self._listen(settings.parent_listen, self._parent)
        except BaseException:
            self.stop()
            raise

    def _listen(
        self,
        endpoint: Endpoint,
        handle: Callable[[socket.socket], None],
        *,
        per_peer: int | None = None,
    ) -> _Listener:
        listener = _Listener(endpoint, handle, per_peer=per_peer)
        self._listeners.append(listener)
        return listener

    def _parent(self, conn: socket.socket) -> None:
        handler = type("Handler", (_ParentHandler,), {"proxy": self})
        try:
            handler(conn, ("enclave", 0), None)
        except OSError:
            pass
        finally:
            conn.close()

    @property
    def client_url(self) -> str:
        ep = self.settings.client_listen
        return f"http://{ep.address}:{self.client.port}"

    def stop(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()

    def __enter__(self) -> HostProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_proxy(settings: ProxySettings) -> HostProxy:
    if not settings.model_store.is_dir():
        raise InvalidInput(f"{settings.model_store}: model store is not a directory")
    return HostProxy(settings)
