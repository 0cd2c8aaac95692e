"""Benchmark: fetching every pinned input into an empty store, from the mirrors vs a set.

The part of a cold build that the input set replaces, without the kernel compile that
dominates (and makes noisy) the whole-build comparison of ``inputs_cold_build.py``: every
external input of the reference spec (kernel source, locked .debs, wheels, model) is
located and fetched, sha256-checked, into a new empty store, once from the spec's mirrors
and PyPI and once from an input set (a tar exported by ``enclave-audit inputs export``),
each run alternating, best of N.

Usage:  .venv/bin/python bench/inputs_fetch.py --set /var/tmp/bench-inputs/inputs.tar
        [--runs 3] [--write]   (appends its section to bench/results/inputs.md)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from builder.inputs.inputset import InputSet
from builder.inputs.refs import make_resolver, spec_inputs
from builder.inputs.store import InputStore
from builder.reference import REFERENCE_SPEC
from builder.spec import load_spec

RESULTS = Path(__file__).resolve().parent / "results" / "inputs.md"
MARK = "## Fetching every pinned input into an empty store"


def _fetch(store_dir: Path, input_set: Path | None) -> tuple[float, int]:
    loaded = load_spec(REFERENCE_SPEC)
    sets = [InputSet(input_set)] if input_set else []
    resolver = make_resolver(loaded, input_sets=sets)
    resolver.store = InputStore(store_dir)
    refs = spec_inputs(loaded)
    started = time.perf_counter()
    resolver.locate(refs)
    size = sum(resolver.path(ref).stat().st_size for ref in refs)
    return time.perf_counter() - started, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", type=Path, required=True, help="an exported input set")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    mirrors: list[float] = []
    from_set: list[float] = []
    size = 0
    for _ in range(args.runs):
        for target, into in ((None, mirrors), (args.set, from_set)):
            tmp = Path(tempfile.mkdtemp(prefix="bench-store-", dir="/var/tmp"))
            try:
                seconds, size = _fetch(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            into.append(seconds)
    lines = [
        MARK,
        "",
        f"Command: `.venv/bin/python bench/inputs_fetch.py --set inputs.tar --runs {args.runs}"
        " --write`",
        "",
        f"{len(spec_inputs(load_spec(REFERENCE_SPEC)))} inputs, {size / 1e6:.1f} MB, fetched"
        " and sha256-checked into a new empty store; best of"
        f" {args.runs}, alternating:",
        "",
        f"- from the mirrors and PyPI: **{min(mirrors):.1f} s**"
        f" (runs {', '.join(f'{s:.1f}' for s in mirrors)})",
        f"- from the input set: **{min(from_set):.1f} s**"
        f" (runs {', '.join(f'{s:.1f}' for s in from_set)})"
        f" -> **{min(from_set) / min(mirrors):.2f}x** the mirrors' time",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        old = RESULTS.read_text() if RESULTS.exists() else ""
        old = old.split(MARK, 1)[0].rstrip() + "\n\n" if old else ""
        RESULTS.write_text(old + text)


if __name__ == "__main__":
    main()
