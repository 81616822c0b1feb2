"""Load benchmark of `radretrieve serve`: 16 concurrent clients, a bounded number of requests, localhost only.

Two out dirs, each served by a real `python -m radretrieve serve` process on a free 127.0.0.1 port:

* `index-100k`: 100k synthetic volume vectors in the real shard format, the manifest naming radclip-tiny with
  its real fingerprint (as `benchmarks/cold_start.py` builds it), so `similar` runs on a 100k-item IVF index
  and text search encodes with radclip-tiny's stored text tower. Its sources do not exist: no thumbnails.
* `archive`: a synthetic archive (DICOM CT series, NIfTI MR, radiographs) indexed with radclip-tiny, so
  thumbnails decode, window and encode real files: `thumbnail_cold` asks for every item once (each request
  reads its source), `thumbnail_cached` asks again at random (the server's PNG cache answers).

Per out dir, each phase sends a fixed number of requests of one kind (then a mixed phase) from --clients
threads, each with its own keep-alive connection, and records throughput, p50/p90/p99/max latency and errors
(any status but 200). The clients run on the same machine as the server, so they take CPU from it.

    python -m benchmarks.serve_load                  # 100k items, 16 clients
    python -m benchmarks.serve_load --quick          # 20k items, fewer requests

Writes benchmarks/results/serve_load.json. Numbers depend on the machine and its load: never pass/fail.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_json  # noqa: E402

HOST = "127.0.0.1"  # the only address this benchmark ever contacts
QUERIES = (
    "CT of the abdomen with a hypodense lesion",
    "chest radiograph, no focal lesion",
    "MR of the head, small hyperintense lesion",
    "axial CT of the head, hyperdense lesion in the left hemisphere",
    "thorax CT with a nodule in the right lung",
    "knee MRI",
    "abdomen radiograph",
    "normal chest CT",
)
P99_GOAL_MS = 200.0  # issue 16: `similar` on a 100k-item index on 2 cores


@dataclass(frozen=True)
class Phase:
    """One measured run: `requests` paths from `make`, sent by `clients` threads."""

    name: str  # similar | search | thumbnail_cold | thumbnail_cached | mixed
    requests: int  # how many requests in all
    make: Callable[[random.Random], str]  # a request path (with query string)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`python -m radretrieve serve --index OUT` on a free 127.0.0.1 port, its log in a file."""

    def __init__(self, out: Path, log: Path) -> None:
        import subprocess

        self.port = free_port()
        cmd = [sys.executable, "-m", "radretrieve", "serve", "--index", str(out), "--host", HOST]
        self._log = log.open("wb")
        self.proc = subprocess.Popen([*cmd, "--port", str(self.port)], cwd=ROOT, stdout=self._log, stderr=self._log)
        t0 = time.perf_counter()
        while self.get("/api/health")[0] != 200:
            if self.proc.poll() is not None or time.perf_counter() - t0 > 300:
                self.stop()
                raise SystemExit(f"server did not start; see {log}")
            time.sleep(0.2)
        self.start_s = time.perf_counter() - t0

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            conn.close()
            return response.status, body
        except OSError:
            return 0, b""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except Exception:  # noqa: BLE001 - a hung server is killed
                self.proc.kill()
        self._log.close()


