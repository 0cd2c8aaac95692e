"""``python -m fuzz run|corpora|list``: the long fuzzing and corpus runs behind RELIABILITY.md.

\b
Examples:
  python -m fuzz run --seconds 60                 # every target, 60 s each
  python -m fuzz run --target cbor --runs 100000  # one target, fixed executions
  python -m fuzz corpora                          # every tampered-input corpus, every byte
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from fuzz.targets import TARGETS


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="fuzz targets under atheris for a fixed budget")
    run.add_argument("--target", action="append", choices=sorted(TARGETS), help="repeatable")
    run.add_argument("--seconds", type=float, default=60.0, help="budget per target")
    run.add_argument("--runs", type=int, default=None, help="at most this many executions")
    run.add_argument("--out", type=Path, default=Path("out/fuzz"))
    corpora = sub.add_parser("corpora", help="run the adversarial corpora")
    corpora.add_argument("--stride", type=int, default=1, help="flip every Nth byte (1 = all)")
    corpora.add_argument("--out", type=Path, default=Path("out/fuzz"))
    faults = sub.add_parser("faults", help="run the kill-and-restart fault scenarios")
    faults.add_argument("--runs", type=int, default=20, help="kills per scenario")
    faults.add_argument("--scenario", action="append", help="repeatable (default: all)")
    faults.add_argument("--out", type=Path, default=Path("out/fuzz"))
    sub.add_parser("list", help="list the targets")
    args = parser.parse_args(argv)
    command = "python -m fuzz " + shlex.join(argv)

    if args.command == "list":
        for target in TARGETS.values():
            print(f"{target.name:16} {target.what}")
        return 0
    if args.command == "faults":
        return _faults(args.scenario, args.runs, args.out, command)
    if args.command == "run":
        from fuzz.runner import markdown, run_target, write_report

        results = []
        for name in args.target or list(TARGETS):
            result = run_target(name, args.out, seconds=args.seconds, runs=args.runs)
            results.append(result)
            print(
                f"{name:16} {result.executions:>9} execs  {len(result.crashes)} crashes",
                file=sys.stderr,
                flush=True,
            )
        write_report(results, args.out, command)
        print(markdown(results, command))
        return 1 if any(r.crashes for r in results) else 0
    from fuzz.corpora import (
        CORPORA,
        CorpusResult,
        corpus_markdown,
        run_corpus,
        write_corpus_report,
    )

    corpus_results: list[CorpusResult] = []
    for name in CORPORA:
        outcome = run_corpus(name, stride=args.stride)
        corpus_results.append(outcome)
        print(
            f"{name:16} tried {outcome.tried:>7}  accepted {outcome.accepted}",
            file=sys.stderr,
            flush=True,
        )
    write_corpus_report(corpus_results, args.out, command)
    print(corpus_markdown(corpus_results, command))
    return 1 if any(r.accepted for r in corpus_results) else 0


def _faults(names: list[str] | None, runs: int, out: Path, command: str) -> int:
    import tempfile
    from dataclasses import asdict

    from enclave_audit.fsutil import write_json_atomic, write_text_atomic
    from fuzz.faults import SCENARIOS

    results = []
    for name in names or list(SCENARIOS):
        with tempfile.TemporaryDirectory(prefix=f"fault-{name}-") as folder:
            result = SCENARIOS[name](Path(folder), runs=runs)
        results.append(result)
        print(
            f"{name:14} runs {result.runs}  acknowledged {result.acknowledged}  lost "
            f"{result.lost}  unclear {len(result.unclear_errors)}",
            file=sys.stderr,
            flush=True,
        )
    lines = [
        f"Command: `{command}`",
        "",
        "| scenario | runs (kills) | acknowledged | data lost | client errors (all clear) |"
        " seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        clear = "yes" if not r.unclear_errors else f"NO ({len(r.unclear_errors)})"
        lines.append(
            f"| {r.scenario} | {r.runs} | {r.acknowledged} | {r.lost} | "
            f"{r.client_errors} ({clear}) | {r.seconds:g} |"
        )
    for r in results:
        lines += [f"\n{r.scenario}: {note}" for note in r.notes]
        lines += [f"\n{r.scenario}: unclear error: {e}" for e in r.unclear_errors[:5]]
    write_json_atomic(
        out / "faults.json",
        {
            "schema": "enclave-audit/fault-results/v1",
            "command": command,
            "scenarios": [asdict(r) for r in results],
        },
    )
    text = "\n".join(lines) + "\n"
    write_text_atomic(out / "faults.md", text)
    print(text)
    return 1 if any(r.lost or r.unclear_errors for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
