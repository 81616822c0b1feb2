"""Cross-modal retrieval benchmark: text -> image and image -> text metrics over embedded data.

The plain functions under `radretrieve bench retrieval`. Embeddings come from an out dir or from a model
run over a manifest (`radretrieve.evaluation.sources`); this module turns them into runs:

- ``text->image`` / ``image->text``: a report (one per study) and an image or volume are relevant to each
  other when they share a study key (pair relevance; a study with several items has several relevant items);
- ``text->image [organ+modality]`` / ``image->text [organ+modality]``: label-aware relevance, a hit counts
  when the gallery item agrees with the query on every listed label (RadCLIP's organ and modality matching).
  Missing labels ("", "unknown") match nothing, so such queries are left out of that run (``n_scored``).

Scores are dot products of L2-normalised embeddings (cosine); the metrics and their tie convention are
those of `radretrieve.evaluation.metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radretrieve.evaluation.metrics import (
    DEFAULT_KS,
    RetrievalResult,
    chance_precision,
    chance_recall,
    evaluate_embeddings,
    group_relevance,
    label_relevance,
)
from radretrieve.evaluation.report import ReportFiles, write_report
from radretrieve.foundation.errors import RadRetrieveError

log = logging.getLogger(__name__)

# Label sets tried when none is given: RadCLIP's organ + modality matching, if the data has those labels.
DEFAULT_LABEL_SET: tuple[str, ...] = ("organ", "modality")


@dataclass(frozen=True)
class Side:
    """One side of the retrieval problem (the texts, or the images and volumes), row-aligned arrays."""

    ids: np.ndarray  # int64 [n]: item ids (report row ids for texts)
    vectors: np.ndarray  # float32 [n, D]: L2-normalised embeddings
    study_keys: tuple[str, ...]  # per row: study key ("" = unknown, matches nothing)
    labels: tuple[Mapping[str, str], ...]  # per row: string labels (organ, modality, ...)
    kinds: tuple[str, ...] = ()  # per row: image | volume | report (empty = not known); names the unit ranked
    # per row: the text keyword search finds it by (its report and description; never the labels, which are the
    # ground truth); empty = not known (keyword and hybrid modes then have nothing to search)
    texts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != n or len(self.study_keys) != n or len(self.labels) != n:
            raise ValueError(
                f"Side arrays disagree: {n} ids, vectors {self.vectors.shape}, "
                f"{len(self.study_keys)} study keys, {len(self.labels)} label rows"
            )
        if self.kinds and len(self.kinds) != n:
            raise ValueError(f"Side arrays disagree: {n} ids, {len(self.kinds)} kinds")
        if self.texts and len(self.texts) != n:
            raise ValueError(f"Side arrays disagree: {n} ids, {len(self.texts)} texts")

    def unit(self) -> str:
        """What one row is, for reports: "image", "volume", "image+volume", "report" ("item" if unknown)."""
        kinds = sorted(set(self.kinds))
        return "+".join(kinds) if kinds else "item"

    def subset(self, rows: Sequence[int] | np.ndarray) -> Side:
        """The rows `rows` (in that order) as a new Side."""
        rows = [int(r) for r in rows]
        return Side(
            self.ids[rows],
            self.vectors[rows],
            tuple(self.study_keys[r] for r in rows),
            tuple(self.labels[r] for r in rows),
            tuple(self.kinds[r] for r in rows) if self.kinds else (),
            tuple(self.texts[r] for r in rows) if self.texts else (),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def label_columns(self, keys: Sequence[str]) -> dict[str, list[str | None]]:
        """Label name -> one value per row (None where the row lacks the label)."""
        return {k: [row.get(k) for row in self.labels] for k in keys}

    def label_keys(self) -> set[str]:
        return {k for row in self.labels for k in row}


@dataclass(frozen=True)
class Embedded:
    """Embedded benchmark data: report texts and images/volumes in one space, plus where they came from."""

    texts: Side  # one row per study report
    images: Side  # one row per image or volume
    meta: Mapping[str, Any] = field(default_factory=dict)  # model, fingerprint, data set, read errors...


@dataclass(frozen=True)
class BenchOptions:
    """Settings of one retrieval benchmark run."""

    ks: tuple[int, ...] = DEFAULT_KS  # depths of recall@k and precision@k
    label_sets: tuple[tuple[str, ...], ...] | None = None  # label-aware runs; None = organ+modality if present
    n_bootstrap: int = 1000  # bootstrap resamples of the queries for the CIs (0 = no CI)
    confidence: float = 0.95  # CI level
    seed: int = 0  # bootstrap RNG seed
    modes: tuple[str, ...] = ("vector",)  # ranked side by side (--protocol labels): vector | keyword | hybrid


# A search mode's scores for class queries (docs/guide/hybrid-search.md): (mode, cosine scores float[C, N], the
# query texts [C], the gallery's texts [N]) -> float[C, N], higher first. The ranking lives in `indexers`, which the
# evaluation may not import; the command passes `indexers.memory.mode_scores` in.
ModeScorer = Callable[[str, np.ndarray, Sequence[str], Sequence[str]], np.ndarray]


def parse_label_sets(values: Sequence[str] | None) -> tuple[tuple[str, ...], ...] | None:
    """``["organ,modality", "organ"]`` -> ``(("organ", "modality"), ("organ",))``; ``["none"]`` -> ``()``;
    no values -> None (the default set, where the data has it)."""
    if not values:
        return None
    if [v.strip().lower() for v in values] == ["none"]:
        return ()
    sets = []
    for value in values:
        keys = tuple(k.strip() for k in value.split(",") if k.strip())
        if not keys:
            raise RadRetrieveError(f"--labels {value!r}: give label names separated by commas, e.g. organ,modality")
        sets.append(keys)
    return tuple(sets)


def resolve_label_sets(emb: Embedded, wanted: tuple[tuple[str, ...], ...] | None) -> tuple[tuple[str, ...], ...]:
    """The label sets to run. Explicit sets must exist in the data; the default set is cut down to the
    labels the data has (and dropped, with a log line, when it has none)."""
    have = emb.texts.label_keys() & emb.images.label_keys()
    if wanted is None:
        keys = tuple(k for k in DEFAULT_LABEL_SET if k in have)
        if not keys:
            log.info("no organ/modality labels on both sides; label-aware runs skipped (see --labels)")
            return ()
        return (keys,)
    for keys in wanted:
        absent = [k for k in keys if k not in have]
        if absent:
            raise RadRetrieveError(
                f"--labels {','.join(keys)}: {absent} not found on both texts and images; labels present: "
                f"{sorted(have) or 'none'}"
            )
    return wanted


def _evaluate(queries: Side, gallery: Side, relevance: Any, options: BenchOptions) -> RetrievalResult:
    return evaluate_embeddings(
        queries.vectors,
        gallery.vectors,
        relevance,
        ks=options.ks,
        n_bootstrap=options.n_bootstrap,
        seed=options.seed,
        confidence=options.confidence,
    )


def _run_or_note(
    name: str, queries: Side, gallery: Side, relevance: Any, options: BenchOptions, out: dict[str, RetrievalResult]
) -> None:
    # A run where no query has a relevant item (e.g. every modality "unknown") is logged, not fatal:
    # the other runs of the same data are still worth reporting.
    try:
        out[name] = _evaluate(queries, gallery, relevance, options)
    except ValueError as exc:
        if "no query has a relevant" not in str(exc):
            raise
        log.warning("%s: no query has a relevant gallery item; run left out", name)


def _check_sides(emb: Embedded) -> None:
    texts, images = emb.texts, emb.images
    if len(texts) == 0 or len(images) == 0:
        raise RadRetrieveError(f"nothing to benchmark: {len(texts)} report texts and {len(images)} images/volumes")
    if texts.vectors.shape[1] != images.vectors.shape[1]:
        raise RadRetrieveError(
            f"text and image embeddings differ in dimension: {texts.vectors.shape[1]} vs {images.vectors.shape[1]}"
        )


def run_specs(emb: Embedded, options: BenchOptions = BenchOptions()) -> list[tuple[str, Side, Side, Any]]:
    """The runs of the standard protocol as (name, queries, gallery, relevance): pairs by study, then each
    label set, both directions."""
    _check_sides(emb)
    texts, images = emb.texts, emb.images
    specs: list[tuple[str, Side, Side, Any]] = [
        ("text->image", texts, images, group_relevance(texts.study_keys, images.study_keys)),
        ("image->text", images, texts, group_relevance(images.study_keys, texts.study_keys)),
    ]
    for keys in resolve_label_sets(emb, options.label_sets):
        tag = "+".join(keys)
        t_cols, i_cols = texts.label_columns(keys), images.label_columns(keys)
        specs.append((f"text->image [{tag}]", texts, images, label_relevance(t_cols, i_cols, keys)))
        specs.append((f"image->text [{tag}]", images, texts, label_relevance(i_cols, t_cols, keys)))
    return specs


def retrieval_results(emb: Embedded, options: BenchOptions = BenchOptions()) -> dict[str, RetrievalResult]:
    """Every run (pairs by study, then each label set) in both directions, keyed by run name."""
    out: dict[str, RetrievalResult] = {}
    for name, queries, gallery, relevance in run_specs(emb, options):
        _run_or_note(name, queries, gallery, relevance, options, out)
    if not out:
        raise RadRetrieveError("no run had a query with a relevant gallery item: check the study keys and labels")
    return out


def chance_lines(emb: Embedded, options: BenchOptions = BenchOptions()) -> list[str]:
    """Per run: the gallery size N, the unit ranked and the recall@k / precision@k of a random ranking."""
    lines = []
    for name, queries, gallery, relevance in run_specs(emb, options):
        n_rel = np.concatenate(
            [relevance.block(a, min(a + 1024, len(queries))).sum(axis=1) for a in range(0, len(queries), 1024)]
        )
        if not (n_rel > 0).any():
            continue
        n = len(gallery)
        parts = [f"recall@{k} {chance_recall(n_rel, n, k):.3f}" for k in options.ks]
        parts += [f"precision@{k} {chance_precision(n_rel, n, k):.3f}" for k in options.ks]
        lines.append(f"{name}: N = {n} (unit ranked: {gallery.unit()}); chance: {', '.join(parts)}")
    return lines


def bench_retrieval(
    emb: Embedded,
    out_dir: Path,
    options: BenchOptions = BenchOptions(),
    *,
    name: str = "retrieval",
    title: str | None = None,
    plot: bool = True,
) -> tuple[dict[str, RetrievalResult], ReportFiles]:
    """Compute every run and write ``out_dir/{name}.json``, ``.md`` and ``.png`` (see `bench_report`)."""
    results = retrieval_results(emb, options)
    meta = dict(emb.meta) | {"n_texts": len(emb.texts), "n_images": len(emb.images), "ks": list(options.ks)}
    notes = chance_lines(emb, options)
    files = write_report(
        results,
        Path(out_dir),
        name=name,
        title=title or "Cross-modal retrieval",
        meta=meta | {"chance": notes},
        plot=plot,
        notes=notes,
    )
    return results, files


__all__ = [
    "BenchOptions",
    "DEFAULT_LABEL_SET",
    "Embedded",
    "ModeScorer",
    "Side",
    "bench_retrieval",
    "chance_lines",
    "parse_label_sets",
    "resolve_label_sets",
    "retrieval_results",
    "run_specs",
]