def drive(port: int, phase: Phase, clients: int, max_seconds: float, seed: int) -> dict:
    """Send phase.requests requests from `clients` threads (each its own connection); latency stats."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    budget = iter(range(phase.requests))
    deadline = time.perf_counter() + max_seconds

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        while time.perf_counter() < deadline:
            with lock:
                if next(budget, None) is None:
                    break
            path = phase.make(rng)
            t0 = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=60)
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(ms)
                if status != 200:
                    errors[str(status)] = errors.get(str(status), 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return summarise(phase.name, latencies, errors, wall)


def summarise(name: str, latencies: list[float], errors: dict[str, int], wall: float) -> dict:
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))], 1) if lat else 0.0

    return {
        "phase": name,
        "requests": len(lat),
        "errors": sum(errors.values()),
        "errors_by_status": errors,
        "seconds": round(wall, 2),
        "requests_per_s": round(len(lat) / wall, 1) if wall else 0.0,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(lat[-1], 1) if lat else 0.0,
        "mean_ms": round(statistics.fmean(lat), 1) if lat else 0.0,
    }


def search_path(rng: random.Random) -> str:
    return "/api/search?" + urlencode({"q": rng.choice(QUERIES), "k": 10})


def catalog_ids(out: Path) -> tuple[list[str], list[int]]:
    """Study keys and item ids of the items view (what clients ask for)."""
    from radretrieve.outdir.catalog import Catalog

    cat = Catalog(out)
    try:
        studies = [r[0] for r in cat.sql("SELECT DISTINCT study_key FROM items ORDER BY 1")]
        ids = [int(r[0]) for r in cat.sql("SELECT item_id FROM items ORDER BY 1")]
    finally:
        cat.close()
    return studies, ids


def phases_for(out: Path, n: int, thumbnails: bool) -> list[Phase]:
    studies, ids = catalog_ids(out)

    def similar(rng: random.Random) -> str:
        return "/api/similar?" + urlencode({"study": rng.choice(studies), "k": 10})

    def thumb(rng: random.Random) -> str:
        return f"/api/thumbnail/{rng.choice(ids)}.png"

    each_once = iter(ids)
    lock = threading.Lock()

    def thumb_cold(_: random.Random) -> str:  # every item once: each request reads and draws its source
        with lock:
            return f"/api/thumbnail/{next(each_once)}.png"

    kinds = [search_path, similar] + ([thumb] if thumbnails else [])

    def mixed(rng: random.Random) -> str:
        return rng.choice(kinds)(rng)

    phases = [Phase("similar", n, similar), Phase("search", n, search_path)]
    if thumbnails:
        phases += [Phase("thumbnail_cold", len(ids), thumb_cold), Phase("thumbnail_cached", n, thumb)]
    return [*phases, Phase("mixed", n, mixed)]


def build_100k(out: Path, items: int) -> dict:
    from benchmarks.cold_start import make_out_dir

    t0 = time.perf_counter()
    info = make_out_dir(out, items)
    return info | {"setup_s": round(time.perf_counter() - t0, 1)}


def build_archive(out: Path, studies: int) -> dict:
    from indexers.build import build_indexes
    from pipelines.job import IndexOptions, index_archive
    from radretrieve import load_model
    from radretrieve.synth import synthesize

    t0 = time.perf_counter()
    arch = out.parent / "archive-src"
    synthesize(arch, studies=studies, seed=0)
    index_archive(arch, out, load_model("radclip-tiny", device="cpu"), IndexOptions(workers=0, progress=False))
    build_indexes(out)
    return {"studies": studies, "setup_s": round(time.perf_counter() - t0, 1)}


def run_out_dir(name: str, out: Path, n: int, args: argparse.Namespace, thumbnails: bool) -> dict:
    server = ServerProcess(out, out.parent / f"{name}-server.log")
    try:
        health = json.loads(server.get("/api/health")[1])
        phases = phases_for(out, n, thumbnails)
        for warm in phases[:2]:  # warm the page cache and the duckdb cursors of the server's threads
            drive(server.port, Phase(warm.name, 4 * args.clients, warm.make), args.clients, 60, seed=99)
        results = [drive(server.port, p, args.clients, args.max_seconds, seed=i) for i, p in enumerate(phases)]
        after = json.loads(server.get("/api/health")[1])
    finally:
        server.stop()
    for r in results:
        print(
            f"{name:8s} {r['phase']:16s} {r['requests']:5d} req {r['requests_per_s']:7.1f}/s  p50 {r['p50_ms']:6.1f}"
            f"  p99 {r['p99_ms']:6.1f}  max {r['max_ms']:6.1f} ms  errors {r['errors']}",
            file=sys.stderr,
        )
    return {
        "items": health["items"],
        "server_start_s": round(server.start_s, 2),
        "phases": results,
        "text_encoder": after["text_encoder"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000, help="vectors in the synthetic index")
    ap.add_argument("--studies", type=int, default=48, help="studies in the synthetic archive (thumbnails)")
    ap.add_argument("--requests", type=int, default=1600, help="requests per phase")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=120.0, help="stop a phase after this long")
    ap.add_argument("--work", type=Path, default=None, help="keep the out dirs here (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="20k items, 12 studies, 320 requests per phase")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/serve_load.json)")
    args = ap.parse_args()
    if args.quick:
        args.items, args.studies, args.requests = 20_000, 12, 320
    tmp = None
    if args.work is None:
        tmp = tempfile.mkdtemp(prefix="radretrieve-serve-")
        args.work = Path(tmp)
    try:
        index_dir, archive_dir = args.work / f"index-{args.items}", args.work / f"archive-{args.studies}" / "out"
        setup = {}
        if not (index_dir / "index" / "index.json").is_file():
            setup["index"] = build_100k(index_dir, args.items)
        if not (archive_dir / "index" / "index.json").is_file():
            setup["archive"] = build_archive(archive_dir, args.studies)
        load_before = os.getloadavg()[0]
        results = {
            "index": run_out_dir("index", index_dir, args.requests, args, thumbnails=False),
            "archive": run_out_dir("archive", archive_dir, args.requests // 2, args, thumbnails=True),
        }
        similar = next(p for p in results["index"]["phases"] if p["phase"] == "similar")
        errors = sum(p["errors"] for r in results.values() for p in r["phases"])
        payload = {
            "headline": (
                f"similar on {results['index']['items']:,} items: p99 {similar['p99_ms']} ms at "
                f"{similar['requests_per_s']} req/s, {args.clients} clients; errors {errors}"
            ),
            "items": args.items,
            "studies": args.studies,
            "clients": args.clients,
            "requests_per_phase": args.requests,
            "model": "radclip-tiny",
            "command": "python -m benchmarks.serve_load" + (" --quick" if args.quick else ""),
            "setup": setup,
            "results": results,
            "errors": errors,
            "goal": {"similar_p99_ms": P99_GOAL_MS, "errors": 0},
            "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
            "note": "clients and server share the machine's cores",
        }
        path = write_json("serve_load", payload, args.out)
        print(f"{payload['headline']}; wrote {path}", file=sys.stderr)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
