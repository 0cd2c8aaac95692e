"""The HTTP front end: AWS JSON 1.1 over HTTP/1.1 on a loopback address.

Every request is ``POST /`` with ``X-Amz-Target: TrentService.<Operation>`` and
``Content-Type: application/x-amz-json-1.1``, SigV4-signed; errors are AWS's
``{"__type", "message"}`` bodies, so botocore raises ``ClientError`` with AWS's codes.
One audit event per request goes to the database.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from enclave_audit.errors import EnclaveAuditError, ServiceUnavailable
from enclave_runtime import strictjson
from reference_enclave.kms.config import Credential, KmsConfig
from reference_enclave.kms.errors import KmsApiError, error_body
from reference_enclave.kms.recipient import RecipientVerifier
from reference_enclave.kms.service import AuditNote, KmsService
from reference_enclave.kms.sigv4 import single_valued, verify_request
from reference_enclave.kms.store import KeyStore
from verifier.nitro import TrustRoot, aws_nitro_root

MAX_BODY = 1 << 20
TARGET_PREFIX = "TrentService."
CONTENT_TYPE = "application/x-amz-json-1.1"
_CONTENT_LENGTH_RE = re.compile(r"^[0-9]{1,10}$")
_TARGET_RE = re.compile(r"^TrentService\.[A-Za-z0-9]{1,64}$")


class _CallerError(KmsApiError):
    """An API error that remembers which operation and caller it belongs to (for the log)."""

    def __init__(self, error: KmsApiError, operation: str, caller: Credential | None) -> None:
        super().__init__(error.code, error.api_message, status=error.status)
        self.operation = operation
        self.caller = caller


class KmsHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        service: KmsService,
        config: KmsConfig,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(address, KmsRequestHandler)
        self.service = service
        self.config = config
        self.clock = clock


class KmsRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the
    #: client's delayed ACK add ~40 ms to every keep-alive response
    disable_nagle_algorithm = True
    #: an idle or stalled connection is closed after this many seconds
    timeout = 60
    server: KmsHttpServer
    server_version = "enclave-audit-kms"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are recorded in the database's audit log, not on stderr."""

    def _send(self, status: int, body: bytes, request_id: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", request_id)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, exc: KmsApiError, request_id: str) -> None:
        self._send(exc.status, error_body(exc.code, exc.api_message), request_id)

    def do_GET(self) -> None:
        self._reject_method()

    def do_PUT(self) -> None:
        self._reject_method()

    def do_DELETE(self) -> None:
        self._reject_method()

    def _reject_method(self) -> None:
        request_id = str(uuid.uuid4())
        self.close_connection = True  # the body (if any) is not read: never reuse the stream
        self._error(KmsApiError("UnknownOperationException", "Only POST / is served"), request_id)

    def _framing(self, request_id: str) -> tuple[dict[str, str], int] | None:
        """The request's headers (each once) and its body length; None after an error reply.

        Anything that makes the body's extent or the request's meaning ambiguous is
        answered 400 and the connection closed: a repeated header, a Content-Length
        that is not plain ASCII digits, a Transfer-Encoding (this server reads
        Content-Length bodies only, so a chunked body would be read as the next request).
        """
        try:
            headers = single_valued(self.headers.items())
        except KmsApiError as exc:
            self.close_connection = True
            self._error(exc, request_id)
            return None
        if "transfer-encoding" in headers:
            self.close_connection = True
            self._error(
                KmsApiError("ValidationException", "Transfer-Encoding is not supported"),
                request_id,
            )
            return None
        length_text = headers.get("content-length")
        if length_text is None or not _CONTENT_LENGTH_RE.match(length_text):
            self.close_connection = True
            self._error(
                KmsApiError(
                    "ValidationException", "Content-Length is required (ASCII decimal digits)"
                ),
                request_id,
            )
            return None
        length = int(length_text)
        if length > MAX_BODY:
            self.close_connection = True
            self._error(
                KmsApiError("ValidationException", "Request body too large", status=413), request_id
            )
            return None
        return headers, length

    def do_POST(self) -> None:
        request_id = str(uuid.uuid4())
        framing = self._framing(request_id)
        if framing is None:
            return
        headers, length = framing
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return  # the client went away mid-body: nothing to answer
        started = time.perf_counter()
        operation = ""
        caller: Credential | None = None
        note = AuditNote()
        try:
            operation, caller, response = self._handle(headers, body, note)
            status, payload, error_code = 200, json.dumps(response).encode("utf-8"), None
        except KmsApiError as exc:
            if isinstance(exc, _CallerError):
                operation, caller = exc.operation, exc.caller
            status, payload, error_code = (
                exc.status,
                error_body(exc.code, exc.api_message),
                exc.code,
            )
        # the audit event is committed before the caller sees the answer; no audit, no answer
        if not self._audit(operation, caller, note, error_code, request_id, started):
            failure = KmsApiError(
                "KMSInternalException", "the request could not be recorded", status=500
            )
            status, payload = failure.status, error_body(failure.code, failure.api_message)
        self._send(status, payload, request_id)

    def _handle(
        self, headers: dict[str, str], body: bytes, note: AuditNote
    ) -> tuple[str, Credential | None, dict[str, Any]]:
        # one map of single-valued headers feeds the signature check and the dispatcher
        target = headers.get("x-amz-target", "")
        if not _TARGET_RE.match(target):
            raise KmsApiError("UnknownOperationException", f"Unknown target {target[:80]!r}")
        operation = target[len(TARGET_PREFIX) :]
        content_type = headers.get("content-type", "").split(";")[0].strip()
        parts = urlsplit(self.path)
        try:
            caller = verify_request(
                method="POST",
                path=parts.path,
                query=parts.query,
                headers=headers,
                body=body,
                region=self.server.config.region,
                lookup=self.server.config.credential,
                now=self.server.clock(),
                skew_seconds=self.server.config.clock_skew_seconds,
            )
        except KmsApiError as exc:
            raise _CallerError(exc, operation, None) from None
        try:
            if parts.path != "/":
                raise KmsApiError("UnknownOperationException", "Only POST / is served")
            if content_type not in (CONTENT_TYPE, "application/json"):
                raise KmsApiError("SerializationException", f"Content-Type must be {CONTENT_TYPE}")
            params = strictjson.loads_object(
                body or b"{}", what="request body", error=KmsApiError.bad_json
            )
            return operation, caller, self.server.service.call(operation, params, caller, note)
        except KmsApiError as exc:
            raise _CallerError(exc, operation, caller) from None
        except EnclaveAuditError as exc:
            internal = KmsApiError("KMSInternalException", exc.message, status=500)
            raise _CallerError(internal, operation, caller) from None
        except Exception as exc:  # a bug: answer 500, keep serving, log it server-side
            traceback.print_exc(file=sys.stderr)
            internal = KmsApiError(
                "KMSInternalException", f"internal error: {type(exc).__name__}", status=500
            )
            raise _CallerError(internal, operation, caller) from None

    def _audit(
        self,
        operation: str,
        caller: Credential | None,
        note: AuditNote,
        error_code: str | None,
        request_id: str,
        started: float,
    ) -> bool:
        event: dict[str, Any] = {
            "eventTime": dt.datetime.fromtimestamp(self.server.clock(), dt.UTC).isoformat(),
            "eventName": operation,
            "requestID": request_id,
            "sourceIPAddress": self.client_address[0],
            "userIdentity": {"arn": caller.principal, "accessKeyId": caller.access_key_id}
            if caller is not None
            else None,
            "resources": [{"ARN": note.key_arn}] if note.key_arn else [],
            "errorCode": error_code,
            "durationMs": round((time.perf_counter() - started) * 1000, 3),
        }
        if note.recipient:
            event["additionalEventData"] = {"recipient": note.recipient}
        try:
            self.server.service.store.record_event(event)
        except (KmsApiError, sqlite3.Error, OSError, ValueError) as exc:
            sys.stderr.write(f"kms: audit event for {operation or '?'} not recorded: {exc}\n")
            return False
        return True


@dataclass
class RunningKms:
    """A KMS serving in a background thread; ``stop()`` shuts it down and closes the DB."""

    url: str
    server: KmsHttpServer
    thread: threading.Thread
    store: KeyStore
    config: KmsConfig
    stopped: bool = False

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        self.store.close()

    def __enter__(self) -> RunningKms:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def load_roots(paths: Sequence[Path]) -> tuple[TrustRoot, ...]:
    return tuple(TrustRoot.from_file(Path(p)) for p in paths)


def build_server(
    db_path: Path,
    config: KmsConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    roots: Sequence[TrustRoot] = (),
    clock: Callable[[], float] = time.time,
) -> tuple[KmsHttpServer, KeyStore]:
    """Open the database and bind the listening socket (not yet serving)."""
    all_roots = (
        *((aws_nitro_root(),) if config.trust_aws_root else ()),
        *load_roots(config.roots),
        *roots,
    )
    store = KeyStore(db_path)
    recipients = RecipientVerifier(
        all_roots,
        max_age_seconds=config.max_document_age_seconds,
        allow_debug=config.allow_debug,
        clock=clock,
    )
    service = KmsService(store, config, recipients, clock=clock)
    try:
        server = KmsHttpServer((host, port), service, config, clock)
    except OSError as exc:
        store.close()
        raise ServiceUnavailable(
            f"kms: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    return server, store


def server_url(server: KmsHttpServer) -> str:
    host, port = server.server_address[:2]
    name = host.decode("ascii") if isinstance(host, bytes) else str(host)
    shown = f"[{name}]" if ":" in name else name
    return f"http://{shown}:{port}"


def start_kms(
    db_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    roots: Sequence[TrustRoot | Path] = (),
    credentials: Sequence[Credential] = (),
    max_age: float | None = None,
    allow_debug: bool = False,
    config: KmsConfig | None = None,
    clock: Callable[[], float] = time.time,
) -> RunningKms:
    """Start a KMS in a background thread of this process (tests, the demo).

    ``roots`` are trust roots or PEM paths, trusted besides the AWS root (unless
    ``config.trust_aws_root`` is false); ``credentials`` and ``max_age``/``allow_debug``
    extend or override ``config``;
    ``clock`` is the server's notion of "now" (SigV4 skew, certificate validity,
    document age), ``time.time`` unless a test needs a shifted clock.
    """
    base = config or KmsConfig()
    if credentials:
        base = base.model_copy(update={"credentials": (*base.credentials, *credentials)})
    base = base.with_overrides(
        max_document_age_seconds=max_age, allow_debug=allow_debug if allow_debug else None
    )
    KmsConfig.model_validate(base.model_dump())
    loaded = tuple(r if isinstance(r, TrustRoot) else TrustRoot.from_file(Path(r)) for r in roots)
    server, store = build_server(db_path, base, host=host, port=port, roots=loaded, clock=clock)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="reference-kms",
        daemon=True,
    )
    thread.start()
    return RunningKms(
        url=server_url(server), server=server, thread=thread, store=store, config=base
    )
