"""The benchmark suite: every benchmark module in its own process, failures recorded, never fatal.

Each benchmark is a module ``benchmarks/NAME.py`` run as ``python -m benchmarks.NAME [args]`` that writes
``RESULTS/NAME.json`` (`benchmarks.common.write_json`). Conventions the suite relies on:

- ``--out FILE``: where to write the JSON. Passed when the module's source declares ``--out``;
  otherwise the module's default (``benchmarks/results/NAME.json``) is read back.
- ``--quick``: small sizes. Passed when the module declares it, else the spec's ``quick_args`` are used.

A missing module (not written yet) or a missing dependency is *skipped* with the reason; a non-zero exit,
a timeout or a missing/unreadable JSON is *failed* with the reason and the log kept in ``RESULTS/logs/``.
The suite itself exits 0 unless ``--strict`` and something failed (benchmarks never pass/fail on time).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "failed", "timeout", "skipped"]
BENCH_DIR = Path(__file__).resolve().parent
LOG_TAIL = 4000  # characters of a failed benchmark's output kept in suite.json


@dataclass(frozen=True)
class BenchSpec:
    """One benchmark of the suite."""

    name: str  # module benchmarks/NAME.py; its JSON is RESULTS/NAME.json
    what: str  # one line for the summary table
    args: tuple[str, ...] = ()  # extra arguments in a full run
    quick_args: tuple[str, ...] = ()  # extra arguments under --quick when the module has no --quick flag
    requires: tuple[str, ...] = ()  # importable modules it needs (skipped with a reason when absent)
    timeout_s: float = 1800.0  # full run limit
    quick_timeout_s: float = 300.0  # --quick run limit


SPECS: tuple[BenchSpec, ...] = (
    BenchSpec(
        "encode_throughput",
        "encoder images/s and volumes/s (32 slices)",
        quick_args=("--models", "radclip-tiny", "--repeats", "1"),
    ),
    BenchSpec("index_throughput", "bulk indexing items/s, and its ratio to encoding alone"),
    BenchSpec(
        "read_throughput",
        "reader slices/s per format, one worker",
        quick_args=("--studies", "24", "--limit", "8", "--repeat", "1"),
    ),
    BenchSpec(
        "search",
        "search QPS and recall@10 against exact search",
        args=("--sizes", "100000"),
        quick_args=("--sizes", "20000", "--queries", "200", "--single", "50"),
    ),
    BenchSpec(
        "train_quality",
        "retrieval precision after training on synthetic data and VQA-RAD",
        quick_args=("--studies", "120", "--epochs-2d", "2", "--epochs-3d", "10", "--vqa-epochs", "3"),
        timeout_s=3600.0,
        quick_timeout_s=600.0,
    ),
    BenchSpec("retrieval_vqa_rad", "bench retrieval on VQA-RAD, untrained radclip-tiny (chance baseline)"),
    BenchSpec(
        "serve_load",
        "`radretrieve serve` under 16 concurrent clients: req/s, p50/p99, errors (localhost)",
        requires=("fastapi", "uvicorn"),
    ),
    BenchSpec(
        "pooling_ablation",
        "attention vs mean vs max pooling; 8/16/32/64 slices",
        requires=("radretrieve.training",),
        quick_timeout_s=600.0,
    ),
)


@dataclass(frozen=True)
class SuiteEntry:
    """What happened to one benchmark."""

    name: str  # benchmark name
    what: str  # one-line description
    status: Status  # ok | failed | timeout | skipped
    reason: str  # why it was skipped or failed ("" when ok)
    seconds: float  # wall time of its process (0 when skipped)
    command: tuple[str, ...] = ()  # argv after `python -m` (empty when skipped)
    result: str | None = None  # its JSON file name inside RESULTS, when it wrote one
    log: str | None = None  # its log file inside RESULTS, when it ran
    output_tail: str = ""  # end of stdout + stderr of a failed run
    payload: dict[str, Any] = field(default_factory=dict)  # its JSON, for the summary (not written back)


@dataclass(frozen=True)
class SuiteContext:
    """Where and how the suite runs."""

    results: Path  # folder for NAME.json, logs/, suite.json, SUMMARY.md, suite.png
    quick: bool  # small sizes
    python: str = sys.executable  # interpreter for the benchmark processes
    package: str = "benchmarks"  # package holding the modules
    package_dir: Path = BENCH_DIR  # its folder; its parent is the working directory of each process


def module_source(ctx: SuiteContext, name: str) -> str | None:
    path = ctx.package_dir / f"{name}.py"
    return path.read_text(encoding="utf-8") if path.is_file() else None


def missing_requirement(spec: BenchSpec) -> str | None:
    for module in spec.requires:
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except ImportError:  # a parent package is missing
            return module
    return None


def command(spec: BenchSpec, ctx: SuiteContext, source: str) -> list[str]:
    """argv for one benchmark: module, size arguments, and --out when the module takes it."""
    argv = ["-m", f"{ctx.package}.{spec.name}"]
    if ctx.quick:
        argv += ["--quick"] if '"--quick"' in source else list(spec.quick_args)
    else:
        argv += list(spec.args)
    if '"--out"' in source:
        argv += ["--out", str(ctx.results / f"{spec.name}.json")]
    return argv


def _skip(spec: BenchSpec, reason: str) -> SuiteEntry:
    return SuiteEntry(spec.name, spec.what, "skipped", reason, 0.0)


def _tail(text: str) -> str:
    return text[-LOG_TAIL:]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def run_one(spec: BenchSpec, ctx: SuiteContext) -> SuiteEntry:
    """Run one benchmark in its own process and classify the outcome."""
    source = module_source(ctx, spec.name)
    if source is None:
        return _skip(spec, f"{ctx.package}/{spec.name}.py is not written yet")
    missing = missing_requirement(spec)
    if missing:
        return _skip(spec, f"needs {missing}, which is not importable")
    argv = command(spec, ctx, source)
    json_path = ctx.results / f"{spec.name}.json"
    log_path = ctx.results / "logs" / f"{spec.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    timeout = spec.quick_timeout_s if ctx.quick else spec.timeout_s
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    start = time.time()
    try:
        proc = subprocess.run(
            [ctx.python, *argv], cwd=ctx.package_dir.parent, env=env, capture_output=True, text=True, timeout=timeout
        )
        output, code = (proc.stdout or "") + (proc.stderr or ""), proc.returncode
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        code = None
    seconds = time.time() - start
    log_path.write_text(" ".join(["python", *argv]) + "\n\n" + output, encoding="utf-8")
    base = {"seconds": round(seconds, 2), "command": tuple(argv), "log": str(log_path.relative_to(ctx.results))}
    if code is None:
        return SuiteEntry(
            spec.name, spec.what, "timeout", f"still running after {timeout:.0f} s", **base, output_tail=_tail(output)
        )
    if code != 0:
        return SuiteEntry(
            spec.name, spec.what, "failed", f"exit code {code}: {_last_line(output)}", **base, output_tail=_tail(output)
        )
    payload, problem = _read_result(json_path, start)
    if problem:
        return SuiteEntry(spec.name, spec.what, "failed", problem, **base, output_tail=_tail(output))
    return SuiteEntry(spec.name, spec.what, "ok", "", **base, result=json_path.name, payload=payload)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _read_result(path: Path, started: float) -> tuple[dict[str, Any], str]:
    """The benchmark's JSON, or a reason it is missing, stale (older than this run) or unreadable."""
    if not path.is_file():
        return {}, f"exited 0 but wrote no {path.name}"
    if path.stat().st_mtime < started - 1.0:  # 1 s slack for coarse file-system timestamps
        return {}, f"exited 0 but {path.name} is from an earlier run"
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        return {}, f"{path.name} is not valid JSON ({exc})"
    return (payload, "") if isinstance(payload, dict) else ({}, f"{path.name} is not a JSON object")


