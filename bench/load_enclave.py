"""Load on the enclave endpoint: concurrent attested clients on loopback for a fixed time.

Starts the host-side stack (reference KMS, host proxy, simulated NSM, the runtime as
a host process) with the TINY test model, so inference is cheap and the figures
measure the endpoint (proxy relay, attestation, HPKE, HTTP), not the model.  Runs
``--clients`` threads, each doing the full ``client ask`` (fetch an attestation
document with a fresh nonce, verify it against the simulation root and the expected
PCRs incl. PCR16, HPKE-seal the prompt, POST /v1/infer, open the answer and compare
it with the model's greedy answer) for ``--seconds``; samples the runtime process's
RSS once a second; reports asks per second, p50/p99 latency per ask, errors and
RSS (first, last, max; growth over the second half of the run is what "flat"
means).  Stops by itself.

\b
Example:
  .venv/bin/python bench/load_enclave.py --seconds 60 --clients 8 --json out/load_enclave.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load_stats import markdown_table, summarize

PROMPT = "Name a prime number."
MAX_TOKENS = 4


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(seconds: float, clients: int) -> dict[str, Any]:
    from reference_enclave.client import Expectation, ask
    from tests.reference_enclave.runtime.stack import start_stack
    from verifier.nitro import TrustRoot

    with tempfile.TemporaryDirectory(prefix="load-enclave-") as folder:
        stack = start_stack(Path(folder))
        try:
            expectation = Expectation(stack.expected, "load expectation")
            roots: list[object] = [TrustRoot.from_pem(stack.ca.root_pem(), name="sim")]
            url, pid = stack.enclave.url, stack.enclave.process.pid

            def one() -> str:
                return ask(
                    url,
                    PROMPT,
                    expectation=expectation,
                    roots=roots,
                    max_tokens=MAX_TOKENS,
                    timeout=30,
                ).answer

            reference = one()
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()
            stop = threading.Event()

            def worker() -> None:
                mine: list[float] = []
                while not stop.is_set():
                    try:
                        t0 = time.perf_counter()
                        answer = one()
                        mine.append(time.perf_counter() - t0)
                        if answer != reference:
                            raise AssertionError(f"answer changed under load: {answer!r}")
                    except Exception as exc:
                        with lock:
                            errors.append(f"{type(exc).__name__}: {exc}")
                with lock:
                    latencies.extend(mine)

            rss: list[tuple[float, float]] = []
            threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
            started = time.monotonic()
            for t in threads:
                t.start()
            while (elapsed := time.monotonic() - started) < seconds:
                rss.append((round(elapsed, 1), round(rss_mb(pid), 1)))
                time.sleep(1.0)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            wall = time.monotonic() - started
            alive = stack.enclave.process.poll() is None
        finally:
            stack.enclave.stop()
            stack.kms.stop()
    return {
        "schema": "enclave-audit/load-enclave/v1",
        "model": "tiny test model (tests: enclave_runtime.model.tiny), max_tokens 4",
        **summarize(
            clients=clients,
            seconds=seconds,
            wall=wall,
            latencies=latencies,
            errors=errors,
            rss=rss,
        ),
        "server_alive": alive,
        "machine": f"{os.cpu_count()} CPU(s), loopback, clients in the same machine",
    }


def markdown(r: dict[str, Any], command: str) -> str:
    return (
        f"Command: `{command}` ({r['model']}; one request = one full attested ask:"
        " attestation GET + verify + HPKE POST /v1/infer)\n\n" + markdown_table(r, unit="asks")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="load the enclave endpoint on loopback")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.seconds <= 3600:
        parser.error("--clients must be 1..64 and --seconds 1..3600")
    result = run(args.seconds, args.clients)
    command = "python bench/load_enclave.py " + " ".join(sys.argv[1:])
    if args.json:
        from enclave_audit.fsutil import write_json_atomic

        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.json, {**result, "command": command})
    print(markdown(result, command))
    return 1 if result["errors"] or not result["server_alive"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
