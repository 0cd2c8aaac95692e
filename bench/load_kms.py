"""Load on the reference KMS: concurrent boto3 clients on loopback for a fixed time.

Starts ``enclave-audit kms serve`` as a subprocess, runs ``--clients`` threads
issuing GenerateDataKey then Decrypt (the enclave's hot path) for ``--seconds``,
samples the server's RSS once a second, and reports requests per second, p50/p99
latency, errors and RSS (first, last, max; growth over the second half of the run
is what "flat" means).  Stops by itself.

\b
Example:
  .venv/bin/python bench/load_kms.py --seconds 60 --clients 8 --json out/load_kms.json
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load_stats import markdown_table, summarize
from fuzz.faults import ADMIN, _client, _start_kms


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(seconds: float, clients: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="load-kms-") as folder:
        db, config = Path(folder) / "kms.db", Path(folder) / "kms.json"
        config.write_text(json.dumps({"account_id": "111122223333", "credentials": [ADMIN]}))
        proc, url = _start_kms(db, config, 0)
        try:
            key_id = _client(url).create_key(Description="load")["KeyMetadata"]["KeyId"]
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()
            stop = threading.Event()

            def worker() -> None:
                client = _client(url)
                mine: list[float] = []
                while not stop.is_set():
                    try:
                        t0 = time.perf_counter()
                        out = client.generate_data_key(
                            KeyId=key_id, KeySpec="AES_256", EncryptionContext={"model": "m"}
                        )
                        t1 = time.perf_counter()
                        back = client.decrypt(
                            CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"model": "m"}
                        )
                        t2 = time.perf_counter()
                        if back["Plaintext"] != out["Plaintext"]:
                            raise AssertionError("decrypt returned another data key")
                        mine += [t1 - t0, t2 - t1]
                    except Exception as exc:
                        with lock:
                            errors.append(f"{type(exc).__name__}: {exc}")
                with lock:
                    latencies.extend(mine)

            rss: list[tuple[float, float]] = []
            threads = [threading.Thread(target=worker) for _ in range(clients)]
            started = time.monotonic()
            for t in threads:
                t.start()
            while (elapsed := time.monotonic() - started) < seconds:
                rss.append((round(elapsed, 1), rss_mb(proc.pid)))
                time.sleep(1.0)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            wall = time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return {
        "schema": "enclave-audit/load-kms/v1",
        **summarize(
            clients=clients,
            seconds=seconds,
            wall=wall,
            latencies=latencies,
            errors=errors,
            rss=rss,
        ),
    }


def markdown(r: dict[str, Any], command: str) -> str:
    return f"Command: `{command}`\n\n" + markdown_table(r)


def main() -> int:
    parser = argparse.ArgumentParser(description="load the reference KMS on loopback")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args()
    result = run(args.seconds, args.clients)
    command = "python bench/load_kms.py " + " ".join(sys.argv[1:])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**result, "command": command}, indent=2) + "\n")
    print(markdown(result, command))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
