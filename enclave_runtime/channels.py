"""Byte channels between the enclave and its host: Unix sockets (simulation), vsock
(Nitro), TCP (the host side), plus a forwarder and a tiny HTTP client over them.

An enclave has no network. Everything it says to the outside goes to the parent
over vsock (CID 3) or, in the simulation, over Unix sockets the launcher puts in
the enclave's root; the host proxy on the other end relays it. Programs inside
that want TCP (boto3) talk to a local forwarder, as kmstool does.
Imports: standard library only (runs in the image).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from dataclasses import dataclass

from enclave_runtime.errors import InvalidInput, ProtocolError, ServiceUnavailable

PARENT_CID = 3
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Endpoint:
    """``unix:/path``, ``vsock:CID:PORT`` or ``tcp:HOST:PORT``."""

    kind: str
    address: str
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        kind, _, rest = text.partition(":")
        try:
            if kind == "unix" and rest:
                return cls("unix", rest)
            if kind in ("vsock", "tcp"):
                host, _, port = rest.rpartition(":")
                return cls(kind, host, int(port))
        except ValueError:
            pass
        raise InvalidInput(
            f"endpoint {text!r}: expected unix:PATH, vsock:CID:PORT or tcp:HOST:PORT"
        )

    def __str__(self) -> str:
        return (
            f"unix:{self.address}"
            if self.kind == "unix"
            else f"{self.kind}:{self.address}:{self.port}"
        )

    def _socket(self) -> tuple[socket.socket, str | tuple[int | str, int]]:
        """A new stream socket of this endpoint's family, and its address in that family."""
        if self.kind == "unix":
            return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), self.address
        if self.kind == "vsock":
            return socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM), (
                int(self.address),
                self.port,
            )
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM), (self.address, self.port)

    def connect(self, timeout: float | None = 30.0) -> socket.socket:
        sock, target = self._socket()
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except OSError as exc:
            sock.close()
            raise ServiceUnavailable(f"cannot connect to {self}: {exc.strerror or exc}") from None
        sock.settimeout(None)
        return sock

    def listen(self, backlog: int = 16) -> socket.socket:
        """A listening socket on this endpoint (Unix path replaced if it exists)."""
        sock, target = self._socket()
        if self.kind == "unix":
            import os

            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)
        elif self.kind == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(target)
            if self.kind == "unix":
                import os

                os.chmod(self.address, 0o600)
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            raise ServiceUnavailable(f"cannot listen on {self}: {exc.strerror or exc}") from None
        return sock


def pump(src: socket.socket, dst: socket.socket, tap: object = None) -> None:
    """Copy ``src`` to ``dst`` until EOF, then half-close ``dst``.

    ``tap``, when given, is called with every chunk (the proxy's capture).
    """
    try:
        while chunk := src.recv(CHUNK):
            if tap is not None:
                tap(chunk)  # type: ignore[operator]
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def splice(a: socket.socket, b: socket.socket) -> None:
    """Relay both directions between two connected sockets, then close both."""
    t = threading.Thread(target=pump, args=(b, a), daemon=True)
    t.start()
    pump(a, b)
    t.join()
    a.close()
    b.close()


class Forwarder:
    """Accept on ``listen`` and relay each connection to ``upstream`` (in threads)."""

    def __init__(self, listen: Endpoint, upstream: Endpoint) -> None:
        self.upstream = upstream
        self._sock = listen.listen()
        host_port = self._sock.getsockname()
        self.port = host_port[1] if isinstance(host_port, tuple) else 0
        self._thread = threading.Thread(target=self._accept, name="forwarder", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            up = self.upstream.connect()
        except ServiceUnavailable:
            conn.close()
            return
        splice(conn, up)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class _EndpointConnection(http.client.HTTPConnection):
    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        super().__init__("enclave-host", timeout=timeout)
        self._endpoint = endpoint

    def connect(self) -> None:
        self.sock = self._endpoint.connect(self.timeout)


def http_get(endpoint: Endpoint, path: str, *, limit: int, timeout: float = 120.0) -> bytes:
    """GET ``path`` over ``endpoint``; the body, at most ``limit`` bytes, or an error."""
    conn = _EndpointConnection(endpoint, timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        if resp.status != 200:
            raise ServiceUnavailable(f"GET {path} via {endpoint}: HTTP {resp.status}")
        declared = resp.getheader("Content-Length")
        if declared is not None and int(declared) > limit:
            raise ProtocolError(f"GET {path}: {declared} bytes exceeds the {limit}-byte limit")
        body = resp.read(limit + 1)
        if len(body) > limit:
            raise ProtocolError(f"GET {path}: body exceeds the {limit}-byte limit")
        return body
    except (OSError, http.client.HTTPException) as exc:
        raise ServiceUnavailable(f"GET {path} via {endpoint}: {exc}") from None
    finally:
        conn.close()
