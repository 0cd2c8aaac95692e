"""The enclave endpoint and the host proxy under hostile clients (issue 18).

Findings reproduced: one 8,192-character prompt held the inference lock for minutes
while a concurrent client waited; 64 idle TCP connections to the proxy made every
other ``client ask`` fail for up to 120 s; a 5,000-digit integer made the enclave drop
the connection (traceback in the host log) and ``client ask`` exit 70; a sealed
request replayed three times was answered three times.

Runs on the host-side stack with the tiny model (bench/enclave_hostile.py measures
the same with SmolLM2; figures in RELIABILITY.md).  The ``enclave_infer`` and
``proxy_http`` fuzz targets drive the same two layers.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave_audit.errors import InvalidInput, ProtocolError, ServiceUnavailable
from enclave_runtime import wire
from enclave_runtime.app import InferenceQueue, ReplayGuard
from enclave_runtime.config import Limits
from reference_enclave.client import Expectation, ask
from reference_enclave.client.ask import _Endpoint, verify_enclave_document
from reference_enclave.proxy.host import HEADER_TIMEOUT, MAX_PER_PEER
from tests.reference_enclave.runtime.stack import Stack, start_stack
from verifier.nitro import TrustRoot

LONG_PROMPT = ("The quick brown fox jumps over the lazy dog near the river bank. " * 200)[:8192]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("endpoint"), limits=Limits(max_prompt_tokens=200))
    try:
        yield s
    finally:
        s.enclave.stop()
        s.kms.stop()


def _address(stack: Stack) -> tuple[str, int]:
    host, port = stack.enclave.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _ask(stack: Stack, prompt: str = "Name a prime.", max_tokens: int = 4) -> object:
    return ask(
        stack.enclave.url,
        prompt,
        expectation=Expectation(stack.expected, "test"),
        roots=[TrustRoot.from_pem(stack.ca.root_pem(), name="sim")],
        max_tokens=max_tokens,
        timeout=60,
    )


def _attested_key(stack: Stack) -> object:
    import datetime as dt

    nonce = secrets.token_bytes(32)
    body = _Endpoint(stack.enclave.url, 30).call("GET", f"/v1/attestation?nonce={nonce.hex()}")
    document = wire.b64d(wire.json_object(body, "a").get("document"), "document")
    key, _ = verify_enclave_document(
        document,
        expectation=Expectation(stack.expected, "test"),
        roots=[TrustRoot.from_pem(stack.ca.root_pem(), name="sim")],
        nonce=nonce,
        now=dt.datetime.now(dt.UTC),
    )
    return key


def _raw(address: tuple[str, int], data: bytes, timeout: float = 30) -> tuple[int | None, bytes]:
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    return (int(head.split()[1]) if sep else None), body


def _post(body: bytes) -> bytes:
    return (
        b"POST /v1/infer HTTP/1.1\r\nHost: e\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


# --- prompt budget and the bounded queue -------------------------------------------------------


def test_an_8192_character_prompt_is_refused_at_once_and_others_are_served(stack: Stack) -> None:
    """The finding: it held the inference lock for 176 s; a concurrent client waited 177 s."""
    outcome: dict[str, object] = {}

    def attacker() -> None:
        started = time.perf_counter()
        try:
            _ask(stack, LONG_PROMPT, 1)
            outcome["long"] = "answered"
        except InvalidInput as exc:
            outcome["long"] = exc.message
        outcome["long_seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=attacker)
    thread.start()
    started = time.perf_counter()
    _ask(stack)
    waited = time.perf_counter() - started
    thread.join()
    assert "HTTP 413" in str(outcome["long"]) and "the budget is 200" in str(outcome["long"])
    assert float(str(outcome["long_seconds"])) < 10
    assert waited < 10


def test_the_queue_is_bounded_and_a_wait_is_timed() -> None:
    queue = InferenceQueue(depth=1, timeout=0.3)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with queue.turn():
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    errors: list[BaseException] = []

    def wait_turn() -> None:
        try:
            with queue.turn():
                pass
        except wire.Busy as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_turn)
    started = time.perf_counter()
    waiter.start()
    time.sleep(0.05)
    with pytest.raises(wire.Busy, match="queue is full"):  # depth 1: one waits, the next is refused
        with queue.turn():
            pass
    waiter.join()
    assert time.perf_counter() - started == pytest.approx(0.3, abs=0.25)
    assert errors and "no turn within 0.3 s" in str(errors[0])
    release.set()
    holder.join()
    with queue.turn():  # free again
        pass


def test_the_time_budget_ends_decoding(tmp_path: Path) -> None:
    budget = start_stack(tmp_path, limits=Limits(request_seconds=0.1), max_tokens=150)
    try:
        started = time.perf_counter()
        answer = _ask(budget, "Name a prime.", 150)
        # decoding stops when the budget is spent (or at the end token), never at 150 tokens
        assert answer.stop_reason in ("time", "end"), answer  # type: ignore[attr-defined]
        assert answer.tokens < 150  # type: ignore[attr-defined]
        assert time.perf_counter() - started < 10
    finally:
        budget.enclave.stop()
        budget.kms.stop()


def test_prefill_stops_between_chunks_when_the_deadline_has_passed(tmp_path: Path) -> None:
    from enclave_runtime.model.chat import PREFILL_CHUNK, ChatModel, Message
    from reference_enclave.model.tiny_gguf import write_tiny_gguf

    chat = ChatModel.from_gguf(write_tiny_gguf(tmp_path / "t.gguf").read_bytes())
    ids = chat.prompt_ids([Message("user", "z" * 200)])[:200]
    assert len(ids) > PREFILL_CHUNK
    with pytest.raises(ServiceUnavailable, match=f"budget was spent after {PREFILL_CHUNK} "):
        chat.generate_ids(ids, 4, deadline=time.monotonic() - 1)
    short = chat.generate_ids(ids[:100], 50, deadline=time.monotonic() - 1)
    assert short.stop_reason in ("time", "end") and len(short.token_ids) <= 1
    # without a deadline, or with time to spare, the answer is the one without a budget
    plain = chat.generate_ids(ids, 4)
    assert chat.generate_ids(ids, 4, deadline=time.monotonic() + 60).token_ids == plain.token_ids


# --- replays --------------------------------------------------------------------------------------


def test_a_sealed_request_replayed_three_times_is_answered_once(stack: Stack) -> None:
    """The finding: answered three times; the host could make the enclave work at will."""
    key = _attested_key(stack)
    sealed = wire.seal_request(key, wire.InferenceRequest("Name a prime.", 2))  # type: ignore[arg-type]
    replies = [_raw(_address(stack), _post(sealed.body)) for _ in range(3)]
    assert [status for status, _ in replies] == [200, 409, 409]
    assert wire.open_answer(sealed, replies[0][1]).tokens >= 0
    assert json.loads(replies[1][1])["error"] == "request already answered"


def test_a_request_from_outside_the_window_is_refused(stack: Stack) -> None:
    key = _attested_key(stack)
    old = wire.InferenceRequest("Name a prime.", 2, sent_at=time.time() - wire.REPLAY_WINDOW - 60)
    status, body = _raw(_address(stack), _post(wire.seal_request(key, old).body))  # type: ignore[arg-type]
    assert status == 409 and "replay window" in json.loads(body)["error"]


def test_the_replay_guard_forgets_only_what_the_window_refuses() -> None:
    now = [1000.0]
    guard = ReplayGuard(window=10, capacity=3, clock=lambda: now[0])
    guard.admit(b"a", 1000.0)
    with pytest.raises(wire.Replayed):
        guard.admit(b"a", 1000.0)
    now[0] = 1011.0  # "a" is forgotten, and a request sent when "a" was is now refused
    with pytest.raises(wire.Replayed, match="window"):
        guard.admit(b"a", 1000.0)
    guard.admit(b"b", 1011.0)
    guard.admit(b"c", 1011.0)
    guard.admit(b"d", 1011.0)
    with pytest.raises(wire.Busy, match="full"):  # fail closed, never forget early
        guard.admit(b"e", 1011.0)


# --- JSON numbers out of range, at both ends -----------------------------------------------------


def test_a_5000_digit_integer_is_a_400_without_a_traceback(stack: Stack) -> None:
    """The finding: the enclave dropped the connection, with a traceback in the host log."""
    body = json.dumps({"enc": "AAAA", "ciphertext": "AAAA"}).encode()[:-1]
    body += b', "n": ' + b"1" * 5000 + b"}"
    status, _ = _raw(_address(stack), _post(body))
    assert status == 400
    # the same integer inside a correctly sealed request: also a 400, nothing run
    from enclave_runtime import hpke

    key = _attested_key(stack)
    enc, ctx = hpke.setup_base_sender(key, wire.REQUEST_INFO)  # type: ignore[arg-type]
    plaintext = b'{"prompt": "q", "max_tokens": ' + b"1" * 5000 + b', "sent_at": 0}'
    sealed = json.dumps(
        {"enc": wire.b64e(enc), "ciphertext": wire.b64e(ctx.seal(plaintext))}
    ).encode()
    status, _ = _raw(_address(stack), _post(sealed))
    assert status == 400
    assert "Traceback" not in stack.enclave.log_path.read_text(errors="replace")


@pytest.fixture
def interposer(stack: Stack) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A host in the middle: relays GET to the real endpoint, answers POST as told."""
    replies: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            body = _Endpoint(stack.enclave.url, 30).call("GET", self.path)
            if "attestation" in replies:
                body = replies["attestation"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = replies["answer"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", replies
    server.shutdown()


@pytest.mark.parametrize(
    ("where", "body"),
    [
        ("answer", b'{"nonce": "AAAA", "ciphertext": "AAAA", "n": ' + b"1" * 5000 + b"}"),
        ("answer", b'{"nonce": 1e999, "ciphertext": "AAAA"}'),
        ("answer", b"[" * 10000),
        ("attestation", b'{"document": "AAAA", "n": ' + b"1" * 5000 + b"}"),
    ],
)
def test_client_ask_treats_numbers_out_of_range_as_protocol_errors(
    stack: Stack, interposer: tuple[str, dict[str, bytes]], where: str, body: bytes
) -> None:
    """The finding: the same integer in an answer made ``client ask`` exit 70."""
    url, replies = interposer
    replies[where] = body
    with pytest.raises(ProtocolError):
        ask(
            url,
            "Name a prime.",
            expectation=Expectation(stack.expected, "test"),
            roots=[TrustRoot.from_pem(stack.ca.root_pem(), name="sim")],
            max_tokens=2,
            timeout=30,
        )


# --- the proxy: idle connections, slow heads, framing ---------------------------------------------


def _idle(address: tuple[str, int], source: str, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(address)
        sockets.append(s)
    return sockets


def _first_line(s: socket.socket) -> str:
    s.settimeout(0.2)
    try:
        return s.recv(64).split(b"\r\n")[0].decode() or "closed"
    except TimeoutError:
        return "held open"
    except OSError:
        return "reset"


def test_64_idle_connections_from_another_address_do_not_starve_clients(stack: Stack) -> None:
    """The finding: 64 idle connections made every other ask fail (exit 53) for up to 120 s."""
    idle = _idle(_address(stack), "127.0.0.2", 64)
    try:
        time.sleep(0.3)
        started = time.perf_counter()
        _ask(stack)
        assert time.perf_counter() - started < 5
        seen = [_first_line(s) for s in idle]
        assert seen.count("held open") == MAX_PER_PEER
        assert seen.count("HTTP/1.1 429 Too Many Requests") == 64 - MAX_PER_PEER
    finally:
        for s in idle:
            s.close()


def test_idle_connections_from_the_clients_own_address_are_cut_after_the_header_timeout(
    stack: Stack,
) -> None:
    idle = _idle(_address(stack), "127.0.0.1", 64)
    try:
        time.sleep(0.3)
        started = time.perf_counter()
        with pytest.raises(ServiceUnavailable, match="429"):  # a clear, immediate refusal
            _ask(stack)
        while True:
            try:
                _ask(stack)
                break
            except ServiceUnavailable:
                assert time.perf_counter() - started < HEADER_TIMEOUT + 5
                time.sleep(0.25)
        assert time.perf_counter() - started < HEADER_TIMEOUT + 5
        assert all(
            _first_line(s) in ("closed", "reset", "HTTP/1.1 429 Too Many Requests") for s in idle
        )
    finally:
        for s in idle:
            s.close()


def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_deadline(stack: Stack) -> None:
    head = b"GET /v1/attestation?nonce=" + b"00" * 16 + b" HTTP/1.1\r\nHost: e\r\n\r\n"
    started = time.perf_counter()
    with socket.create_connection(_address(stack), timeout=30) as sock:
        answer = b""
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.5)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(4096)
            sock.setblocking(True)
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.perf_counter() - started < HEADER_TIMEOUT + 2


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /v1/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST /v1/infer HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab", 400),
        (b"POST /v1/infer HTTP/1.1\r\nContent-Length: \xb2\r\n\r\nab", 400),
        (b"POST /v1/infer HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 400),
    ],
)
def test_the_proxy_refuses_ambiguous_framing(
    stack: Stack, request_bytes: bytes, status: int
) -> None:
    got, _ = _raw(_address(stack), request_bytes)
    assert got == status
