"""Benchmark: tokens per second of the pure-NumPy SmolLM2-135M (float32, one BLAS thread).

Greedy answers to fixed prompts with the KV cache; the baseline in the same run is the
same model without a cache (the whole sequence recomputed for every new token), and the
same cached decoding with NumPy's default multi-threaded BLAS (which the shared 2-core
machine punishes).  Reported: load time (GGUF parse + dequantize to float32), prefill
(prompt) tokens/s and decode tokens/s, best of --runs.  The integrator's enclave-path
run (decrypt + bridge) compares against these numbers.

Usage:  .venv/bin/python bench/model_tokens.py [--runs 3] [--new-tokens 48] [--write]
"""

from __future__ import annotations

import os
import sys

if "--child-threads" not in sys.argv:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse
import json
import subprocess
import time

from model_common import machine, write_section

from enclave_runtime.model.chat import ChatModel, Message
from reference_enclave.model.smollm2 import load_smollm2_gguf

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain what a hash function is in two sentences.",
]


def measure(runs: int, new_tokens: int) -> dict[str, float]:
    t0 = time.perf_counter()
    model = ChatModel.from_gguf(load_smollm2_gguf(), what="smollm2")
    load = time.perf_counter() - t0
    prefill, decode, answers = [], [], []
    for _ in range(runs):
        steps = secs = p_tok = p_secs = 0.0
        for prompt in PROMPTS:
            g = model.generate(prompt, new_tokens)
            steps += g.decode_steps
            secs += g.decode_seconds
            p_tok += g.prompt_tokens
            p_secs += g.prefill_seconds
            answers.append(g.text)
        decode.append(steps / secs)
        prefill.append(p_tok / p_secs)
    return {
        "load": load,
        "prefill": max(prefill),
        "decode": max(decode),
        "paris": float("Paris" in answers[0]),
    }


def no_cache(new_tokens: int) -> float:
    model = ChatModel.from_gguf(load_smollm2_gguf(), what="smollm2")
    ids = model.prompt_ids([Message("user", PROMPTS[0])])
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        logits = model.model.forward(ids, model.model.new_cache(len(ids)), last_only=True)
        ids = [*ids, int(logits[-1].argmax())]
    return new_tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--child-threads", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_threads:  # default BLAS threading, in a fresh process
        print(json.dumps(measure(1, args.new_tokens)))
        return
    one = measure(args.runs, args.new_tokens)
    baseline = no_cache(16)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    threaded = json.loads(
        subprocess.run(
            [sys.executable, __file__, "--child-threads", "--new-tokens", str(args.new_tokens)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    lines = [
        "## NumPy SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to float32)",
        "",
        f"Command: `.venv/bin/python bench/model_tokens.py --runs {args.runs} "
        f"--new-tokens {args.new_tokens} --write`  ",
        f"Machine: {machine()}  ",
        f"Prompts: {len(PROMPTS)} fixed chat prompts (default system turn), greedy, up to "
        f"{args.new_tokens} new tokens each; best of {args.runs}.",
        "",
        "| measurement | value |",
        "| --- | ---: |",
        f"| load: parse GGUF + dequantize all tensors to float32 | {one['load']:.2f} s |",
        f"| prefill (prompt tokens/s), 1 BLAS thread | {one['prefill']:.0f} |",
        f"| decode with KV cache (tokens/s), 1 BLAS thread | {one['decode']:.1f} |",
        f"| baseline: decode without KV cache (tokens/s), 1 BLAS thread | {baseline:.1f} |",
        f"| decode with KV cache, NumPy's default BLAS threads (tokens/s) | "
        f"{threaded['decode']:.1f} |",
        "",
        f"KV cache speed-up over full recomputation: **{one['decode'] / baseline:.1f}x**; "
        f"one BLAS thread vs default threads: {one['decode'] / threaded['decode']:.1f}x.  "
        "The capital-of-France answer "
        f"{'mentions' if one['paris'] else 'does NOT mention'} Paris.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("tokens", text)


if __name__ == "__main__":
    main()
