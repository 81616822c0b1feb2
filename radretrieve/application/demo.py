"""`radretrieve demo`: the whole system on a fresh machine, offline, in minutes on a CPU.

1. synthesise an archive (DICOM CT series, NIfTI MR, radiographs, reports, ground-truth labels);
2. train `radclip-tiny` on its train/val studies (cached: a finished run is reused);
3. index the held-out test studies (resumable) and build the FAISS indexes;
4. run example queries: text -> studies, study -> reports;
5. score them against the ground truth (precision@k, label-aware);
6. write an HTML contact sheet of the first query.
Every step says what it does on stderr; the results go to stdout.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radretrieve.models.protocol import Encoder

log = logging.getLogger("radretrieve.demo")


@dataclass(frozen=True)
class DemoOptions:
    """What the demo builds, and where."""

    workdir: Path = Path("radretrieve-demo")  # archive/, model/, index/, contact_sheet.html
    studies: int = 300  # synthetic studies: about 80% train (trained on), 20% val + test (indexed and queried)
    seed: int = 0  # synthesis and training seed
    k: int = 5  # hits per query, and the k of precision@k
    workers: int = 2  # reader processes while indexing
    progress: bool = True  # the indexing bar on stderr (when stderr is a terminal)


@dataclass(frozen=True)
class QueryScore:
    """One example query and how many of its top-k hits match its ground-truth labels."""

    text: str  # the query
    labels: dict[str, str]  # labels a hit must have to count
    hits: tuple[Any, ...]  # indexers.search.Hit, best first
    precision: float  # matching hits / k
    best: float  # the best precision possible: min(k, relevant items in the index) / k


def run_demo(opts: DemoOptions, say: Callable[[str], None]) -> dict[str, Any]:
    """Run the six steps; returns the numbers printed (for tests and JSON output)."""
    archive = _synthesize(opts, say)
    train_csv, test_csv = _split_manifests(archive)
    model = _train(opts, train_csv, say)
    out = _index(opts, model, test_csv, say)
    say("step 4/6: example queries (text -> studies, study -> reports)")
    scores = _text_queries(out, model, test_csv, opts.k)
    report_hits = _report_queries(out, test_csv, opts.k)
    say("step 6/6: contact sheet")
    sheet = _contact_sheet(out, model, scores[0], opts.workdir / "contact_sheet.html") if scores else None
    return {
        "queries": scores,
        "reports": report_hits,
        "contact_sheet": sheet,
        "out": out,
        "mean_precision": sum(s.precision for s in scores) / max(len(scores), 1),
        "mean_best": sum(s.best for s in scores) / max(len(scores), 1),
    }


def _synthesize(opts: DemoOptions, say: Callable[[str], None]) -> Path:
    from radretrieve.synth import synthesize

    archive = opts.workdir / "archive"
    if (archive / "manifest.csv").is_file():
        say(f"step 1/6: synthetic archive already in {archive} (delete it to make a new one)")
        return archive
    say(f"step 1/6: synthesising {opts.studies} studies into {archive}")
    synthesize(archive, studies=opts.studies, seed=opts.seed, on_study=Every(PROGRESS_S, opts.studies, say))
    return archive


PROGRESS_S = 10.0  # seconds between the progress lines of a step (as training's, radretrieve.training.progress)


class Every:
    """`say`s "  N/TOTAL studies written" when called with N, at most once per `seconds` (and at the end), so that
    a slow machine sees the step move and a fast one gets no line per study."""

    def __init__(
        self, seconds: float, total: int, say: Callable[[str], None], clock: Callable[[], float] | None = None
    ) -> None:
        import time

        self.seconds, self.total, self.say = seconds, total, say
        self.clock = clock if clock is not None else time.monotonic
        self.started = self.last = self.clock()

    def __call__(self, n: int) -> None:
        now = self.clock()
        if now - self.last >= self.seconds or (n == self.total and now - self.started >= self.seconds):
            self.last = now
            self.say(f"  {n}/{self.total} studies written, {now - self.started:.0f} s")


def _split_manifests(archive: Path) -> tuple[Path, Path]:
    """demo-train.csv (train studies) and demo-test.csv (val + test, never trained on) beside manifest.csv."""
    rows = list(csv.DictReader((archive / "manifest.csv").open(newline="")))
    out = []
    for name, keep in (("demo-train.csv", lambda s: s == "train"), ("demo-test.csv", lambda s: s != "train")):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(r for r in rows if keep(r["split"]))
        path = archive / name
        if not path.is_file() or path.read_text() != buf.getvalue():
            path.write_text(buf.getvalue())
        out.append(path)
    return out[0], out[1]


def _train(opts: DemoOptions, train_csv: Path, say: Callable[[str], None]) -> Any:
    from radretrieve.training import train
    from radretrieve.training.presets import synthetic_recipe

    out = opts.workdir / "model"
    say(f"step 2/6: training radclip-tiny on {train_csv.name} -> {out} (reused when already trained)")
    result = train(
        synthetic_recipe(seed=opts.seed),
        train_csv,
        out,
        "radclip-tiny",
        resume=True,
        device="cpu",
    )  # progress lines (epoch, step, loss, time left) go to the `radretrieve.training` logger
    for line in result.summary_lines():
        say("  " + line)
    return result.model


def _index(opts: DemoOptions, model: Encoder, test_csv: Path, say: Callable[[str], None]) -> Path:
    from indexers.build import build_indexes
    from pipelines.job import IndexOptions, index_archive

    out = opts.workdir / "index"
    say(f"step 3/6: indexing the held-out studies of {test_csv.name} -> {out}")
    summary = index_archive(
        test_csv, out, model, IndexOptions(workers=opts.workers, overwrite=True, progress=opts.progress)
    )
    for line in summary.lines():
        say("  " + line)
    build_indexes(out)
    return out


def _text_queries(out: Path, model: Encoder, test_csv: Path, k: int) -> list[QueryScore]:
    """One query per (region, modality) present in the test set, plus lesion-position queries for volumes."""
    from indexers.search import Searcher

    rows = list(csv.DictReader(test_csv.open(newline="")))
    combos = sorted({(r["region"], r["modality"]) for r in rows})
    # the phrasing of the training templates (radretrieve.training.presets): "REGION MODALITY, LABEL"
    queries = [(f"{reg} {m}", {"region": reg, "modality": m}) for reg, m in combos]
    volumes = sorted({(r["region"], r["modality"], r["position"]) for r in rows if r["position"]})
    queries += [
        (f"{reg} {m}, lesion present, {p}", {"region": reg, "modality": m, "position": p}) for reg, m, p in volumes[:4]
    ]
    vectors = model.encode_text([q for q, _ in queries]).numpy()
    searcher = Searcher(out, fingerprint=model.fingerprint)
    try:
        results = searcher.search(vectors, k=k)
    finally:
        searcher.close()

    def best(labels: dict[str, str]) -> float:  # synthetic studies hold one item each: a manifest row is an item
        return min(k, sum(all(r.get(key) == v for key, v in labels.items()) for r in rows)) / k

    return [
        QueryScore(text, labels, tuple(hits), _precision(hits, labels, k), best(labels))
        for (text, labels), hits in zip(queries, results)
    ]


def _precision(hits: Any, labels: dict[str, str], k: int) -> float:
    return sum(all(h.labels.get(key) == v for key, v in labels.items()) for h in hits) / k


def _report_queries(out: Path, test_csv: Path, k: int) -> list[tuple[str, bool, Any]]:
    """study -> reports for three test studies: (study, own report found in top k, hits)."""
    from indexers.search import Searcher
    from radretrieve.archive.anonymise import PathHasher
    from radretrieve.outdir.anonymise import path_key

    studies = [r["study"] for r in csv.DictReader(test_csv.open(newline=""))][:3]
    stored = PathHasher(path_key(out))  # manifest `study` values are stored as keyed hashes
    searcher = Searcher(out)
    try:
        found = []
        for study in studies:
            hits = searcher.reports_for(stored(study), k=k)
            found.append((study, any(h.study_key == stored(study) for h in hits), hits))
        return found
    finally:
        searcher.close()


def _contact_sheet(out: Path, model: Encoder, score: QueryScore, path: Path) -> Path:
    from radretrieve.application.contact_sheet import write_contact_sheet

    return write_contact_sheet(path, out, score.text, list(score.hits))
