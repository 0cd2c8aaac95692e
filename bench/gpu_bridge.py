"""Benchmark: tokens/s through the encrypted GPU bridge vs the same bridge unencrypted.

Both runs use the same transport (Unix socket + shared-memory bounce buffer, a
separate accelerator process); the only difference is AES-256-GCM sealing and
authentication.  Also reports bytes encrypted per token and the plain local
NumPy rate.  Goal: encrypted within 1.25x of unencrypted on CPU.

    .venv/bin/python bench/gpu_bridge.py [--model smollm2|tiny] [--tokens 24] [--device cpu|cuda]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from enclave_runtime.gpu_bridge.client import BridgeBackend, load_reference_values
from enclave_runtime.model.chat import ChatModel

PROMPT = "What is the capital of France?"


def model_bytes(which: str, tmp: Path) -> bytes:
    if which == "tiny":
        from reference_enclave.model.tiny_gguf import write_tiny_gguf

        return write_tiny_gguf(tmp / "tiny.gguf").read_bytes()
    from reference_enclave.model.smollm2 import load_smollm2_gguf

    return load_smollm2_gguf()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (both sides of the bridge are measured)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def decode_rate(model: ChatModel, tokens: int) -> tuple[float, str, int]:
    gen = model.generate(PROMPT, max_new_tokens=tokens)
    return gen.decode_steps / gen.decode_seconds, gen.text, gen.prompt_tokens + gen.decode_steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs; best of each kept")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = model_bytes(args.model, tmp)
        sock = tmp / "acc.sock"
        exe = Path(sys.executable).with_name("enclave-audit")
        proc = subprocess.Popen(
            [
                str(exe),
                "accelerator",
                "serve",
                "--socket",
                str(sock),
                "--device",
                args.device,
                "--allow-insecure-plaintext",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                if sock.exists():
                    break
                time.sleep(0.05)
            local_rate, local_text, _ = decode_rate(ChatModel.from_gguf(data), args.tokens)
            results: dict[str, dict[str, object]] = {}
            for label, insecure in [("unencrypted", True), ("encrypted", False)] * args.rounds:
                bridge = BridgeBackend(sock, load_reference_values(), insecure_plaintext=insecure)
                with bridge:
                    t0 = time.perf_counter()
                    model = ChatModel.from_gguf(data, backend=bridge)
                    load_s = time.perf_counter() - t0
                    before_sent = bridge.link.stats.payload_bytes
                    before_recv = bridge.link.stats.received_bytes
                    cpu0 = cpu_seconds(os.getpid()) + cpu_seconds(proc.pid)
                    rate, text, processed = decode_rate(model, args.tokens)
                    cpu = cpu_seconds(os.getpid()) + cpu_seconds(proc.pid) - cpu0
                    moved = (
                        bridge.link.stats.payload_bytes
                        - before_sent
                        + bridge.link.stats.received_bytes
                        - before_recv
                    )
                best = results.get(label)
                cpu_per_token = cpu / max(1, processed)
                if best is None or rate > float(best["tokens_per_s"]):  # type: ignore[arg-type]
                    results[label] = {
                        "tokens_per_s": rate,
                        "weights_load_s": load_s,
                        "cpu_s_per_token": min(
                            cpu_per_token,
                            float(best["cpu_s_per_token"]) if best else 1e9,  # type: ignore[arg-type]
                        ),
                        "bytes_per_token": moved / max(1, processed),
                        "text": text,
                    }
            assert results["encrypted"]["text"] == results["unencrypted"]["text"] == local_text
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    enc, plain = results["encrypted"], results["unencrypted"]
    assert isinstance(enc["tokens_per_s"], float) and isinstance(plain["tokens_per_s"], float)
    report = {
        "machine": f"{platform.node()} {os.cpu_count()} cores, device={args.device}",
        "model": args.model,
        "local_numpy_tokens_per_s": round(local_rate, 2),
        "bridge_unencrypted_tokens_per_s": round(plain["tokens_per_s"], 2),
        "bridge_encrypted_tokens_per_s": round(enc["tokens_per_s"], 2),
        "encrypted_over_unencrypted_time": round(plain["tokens_per_s"] / enc["tokens_per_s"], 3),
        "cpu_ms_per_processed_token_unencrypted": round(1000 * float(plain["cpu_s_per_token"]), 2),  # type: ignore[arg-type]
        "cpu_ms_per_processed_token_encrypted": round(1000 * float(enc["cpu_s_per_token"]), 2),  # type: ignore[arg-type]
        "encrypted_over_unencrypted_cpu": round(
            float(enc["cpu_s_per_token"]) / float(plain["cpu_s_per_token"]),
            3,  # type: ignore[arg-type]
        ),
        "bytes_encrypted_per_processed_token": int(enc["bytes_per_token"]),  # type: ignore[call-overload]
        "weights_load_s_unencrypted": round(plain["weights_load_s"], 2),
        "weights_load_s_encrypted": round(enc["weights_load_s"], 2),
        "same_answer": True,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
