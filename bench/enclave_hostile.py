"""Hostile clients against the enclave endpoint and the host proxy: the issue-18 figures.

Starts the host-side stack (reference KMS, host proxy, simulated NSM, the runtime as
a host process; ``--model smollm2`` for the pinned SmolLM2-135M, else the tiny test
model) and measures, each in turn:

* ``long-prompt``: one client sends an 8,192-character prompt with max_tokens=1; one
  second later a second client asks a short question.  Reported: how the long
  request ended and after how long, how long the second client waited, and how long
  the same short ask took alone just before (the machine's own speed in this run).
* ``idle-connections``: 64 TCP connections to the proxy's client port that send
  nothing (from 127.0.0.2, then from the client's own 127.0.0.1), then normal asks
  until one succeeds (every 0.25 s, at most 180 s).  Reported: the first ask's
  outcome, how many failed and how long until one succeeded, and what the 64 got.
* ``replay``: one sealed request sent three times byte for byte: how many answers.
* ``big-integer``: a request body with a 5,000-digit integer: the status, or a
  dropped connection, and whether the runtime log holds a traceback.

\b
Example:
  .venv/bin/python bench/enclave_hostile.py --model smollm2 --json out/enclave_hostile.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LONG_PROMPT = ("The quick brown fox jumps over the lazy dog near the river bank. " * 200)[:8192]
SHORT_PROMPT = "What is the capital of France?"
SCENARIOS = ("long-prompt", "idle-connections", "replay", "big-integer")


def _raw(
    address: tuple[str, int], data: bytes, *, timeout: float = 600
) -> tuple[int | None, bytes]:
    """Send ``data``; (status, body) of the answer, or (None, b"") if the connection dropped."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None, b""
    return int(head.split()[1]), body


def _connect(address: tuple[str, int], source: str) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(address)
    return s


def _closed(s: socket.socket) -> bool:
    """Whether the proxy has answered or closed ``s`` (without consuming a byte)."""
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) is not None
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


def _post(body: bytes) -> bytes:
    return (
        b"POST /v1/infer HTTP/1.1\r\nHost: enclave\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def run(model: str, scenarios: frozenset[str] = frozenset(SCENARIOS)) -> dict[str, Any]:
    from enclave_runtime import wire
    from reference_enclave import demo
    from reference_enclave.client import Expectation, ask
    from reference_enclave.client.ask import _Endpoint, verify_enclave_document
    from tests.reference_enclave.runtime.stack import start_stack
    from verifier.nitro import TrustRoot

    out: dict[str, Any] = {"model": model}
    with tempfile.TemporaryDirectory(prefix="enclave-hostile-") as folder:
        gguf = demo.smollm2_gguf() if model == "smollm2" else None
        stack = start_stack(Path(folder), gguf=gguf, max_tokens=16)
        try:
            expectation = Expectation(stack.expected, "bench")
            roots: list[object] = [TrustRoot.from_pem(stack.ca.root_pem(), name="sim")]
            url = stack.enclave.url
            host, port = url.removeprefix("http://").rsplit(":", 1)
            address = (host, int(port))

            def timed_ask(prompt: str, max_tokens: int, *, source: str = "") -> dict[str, Any]:
                started = time.perf_counter()
                try:
                    result = ask(
                        url,
                        prompt,
                        expectation=expectation,
                        roots=roots,
                        max_tokens=max_tokens,
                        timeout=600,
                    )
                    outcome = f"answered ({result.prompt_tokens} prompt tokens)"
                except Exception as exc:
                    outcome = f"{type(exc).__name__}: {str(exc)[:160]}"
                return {"outcome": outcome, "seconds": round(time.perf_counter() - started, 2)}

            timed_ask(SHORT_PROMPT, 4)  # warm-up
            if "long-prompt" in scenarios:
                # --- one long prompt, one concurrent client (and the same ask alone) ---
                results: dict[str, Any] = {"alone": timed_ask(SHORT_PROMPT, 4)}
                attacker = threading.Thread(
                    target=lambda: results.__setitem__("long", timed_ask(LONG_PROMPT, 1))
                )
                attacker.start()
                time.sleep(1.0)
                results["concurrent"] = timed_ask(SHORT_PROMPT, 4)
                attacker.join()
                out["long-prompt"] = results

            if "idle-connections" in scenarios:
                # --- 64 idle connections, from another address and from the client's own ---
                for source in ("127.0.0.2", "127.0.0.1"):
                    idle: list[socket.socket] = []
                    statuses: dict[str, int] = {}
                    for _ in range(64):
                        idle.append(_connect(address, source))
                    time.sleep(0.5)
                    # the holder renews what the proxy closed, so that 64 are held (the finding)
                    for i, s in enumerate(idle):
                        if _closed(s):
                            s.close()
                            idle[i] = _connect(address, source)
                    time.sleep(0.2)
                    started = time.perf_counter()
                    results = timed_ask(SHORT_PROMPT, 4)
                    failures = 0
                    while not results["outcome"].startswith("answered"):
                        failures += 1
                        if time.perf_counter() - started > 180:
                            break
                        time.sleep(0.25)
                        results = timed_ask(SHORT_PROMPT, 4)
                    results["failed_asks_before_success"] = failures
                    results["seconds_until_an_ask_succeeded"] = round(
                        time.perf_counter() - started, 2
                    )
                    for s in idle:
                        s.settimeout(0.05)
                        try:
                            first = s.recv(64)
                            key = first.split(b"\r\n")[0].decode(errors="replace") or "closed"
                        except TimeoutError:
                            key = "held open"
                        except OSError:
                            key = "reset"
                        statuses[key] = statuses.get(key, 0) + 1
                        s.close()
                    out[f"idle-connections-from-{source}"] = {**results, "idle": statuses}

            if "replay" in scenarios:
                # --- one sealed request, three times ---
                ep = _Endpoint(url, 60)
                nonce = secrets.token_bytes(32)
                doc = wire.b64d(
                    wire.json_object(
                        ep.call("GET", f"/v1/attestation?nonce={nonce.hex()}"), "a"
                    ).get("document"),
                    "document",
                )
                import datetime as dt

                public_key, _ = verify_enclave_document(
                    doc,
                    expectation=expectation,
                    roots=roots,
                    nonce=nonce,
                    now=dt.datetime.now(dt.UTC),
                )
                sealed = wire.seal_request(public_key, wire.InferenceRequest(SHORT_PROMPT, 4))
                replies = [_raw(address, _post(sealed.body))[0] for _ in range(3)]
                out["replay"] = {"statuses": replies, "answered": replies.count(200)}

            if "big-integer" in scenarios:
                # --- a 5,000-digit integer in the body ---
                body = json.dumps({"enc": "AAAA", "ciphertext": "AAAA"}).encode()[:-1]
                body += b', "n": ' + b"1" * 5000 + b"}"
                status, _ = _raw(address, _post(body))
                time.sleep(0.5)
                log = stack.enclave.log_path.read_text(errors="replace")
                out["big-integer"] = {
                    "status": status if status is not None else "connection dropped",
                    "traceback_in_log": "Traceback" in log,
                }
        finally:
            stack.enclave.stop()
            stack.kms.stop()
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--scenario", action="append", choices=SCENARIOS, help="repeatable (default: all)"
    )
    args = parser.parse_args(argv)
    result = run(args.model, frozenset(args.scenario or SCENARIOS))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
