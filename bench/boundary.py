"""The measured boundary (issue #15): image size, cold build and in-image tokens/s, before/after.

    sudo .venv/bin/python bench/boundary.py --before OLD.eif --after NEW.eif \\
        --cold-before OLD-BUILD.log --cold-after NEW-BUILD.log --blas-debs DEBS/ --write

* **size**: the EIF, its ramdisks, ``/app``, the Debian packages in the image's dpkg
  database and the ELF files, read from both images;
* **cold build**: the ``enclave-audit build --json`` output of a build with an empty
  ``ENCLAVE_AUDIT_CACHE`` under ``/usr/bin/time -f "wall=%e ..."`` (the logs name the
  command), its wall time and per-step timings;
* **in-image tokens/s**: SmolLM2-135M-Instruct (the pinned GGUF) run by each image's own
  ``python3`` and NumPy in a chroot with the image's ``/env`` (plain generation, no
  enclave path), the two images alternating round by round; medians;
* **BLAS** (``--blas-debs``): the *before* image still carries dpkg, so its root is
  copied, the given .debs (``libopenblas0-pthread``, ``libblis4-pthread``) installed with
  its own dpkg, and the same measurement run with NumPy on each ``libblas.so.3``
  alternative, alternating.

Needs root (chroot). Writes ``bench/results/boundary.md`` with ``--write``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from builder.eif import EifReader
from builder.initramfs import EntryKind, iter_members
from reference_enclave.model.smollm2 import smollm2_gguf_path
from reference_enclave.runtime.launch import unpack_image

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "boundary.md"
RAW = RESULTS.with_suffix(".json")
PROMPTS = (
    "Write one sentence about the Eiffel Tower.",
    "What is the capital of France?",
    "Name three colours.",
)
_IN_IMAGE = """
import json, statistics, sys, time
try:
    from enclave_runtime.model.chat import ChatModel
except ImportError:  # images built before the in-enclave package existed
    from reference_enclave.model.chat import ChatModel
tokens, prompts = int(sys.argv[1]), sys.argv[2:]
t0 = time.perf_counter()
chat = ChatModel.from_gguf(open("/tmp/model.gguf", "rb").read(), what="model")
load = time.perf_counter() - t0
decode, e2e = [], []
for prompt in prompts:
    t0 = time.perf_counter()
    g = chat.generate(prompt, max_new_tokens=tokens)
    e2e.append(len(g.token_ids) / (time.perf_counter() - t0))
    decode.append(g.tokens_per_second)
print(json.dumps({"load": load, "decode": statistics.median(decode),
                  "e2e": statistics.median(e2e)}))
