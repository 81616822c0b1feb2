"""`python -m benchmarks` (= `radretrieve bench all`): run the whole suite, or some of it.

    python -m benchmarks --quick                 # small sizes, minutes on a laptop CPU
    python -m benchmarks --only search --only encode_throughput
    python -m benchmarks --list                  # what would run, and what would be skipped and why

Writes benchmarks/results/NAME.json per benchmark, suite.json, SUMMARY.md, suite.png and logs/NAME.log.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common import RESULTS, machine
from benchmarks.suite import SPECS, SuiteContext, command, missing_requirement, module_source, run_suite, select
from benchmarks.summary import write_outputs


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _list(ctx: SuiteContext, names: list[str] | None) -> None:
    for spec in select(SPECS, names):
        source = module_source(ctx, spec.name)
        missing = missing_requirement(spec)
        if source is None:
            state = "skip: not written yet"
        elif missing:
            state = f"skip: needs {missing}"
        else:
            state = "python " + " ".join(command(spec, ctx, source))
        print(f"{spec.name:<20} {state}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes (CPU-friendly)")
    ap.add_argument("--only", action="append", metavar="NAME", help="run just this benchmark (repeatable)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any benchmark failed or timed out")
    args = ap.parse_args(argv)
    ctx = SuiteContext(results=args.results.resolve(), quick=args.quick)
    try:
        specs = select(SPECS, args.only)
    except ValueError as exc:
        ap.error(str(exc))
    if args.list:
        _list(ctx, args.only)
        return 0
    entries = run_suite(specs, ctx, log=_log)
    paths = write_outputs(entries, ctx.results, machine(), args.quick)
    print(paths["markdown"].read_text(encoding="utf-8"), end="")
    _log("[suite] wrote " + ", ".join(str(p) for p in paths.values()))
    bad = [e.name for e in entries if e.status in ("failed", "timeout")]
    return 1 if bad and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
