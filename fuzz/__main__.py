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
    sub.add_parser("list", help="list the targets")
    args = parser.parse_args(argv)
    command = "python -m fuzz " + shlex.join(argv)

    if args.command == "list":
        for target in TARGETS.values():
            print(f"{target.name:16} {target.what}")
        return 0
    if args.command == "run":
        from fuzz.runner import markdown, run_target, write_report

        results = []
        for name in args.target or list(TARGETS):
            result = run_target(name, args.out, seconds=args.seconds, runs=args.runs)
            results.append(result)
            print(f"{name:16} {result.executions:>9} execs  {len(result.crashes)} crashes",
                  file=sys.stderr, flush=True)
        write_report(results, args.out, command)
        print(markdown(results, command))
        return 1 if any(r.crashes for r in results) else 0
    from fuzz.corpora import CORPORA, corpus_markdown, run_corpus, write_corpus_report

    corpus_results = []
    for name in CORPORA:
        result = run_corpus(name, stride=args.stride)
        corpus_results.append(result)
        print(f"{name:16} tried {result.tried:>7}  accepted {result.accepted}",
              file=sys.stderr, flush=True)
    write_corpus_report(corpus_results, args.out, command)
    print(corpus_markdown(corpus_results, command))
    return 1 if any(r.accepted for r in corpus_results) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