"""
BLAS_DIR = "usr/lib/x86_64-linux-gnu"
#: (name, libblas.so.3 alternative, liblapack.so.3 alternative, extra environment)
BLAS: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    ("reference BLAS", "blas", "lapack", {}),
    ("OpenBLAS", "openblas-pthread", "openblas-pthread", {}),
    ("OpenBLAS, 1 thread", "openblas-pthread", "openblas-pthread", {"OPENBLAS_NUM_THREADS": "1"}),
    ("BLIS", "blis-pthread", "lapack", {}),
)


# --- size -------------------------------------------------------------------------


def image_sizes(eif: Path, work: Path) -> dict[str, float]:
    with EifReader.open(eif) as reader:
        ramdisks = [s.size for s in reader.ramdisks]
        app = work / f"{eif.stem}-app.cpio"
        reader.copy_section(reader.ramdisks[-1], app)
    files = app_files = app_bytes = elf = 0
    packages = 0
    with open(app, "rb") as fh:
        for m in iter_members(fh):
            if m.kind is not EntryKind.FILE or m.data is None:
                continue
            files += 1
            head = m.data.read(4)
            elf += head == b"\x7fELF"
            if m.name.startswith("rootfs/app/"):
                app_files += 1
                app_bytes += m.size
            if m.name == "rootfs/var/lib/dpkg/status":
                status = head + m.data.read()
                packages = sum(line.startswith(b"Package: ") for line in status.split(b"\n"))
    app.unlink()
    return {
        "eif_mb": eif.stat().st_size / 1e6,
        "bootstrap_mb": ramdisks[0] / 1e6,
        "application_mb": ramdisks[-1] / 1e6,
        "files": files,
        "elf": elf,
        "app_files": app_files,
        "app_kb": app_bytes / 1e3,
        "packages": packages,
    }


# --- cold build ---------------------------------------------------------------------


def cold_build(log: Path) -> dict[str, object]:
    """Wall time and per-step timings from ``/usr/bin/time`` + ``build --json`` output."""
    text = log.read_text()
    wall = re.search(r"wall=([\d.]+)", text)
    start, end = text.find("{"), text.rfind("}")
    doc = json.loads(text[start : end + 1]) if 0 <= start < end else {}
    if wall is None or "timings" not in doc:
        raise SystemExit(f"{log}: no '/usr/bin/time' wall line or build JSON")
    return {"wall": float(wall.group(1)), "timings": doc["timings"], "pcrs": doc["Measurements"]}


# --- tokens/s -------------------------------------------------------------------------


def _run(rootfs: Path, env: dict[str, str], tokens: int) -> dict[str, float]:
    done = subprocess.run(
        ["chroot", str(rootfs), "/usr/bin/python3", "-c", _IN_IMAGE, str(tokens), *PROMPTS],
        env=env, capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout)
    return result


def _prepare(eif: Path, dest: Path, gguf: Path) -> tuple[Path, dict[str, str]]:
    unpacked = unpack_image(eif, dest)
    (unpacked.rootfs / "tmp").mkdir(exist_ok=True)
    shutil.copyfile(gguf, unpacked.rootfs / "tmp" / "model.gguf")
    return unpacked.rootfs, dict(unpacked.env)


def tokens_per_second(
    images: dict[str, Path], work: Path, gguf: Path, rounds: int, tokens: int
) -> dict[str, list[dict[str, float]]]:
    prepared = {name: _prepare(eif, work / name, gguf) for name, eif in images.items()}
    out: dict[str, list[dict[str, float]]] = {name: [] for name in images}
    for _ in range(rounds):
        for name, (rootfs, env) in prepared.items():
            out[name].append(_run(rootfs, env, tokens))
    return out


def _chroot(rootfs: Path, *argv: str) -> None:
    subprocess.run(
        ["chroot", str(rootfs), *argv],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip


def blas_comparison(
    before: Path, debs: Path, work: Path, gguf: Path, rounds: int, tokens: int
) -> dict[str, list[dict[str, float]]]:
    rootfs, env = _prepare(before, work / "blas", gguf)
    pool = rootfs / "tmp" / "debs"
    pool.mkdir()
    names = []
    for deb in sorted(debs.glob("*.deb")):
        shutil.copyfile(deb, pool / deb.name)
        names.append(f"/tmp/debs/{deb.name}")
    _chroot(rootfs, "dpkg", "--install", *names)
    out: dict[str, list[dict[str, float]]] = {name: [] for name, _, _, _ in BLAS}
    for _ in range(rounds):
        for name, blas, lapack, extra in BLAS:
            for link, lib in (("libblas.so.3", blas), ("liblapack.so.3", lapack)):
                _chroot(
                    rootfs, "update-alternatives", "--quiet", "--set",
                    f"{link}-x86_64-linux-gnu", f"/{BLAS_DIR}/{lib}/{link}",
                )  # fmt: skip
            out[name].append(_run(rootfs, {**env, **extra}, tokens))
    return out


# --- report ----------------------------------------------------------------------------


def _median(runs: Sequence[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def render(args: argparse.Namespace, doc: dict[str, object]) -> str:
    sizes: dict[str, dict[str, float]] = doc["sizes"]  # type: ignore[assignment]
    b, a = sizes["before"], sizes["after"]
    saved = (b["eif_mb"] - a["eif_mb"]) / b["eif_mb"] * 100
    lines = [
        "# The measured boundary (issue #15)",
        "",
        "Command: `sudo .venv/bin/python bench/boundary.py --before BEFORE.eif --after"
        " AFTER.eif --cold-before BEFORE-BUILD.log --cold-after AFTER-BUILD.log"
        f" --blas-debs DEBS/ --rounds {args.rounds} --tokens {args.tokens} --write`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other jobs (load"
        f" average {doc['load_start']:.1f} at the start, {doc['load_end']:.1f} at the end),"
        f" Python {platform.python_version()}.",
        "",
        "*Before*: `main` at the start of issue 15 (`[app] packages = [reference_enclave,"
        " enclave_audit]`, Debian's essential set with shells, login tools, perl and dpkg,"
        " reference BLAS). *After*: this tree (`[app] packages = [enclave_runtime]`,"
        " shells, login tools, perl, dpkg and the libraries only they used purged, BLIS).",
        "",
        "## Image size",
        "",
        "| | before | after | change |",
        "| --- | ---: | ---: | ---: |",
        f"| EIF (MB) | {b['eif_mb']:.1f} | {a['eif_mb']:.1f} | **-{saved:.1f} %** |",
        f"| application ramdisk (MB) | {b['application_mb']:.1f} | {a['application_mb']:.1f} |"
        f" -{(b['application_mb'] - a['application_mb']) / b['application_mb'] * 100:.1f} % |",
        f"| bootstrap ramdisk (MB) | {b['bootstrap_mb']:.2f} | {a['bootstrap_mb']:.2f} | |",
        f"| files in the application ramdisk | {b['files']:.0f} | {a['files']:.0f} | |",
        f"| ELF files | {b['elf']:.0f} | {a['elf']:.0f} | |",
        f"| `/app`: files / kB | {b['app_files']:.0f} / {b['app_kb']:.0f} |"
        f" {a['app_files']:.0f} / {a['app_kb']:.0f} | |",
        f"| Debian packages (dpkg status) | {b['packages']:.0f} | {a['packages']:.0f} | |",
        "",
        f"Goal (EIF at least 40 % smaller than 204.6 MB): "
        f"{'met' if a['eif_mb'] <= 204.6 * 0.6 else 'NOT met'} ({saved:.1f} %).",
        "",
    ]
    cold: dict[str, dict[str, object]] = doc.get("cold", {})  # type: ignore[assignment]
    if cold:
        lines += [
            "## Cold build (empty `ENCLAVE_AUDIT_CACHE`)",
            "",
            "Command, for each tree (a `git archive` snapshot; the epoch given explicitly):",
            "",
            "    ENCLAVE_AUDIT_CACHE=$(mktemp -d) /usr/bin/time -f 'wall=%e user=%U sys=%S'"
            " \\\n        .venv/bin/enclave-audit build -o OUT --source-date-epoch EPOCH --json",
            "",
            "| step (s) | before | after |",
            "| --- | ---: | ---: |",
        ]
        tb: dict[str, float] = cold["before"]["timings"]  # type: ignore[index]
        ta: dict[str, float] = cold["after"]["timings"]  # type: ignore[index]
        for step in tb:
            lines.append(f"| {step} | {tb[step]:.1f} | {ta.get(step, 0.0):.1f} |")
        wb, wa = cold["before"]["wall"], cold["after"]["wall"]
        nk_b = wb - tb.get("kernel", 0.0)  # type: ignore[operator]
        nk_a = wa - ta.get("kernel", 0.0)  # type: ignore[operator]
        lines += [
            f"| **whole build (wall)** | **{wb:.0f}** | **{wa:.0f}** |",
            f"| whole build without the kernel step | {nk_b:.0f} | {nk_a:.0f} |",
            "",
            "The kernel (same package, same config, so PCR1 is unchanged) dominates and its"
            " compile time follows the machine's load; the rest is the rootfs (mmdebstrap from"
            " the local repository of the lock, then the purge) and the inputs' download.",
            "",
        ]
    tps: dict[str, list[dict[str, float]]] = doc["tokens"]  # type: ignore[assignment]
    bd, ad = _median(tps["before"], "decode"), _median(tps["after"], "decode")
    be, ae = _median(tps["before"], "e2e"), _median(tps["after"], "e2e")
    lines += [
        "## In-image tokens/s",
        "",
        f"SmolLM2-135M-Instruct (Q4_1 GGUF), greedy, {args.tokens} new tokens for each of"
        f" {len(PROMPTS)} prompts, medians over {args.rounds} rounds; each image's own"
        " python3 and NumPy in a chroot with its `/env` (plain generation), the two images"
        " alternating.",
        "",
        "| | before | after | after / before |",
        "| --- | ---: | ---: | ---: |",
        f"| decode tokens/s | {bd:.2f} | {ad:.2f} | **{ad / bd:.2f}x** |",
        f"| end-to-end tokens/s (prefill included) | {be:.2f} | {ae:.2f} | {ae / be:.2f}x |",
        f"| model load (s) | {_median(tps['before'], 'load'):.1f} |"
        f" {_median(tps['after'], 'load'):.1f} | |",
        "",
    ]
    blas: dict[str, list[dict[str, float]]] = doc.get("blas", {})  # type: ignore[assignment]
    if blas:
        ref_d, ref_e = (
            _median(blas["reference BLAS"], "decode"),
            _median(blas["reference BLAS"], "e2e"),
        )
        lines += [
            "## BLAS for NumPy in the image",
            "",
            "The *before* image's root with `libopenblas0-pthread` 0.3.21+ds-4 and"
            " `libblis4-pthread` 0.9.0-1 installed by its own dpkg, NumPy switched between"
            " the `libblas.so.3` alternatives (LAPACK: OpenBLAS's own, else Debian's reference"
            " `liblapack3`); same model and prompts, alternating.",
            "",
            "| BLAS | installed size | decode tokens/s | vs reference | end-to-end tokens/s |"
            " vs reference |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        sizes_mb = {
            "reference BLAS": "0.5 + 7.2 MB",
            "OpenBLAS": "43.3 MB",
            "OpenBLAS, 1 thread": "43.3 MB",
            "BLIS": "24.2 + 7.2 MB",
        }
        medians = {
            name: (_median(runs, "decode"), _median(runs, "e2e")) for name, runs in blas.items()
        }
        for name, (d, e) in medians.items():
            lines.append(
                f"| {name} | {sizes_mb[name]} | {d:.2f} | {d / ref_d:.2f}x | {e:.2f} |"
                f" {e / ref_e:.2f}x |"
            )
        (od, oe), (bd_, be_) = medians["OpenBLAS"], medians["BLIS"]
        faster = f"{od / ref_d:.2f}x decode, {oe / ref_e:.2f}x end to end"
        blis = f"{bd_ / od:.2f}x OpenBLAS's decode rate and {be_ / oe:.2f}x its end-to-end rate"
        lines += [
            "",
            f"OpenBLAS makes inference in the image faster than the reference BLAS ({faster}).",
            f"BLIS gives {blis} (prefill is matrix-matrix work) and is 12 MB smaller with the",
            "reference LAPACK, which NumPy's linear algebra module needs at import; the image",
            "uses BLIS (`libblis4-pthread` in `reference_enclave/enclave.toml`). Each library",
            "runs with its default threading, as in the image (no BLAS variable in `/env`):",
            "OpenBLAS's pthread build uses every CPU, BLIS one thread; the one-thread OpenBLAS",
            "row is for comparison.",
            "",
        ]
    lines += ["Raw runs: `bench/results/boundary.json`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--cold-before", type=Path)
    parser.add_argument("--cold-after", type=Path)
    parser.add_argument("--blas-debs", type=Path, help="directory of BLAS .debs to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    parser.add_argument(
        "--render", type=Path, metavar="RAW.json", help="only re-render saved raw runs"
    )
    args = parser.parse_args()
    if args.render is not None:
        text = render(args, json.loads(args.render.read_text()))
        print(text)
        if args.write:
            RESULTS.write_text(text)
        return
    if os.geteuid() != 0:
        raise SystemExit("the in-image runs use chroot: run as root")
    gguf = smollm2_gguf_path()
    doc: dict[str, object] = {"load_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-boundary-") as tmp:
        work = Path(tmp)
        doc["sizes"] = {
            "before": image_sizes(args.before, work),
            "after": image_sizes(args.after, work),
        }
        if args.cold_before and args.cold_after:
            doc["cold"] = {"before": cold_build(args.cold_before),
                           "after": cold_build(args.cold_after)}  # fmt: skip
        images = {"before": args.before, "after": args.after}
        doc["tokens"] = tokens_per_second(images, work, gguf, args.rounds, args.tokens)
        if args.blas_debs:
            doc["blas"] = blas_comparison(
                args.before, args.blas_debs, work, gguf, args.rounds, args.tokens
            )
    doc["load_end"] = os.getloadavg()[0]
    if args.write:  # the raw runs first: a rendering problem must not lose a measurement
        RAW.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    text = render(args, doc)
    print(text)
    if args.write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
