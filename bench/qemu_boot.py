"""Benchmark: boot-to-attestation under QEMU TCG vs the static measurement of the same EIF.

The independent check (boot the image, let QEMU's NSM measure it, read its PCRs)
is compared with what it double-checks: ``describe_eif`` computing the same PCRs
on the host, in the same run.  Reports the probe image's boot timings (first
console output, attestation received, QEMU exit), the median over ``--runs``,
the ratio to describe-eif, and the vsock data-path result.  Usage:

    .venv/bin/python bench/qemu_boot.py [--runs 3] [--eif IMAGE.eif]

Without ``--eif`` it boots the probe image (enclave kernel + nsm-attest as /init),
building the kernel and QEMU first if they are not cached.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from builder.eif import describe_eif
from verifier.qemu.boot import boot_and_attest
from verifier.qemu.build import build_qemu
from verifier.qemu.testimage import reference_kernel, write_probe_eif


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--eif", type=Path)
    args = parser.parse_args()
    install = build_qemu()
    with tempfile.TemporaryDirectory(prefix="qemu-bench-") as tmp:
        eif = args.eif
        if eif is None:
            eif = write_probe_eif(Path(tmp) / "probe.eif", kernel=reference_kernel().bzimage).eif
        size_mb = eif.stat().st_size / 1e6
        t = time.perf_counter()
        describe_eif(eif)
        static_s = time.perf_counter() - t
        results = []
        for _ in range(args.runs):
            r = boot_and_attest(
                eif, parent_role=None, parent_id=None, nonce=None, timeout=300, progress=None
            )
            assert r.mismatched() == [], r.comparisons
            results.append(r)
    attest = [r.timings.attestation_s for r in results]
    first = [r.timings.first_output_s or 0.0 for r in results]
    exits = [r.timings.qemu_exit_s for r in results if r.timings.qemu_exit_s is not None]
    median = statistics.median(attest)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{install.version} (TCG, -smp 1)")
    print(f"image: {eif.name}, {size_mb:.2f} MB")
    print(f"QEMU build (cached): {install.build_seconds} s")
    print(f"describe-eif (static PCRs): {static_s * 1000:.1f} ms")
    print("boot -> attestation (s): " + ", ".join(f"{a:.2f}" for a in attest))
    print("QEMU start -> first console output (s): " + ", ".join(f"{f:.2f}" for f in first))
    print("QEMU start -> QEMU exit (s): " + ", ".join(f"{e:.2f}" for e in exits))
    print(f"median boot -> attestation: {median:.2f} s = {median / static_s:.0f}x describe-eif")
    print(f"vsock guest -> host copy matched: {[r.vsock_document_match for r in results]}")
    print(f"vsock host -> guest request answered: {[r.vsock_request_ok for r in results]}")
    print(f"boot heartbeat acknowledged: {[r.vsock_heartbeat for r in results]}")


if __name__ == "__main__":
    main()
