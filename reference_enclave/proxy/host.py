"""The host proxy's three channels, each a thread pool of byte relays."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import socket
import threading
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
    def __init__(self, endpoint: Endpoint, handle: Callable[[socket.socket], None]) -> None:
        self.endpoint = endpoint
        self.sock = endpoint.listen()
        name = self.sock.getsockname()
        self.port = name[1] if isinstance(name, tuple) else 0
        self._handle = handle
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        threading.Thread(target=self._accept, daemon=True, name=f"proxy {endpoint}").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                conn.close()  # over the limit: refuse rather than queue without bound
                continue
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self.endpoint.kind == "unix":
            with contextlib.suppress(FileNotFoundError):
                Path(self.endpoint.address).unlink()


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
                lambda c: _relay(c, settings.enclave_client, self.capture, "client"),
            )
            self._listen(settings.kms_listen, lambda c: _relay(c, kms, self.capture, "kms"))
            self._listen(settings.parent_listen, self._parent)
        except BaseException:
            self.stop()
            raise

    def _listen(self, endpoint: Endpoint, handle: Callable[[socket.socket], None]) -> _Listener:
        listener = _Listener(endpoint, handle)
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