def select(specs: Sequence[BenchSpec], only: Sequence[str] | None) -> list[BenchSpec]:
    """The specs named in ``only`` (all when empty); an unknown name is an error listing the known ones."""
    if not only:
        return list(specs)
    known = {s.name: s for s in specs}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; known: {', '.join(known)}")
    return [known[n] for n in only]


def run_suite(specs: Sequence[BenchSpec], ctx: SuiteContext, log: Any = None) -> list[SuiteEntry]:
    """Run ``specs`` one after another (they time things: never in parallel). ``log(line)`` reports progress."""
    ctx.results.mkdir(parents=True, exist_ok=True)
    entries = []
    for spec in specs:
        if log:
            log(f"[suite] {spec.name} ...")
        entry = run_one(spec, ctx)
        if log:
            log(f"[suite] {spec.name}: {entry.status} ({entry.seconds:.1f} s) {entry.reason}".rstrip())
        entries.append(entry)
    return entries


def entry_dict(entry: SuiteEntry) -> dict[str, Any]:
    """JSON form of an entry (without the benchmark's own payload, which has its own file)."""
    data = asdict(entry)
    data.pop("payload")
    data["command"] = list(entry.command)
    return data


__all__ = [
    "BenchSpec",
    "SPECS",
    "SuiteContext",
    "SuiteEntry",
    "command",
    "entry_dict",
    "missing_requirement",
    "module_source",
    "run_one",
    "run_suite",
    "select",
]
