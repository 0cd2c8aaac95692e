"""Benchmark: attested Decrypt (Recipient) on the reference KMS vs its raw crypto cost.

A KMS runs as a separate process (``enclave-audit kms serve``) on loopback; a boto3
client sends Decrypt requests with a Recipient (a simulated-NSM attestation document
carrying an RSA-2048 key) and opens each CiphertextForRecipient.  Reported: requests
per second (sequential, one connection, and with several client threads), p50/p99
latency, and the ratio of the per-request server-side time to the raw cryptographic
work one request needs, measured in this same run: attestation verification
(COSE ES384 + certificate chain) + CMS build (RSA-OAEP-SHA-256 encrypt + AES-256-CBC).
Bounded: at most --requests requests and --seconds seconds per phase.  Usage:

    .venv/bin/python bench/kms_recipient.py [--requests 300] [--seconds 30] [--threads 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from enclave_runtime.cms import build_enveloped_data, open_enveloped_data
from enclave_runtime.nsm import protocol
from reference_enclave.kms import kms_client, recipient_param
from reference_enclave.nsm.sim_ca import SimulationCa
from reference_enclave.nsm.simulator import SimulatedNsm
from verifier.nitro import ChainCache, TrustRoot, verify_attestation

ACCESS_KEY = "AKIABENCH00000000001"
SECRET = "bench-secret-" + "b" * 30
PRINCIPAL = "arn:aws:sts::111122223333:assumed-role/enclave/i-0bench"
PCR0 = bytes.fromhex("a1" * 48)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def timed_loop(fn: Callable[[], None], count: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(latencies) < count and time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - start)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kms.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kms-bench-"))
    ca = SimulationCa.create()
    (work / "root.pem").write_bytes(ca.root_pem())
    (work / "kms.toml").write_text(
        f'[[credentials]]\naccess_key_id = "{ACCESS_KEY}"\n'
        f'secret_access_key = "{SECRET}"\nprincipal = "{PRINCIPAL}"\n'
    )
    exe = Path(sys.executable).with_name("enclave-audit")
    server = subprocess.Popen(
        [
            str(exe),
            "kms",
            "serve",
            "--db",
            str(work / "kms.db"),
            "--config",
            str(work / "kms.toml"),
            "--root",
            str(work / "root.pem"),
            "--max-age",
            "600",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        client = kms_client(url, ACCESS_KEY, SECRET)
        policy = (
            '{"Version": "2012-10-17", "Statement": ['
            '{"Sid": "All", "Effect": "Allow", "Principal": {"AWS": "111122223333"},'
            ' "Action": "kms:*", "Resource": "*"},'
            '{"Sid": "Deny", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt",'
            ' "Resource": "*", "Condition": {"StringNotEqualsIgnoreCase":'
            f' {{"kms:RecipientAttestation:ImageSha384": "{PCR0.hex()}"}}}}}}]}}'
        )
        key_id = client.create_key(Policy=policy)["KeyMetadata"]["KeyId"]
        blob = client.encrypt(KeyId=key_id, Plaintext=os.urandom(32))["CiphertextBlob"]

        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        spki = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        nsm = SimulatedNsm({0: PCR0, 1: bytes(range(48)), 2: bytes(48 * [7])}, ca)
        document = protocol.decode_response(
            nsm.handle(protocol.attestation(public_key=spki)), "Attestation"
        )["document"]
        recipient = recipient_param(document)

        def attested() -> None:
            answer = client.decrypt(CiphertextBlob=blob, Recipient=recipient)
            open_enveloped_data(answer["CiphertextForRecipient"], private)

        def attested_no_open() -> None:
            client.decrypt(CiphertextBlob=blob, Recipient=recipient)

        # warm up (connection, chain cache on both sides)
        for _ in range(5):
            attested()

        seq = timed_loop(attested_no_open, args.requests, args.seconds)
        seq_open = timed_loop(attested, max(50, args.requests // 3), args.seconds / 3)

        # concurrent clients
        per_thread = max(1, args.requests // args.threads)
        results: list[list[float]] = [[] for _ in range(args.threads)]

        def worker(slot: int) -> None:
            own = kms_client(url, ACCESS_KEY, SECRET)
            results[slot] = timed_loop(
                lambda: own.decrypt(CiphertextBlob=blob, Recipient=recipient) and None,
                per_thread,
                args.seconds,
            )

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        concurrent_wall = time.perf_counter() - start
        concurrent = [v for r in results for v in r]

        # raw crypto, same process, same document
        root = TrustRoot.from_pem(ca.root_pem(), name="bench")
        public = private.public_key()

        def raw() -> None:
            verify_attestation(
                document,
                roots=[root],
                max_age=dt.timedelta(seconds=600),
                now=dt.datetime.now(dt.UTC),
            )
            build_enveloped_data(os.urandom(32), public)

        def raw_verify() -> None:
            verify_attestation(
                document,
                roots=[root],
                max_age=dt.timedelta(seconds=600),
                now=dt.datetime.now(dt.UTC),
            )

        def raw_verify_uncached() -> None:
            verify_attestation(
                document,
                roots=[root],
                max_age=dt.timedelta(seconds=600),
                now=dt.datetime.now(dt.UTC),
                chain_cache=ChainCache(maxsize=0),
            )

        def raw_cms() -> None:
            build_enveloped_data(os.urandom(32), public)

        raw()
        raw_t = timed_loop(raw, args.requests, args.seconds)
        verify_t = timed_loop(raw_verify, args.requests, args.seconds)
        uncached_t = timed_loop(raw_verify_uncached, args.requests, args.seconds)
        cms_t = timed_loop(raw_cms, args.requests, args.seconds)

        def plain() -> None:
            client.describe_key(KeyId=key_id)

        plain_t = timed_loop(plain, args.requests, args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)

    def ms(v: float) -> str:
        return f"{v * 1000:.2f}"

    seq_rps = len(seq) / sum(seq)
    raw_mean = statistics.mean(raw_t)
    seq_mean = statistics.mean(seq)
    lines = [
        "# Reference KMS: attested Decrypt (Recipient) throughput and latency",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
        f"{platform.python_version()}, {platform.platform()}",
        f"Date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        "",
        "Command: `.venv/bin/python bench/kms_recipient.py "
        f"--requests {args.requests} --seconds {args.seconds:g} --threads {args.threads}`",
        "",
        "Server: `enclave-audit kms serve` in its own process (ThreadingHTTPServer, SQLite WAL,",
        "one audit row per request, synchronous=FULL); client: boto3 over loopback HTTP/1.1",
        "keep-alive.",
        "Each request: SigV4 check, attestation verification (COSE ES384 + P-384 chain to the",
        "simulation root, max age 600 s), key-policy evaluation with the ImageSha384 condition,",
        "AES-256-GCM unwrap of the blob, CMS EnvelopedData build (RSA-OAEP-SHA-256 + AES-256-CBC).",
        "",
        "| measurement | n | mean ms | p50 ms | p99 ms | req/s |",
        "|---|---|---|---|---|---|",
        f"| Decrypt+Recipient, 1 client | {len(seq)} | {ms(seq_mean)} | {ms(percentile(seq, 0.5))} "
        f"| {ms(percentile(seq, 0.99))} | {seq_rps:.1f} |",
        f"| same + enclave opens the CMS (RSA-OAEP decrypt) | {len(seq_open)} | "
        f"{ms(statistics.mean(seq_open))} | {ms(percentile(seq_open, 0.5))} | "
        f"{ms(percentile(seq_open, 0.99))} | {len(seq_open) / sum(seq_open):.1f} |",
        f"| Decrypt+Recipient, {args.threads} client threads | {len(concurrent)} | "
        f"{ms(statistics.mean(concurrent))} | {ms(percentile(concurrent, 0.5))} | "
        f"{ms(percentile(concurrent, 0.99))} | {len(concurrent) / concurrent_wall:.1f} |",
        f"| DescribeKey (no crypto; HTTP+SigV4+SQLite floor) | {len(plain_t)} | "
        f"{ms(statistics.mean(plain_t))} | {ms(percentile(plain_t, 0.5))} | "
        f"{ms(percentile(plain_t, 0.99))} | {len(plain_t) / sum(plain_t):.1f} |",
        f"| raw crypto: verify_attestation + build_enveloped_data | {len(raw_t)} | "
        f"{ms(raw_mean)} | "
        f"{ms(percentile(raw_t, 0.5))} | {ms(percentile(raw_t, 0.99))} | {1 / raw_mean:.1f} |",
        f"| raw: verify_attestation alone | {len(verify_t)} | {ms(statistics.mean(verify_t))} | "
        f"{ms(percentile(verify_t, 0.5))} | {ms(percentile(verify_t, 0.99))} | "
        f"{1 / statistics.mean(verify_t):.1f} |",
        f"| raw: verify_attestation, chain cache off (all 3 ECDSA P-384) | {len(uncached_t)} | "
        f"{ms(statistics.mean(uncached_t))} | {ms(percentile(uncached_t, 0.5))} | "
        f"{ms(percentile(uncached_t, 0.99))} | {1 / statistics.mean(uncached_t):.1f} |",
        f"| raw: build_enveloped_data alone (RSA-OAEP enc + AES-CBC) | {len(cms_t)} | "
        f"{ms(statistics.mean(cms_t))} | {ms(percentile(cms_t, 0.5))} | "
        f"{ms(percentile(cms_t, 0.99))} | {1 / statistics.mean(cms_t):.1f} |",
        "",
        f"**Ratio** (mean attested Decrypt round trip / mean raw crypto of one request): "
        f"**{seq_mean / raw_mean:.2f}x** (p50: "
        f"{percentile(seq, 0.5) / percentile(raw_t, 0.5):.2f}x); the difference is HTTP, "
        "JSON/base64, SigV4 (botocore's signer on both sides), policy evaluation and the "
        "audit-log write.  Both the server and the raw baseline use the verifier's default "
        "chain cache (validated intermediates are reused; the leaf certificate, COSE "
        "signature, validity, age and PCR checks run on every request); the uncached row "
        "shows the cost without it.  The 2 CPUs are shared with other work, so the p99 "
        "figures are noisy; the ratio is what to compare.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
