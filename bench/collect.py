"""Assemble BENCHMARKS.md from the per-area result files in bench/results/.

    .venv/bin/python bench/collect.py

Each results file holds its figures and the exact command that produced them; this
script only concatenates them under one header, in issue order.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = [
    ("eif.md", "EIF core: describe-eif vs one SHA-384 pass (issue #2)"),
    ("attestation.md", "Attestation document verification (issue #3)"),
    ("builder.md", "Deterministic builder (issue #4)"),
    ("model.md", "Model decryption and NumPy inference (issue #5)"),
    ("kms.md", "Reference KMS: Decrypt with Recipient (issue #5)"),
    ("enclave.md", "Enclave path vs plain NumPy (issue #5)"),
    ("gpu_bridge.md", "GPU bridge (issue #6)"),
    ("diff.md", "Diff and rebuild comparison (issue #7)"),
    ("attest.md", "Signed attestations (issue #8)"),
    ("qemu.md", "QEMU nitro-enclave boot (issue #10)"),
    ("hardening.md", "Fuzzing, faults and load (issue #11; also RELIABILITY.md)"),
    ("load_enclave.md", "Enclave endpoint: load and faults (issue #11)"),
    ("inputs.md", "Pinned inputs: cold build from an input set vs the mirrors (issue #20)"),
    ("startup.md", "Start-up: one-document attestation verify vs python -c pass (issue #17)"),
    ("boundary.md", "The measured boundary: image size, cold build, in-image tokens/s (issue #15)"),
]

HEADER = """# Benchmarks

Every figure is a ratio against a baseline measured in the same run (openssl speed, a
single hash pass, diffoscope, an unencrypted or local variant), on the project's 2-core
machine. Absolute times on that machine vary with whatever else runs; the ratios are the
claims. Each section names the command that produced it. Regenerate this file with
`.venv/bin/python bench/collect.py` after re-running a benchmark.
"""


def main() -> None:
    parts = [HEADER]
    for name, title in ORDER:
        path = ROOT / "bench" / "results" / name
        if not path.exists():
            parts.append(f"\n## {title}\n\n(not measured: `bench/results/{name}` is missing)\n")
            continue
        body = path.read_text().strip()
        if body.startswith("#"):
            body = body.split("\n", 1)[1].strip() if "\n" in body else ""
        # the file's own sections become subsections of this one
        body = "\n".join(
            "#" + line if line.startswith("## ") else line for line in body.splitlines()
        )
        parts.append(f"\n## {title}\n\n{body}\n")
    (ROOT / "BENCHMARKS.md").write_text("".join(parts))


if __name__ == "__main__":
    main()
