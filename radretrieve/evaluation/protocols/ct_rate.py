"""`ct-rate`: CT-CLIP's retrieval evaluation on CT-RATE (Hamamci et al., arXiv 2403.17834), computed as its
scripts compute it (github.com/ibrahimethemhamamci/CT-CLIP, `scripts/report_to_volume_new.py` and
`scripts/volume_to_volume_new.py`):

- report -> volume recall@5/10/50/100: a report is a hit when its own volume (same study) is among the k volumes
  of highest cosine score; the mean over reports. CT-CLIP reports R@10 = 0.050 on CT-RATE.
- volume -> volume MAP@1/5/10/50: for each query volume, the mean label overlap of its k nearest gallery
  volumes, where overlap = |labels positive in both| / |labels positive in either| (Jaccard) over the binary
  abnormality labels; the gallery is every volume with at least one positive label, the query itself included
  as in the script; the mean over all volumes. A second run leaves each query out of its own gallery.

Where this differs from the scripts: ties are pessimistic (the scripts break them by file order), and each k is
its own mean (the volume script keeps appending to one list across k, so its k = 5, 10, 50 lines are running
means over the smaller k too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radretrieve.evaluation.metrics import chance_recall, evaluate_embeddings, group_relevance
from radretrieve.evaluation.protocols.common import ProtocolTable, estimates, run_dict
from radretrieve.evaluation.retrieval import BenchOptions, Embedded, Side
from radretrieve.foundation.errors import RadRetrieveError

RECALL_KS = (5, 10, 50, 100)
MAP_KS = (1, 5, 10, 50)
_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


def binary_columns(side: Side, wanted: Sequence[str] | None = None) -> tuple[str, ...]:
    """The binary label columns (values 0/1, true/false): `wanted`, checked, or every such column found."""
    values: dict[str, set[str]] = {}
    for row in side.labels:
        for key, value in row.items():
            values.setdefault(key, set()).add(str(value).strip().lower())
    if wanted:
        bad = [k for k in wanted if k not in values or not values[k] <= _TRUE | _FALSE]
        if bad:
            raise RadRetrieveError(f"--labels for ct-rate: {bad} are not binary (0/1) label columns of the volumes")
        return tuple(wanted)
    cols = tuple(sorted(k for k, v in values.items() if k != "split" and v <= _TRUE | _FALSE and v & _TRUE))
    if not cols:
        raise RadRetrieveError(
            "ct-rate needs binary (0/1) abnormality label columns on the volumes (CT-RATE has 18); none found"
        )
    return cols


def label_matrix(side: Side, columns: Sequence[str]) -> np.ndarray:
    """bool [n, L]: label c positive for row i (missing counts as negative, as CT-RATE's 0)."""
    return np.array([[str(row.get(c, "0")).strip().lower() in _TRUE for c in columns] for row in side.labels], bool)


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float [n, m]: |a_i & b_j| / |a_i | b_j| for bool rows a [n, L], b [m, L]; 0 where both are empty."""
    a8, b8 = a.astype(np.int64), b.astype(np.int64)
    inter = a8 @ b8.T
    union = a8.sum(1)[:, None] + b8.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


def report_to_volume(emb: Embedded, options: BenchOptions) -> ProtocolTable:
    texts, images = emb.texts, emb.images
    rel = group_relevance(texts.study_keys, images.study_keys)
    res = evaluate_embeddings(
        texts.vectors,
        images.vectors,
        rel,
        ks=RECALL_KS,
        n_bootstrap=options.n_bootstrap,
        seed=options.seed,
        confidence=options.confidence,
    ).to_dict()
    res["metrics"] = {f"R@{k}": res["metrics"][f"recall@{k}"] for k in RECALL_KS}
    n_rel = rel.block(0, len(texts)).sum(axis=1)
    chance = {f"R@{k}": chance_recall(n_rel, len(images), k) for k in RECALL_KS}
    return ProtocolTable(
        "ct-rate: report -> volume",
        images.unit(),
        len(images),
        chance,
        {"report->volume": res},
        ("CT-CLIP reports report -> volume R@10 = 0.050 on CT-RATE (hit rate of the report's own volume).",),
    )


def volume_to_volume(emb: Embedded, options: BenchOptions) -> ProtocolTable:
    images = emb.images
    cols = binary_columns(images, _columns(options))
    labels = label_matrix(images, cols)
    gallery = np.flatnonzero(labels.any(axis=1))  # CT-CLIP: only volumes with a finding are retrieved
    if gallery.size == 0:
        raise RadRetrieveError("ct-rate: no volume has a positive label; volume -> volume needs some")
    overlap = jaccard(labels, labels[gallery])  # [Q, G]
    scores = images.vectors @ images.vectors[gallery].T
    runs, chance = {}, {}
    for name, leave_out in (("volume->volume (query in gallery, as CT-CLIP)", False), ("volume->volume", True)):
        per_query, chance_rows = _map_values(scores, overlap, gallery, leave_out)
        runs[name] = run_dict(
            estimates(per_query, [f"MAP@{k}" for k in MAP_KS], options.n_bootstrap, options.seed, options.confidence),
            len(images),
            len(per_query),
            gallery.size,
            options.n_bootstrap,
            options.seed,
            options.confidence,
        )
        if leave_out:
            chance = {f"MAP@{k}": float(np.mean(chance_rows)) for k in MAP_KS}
    return ProtocolTable(
        "ct-rate: volume -> volume",
        images.unit(),
        int(gallery.size),
        chance,
        runs,
        (f"Relevance: Jaccard overlap of {len(cols)} binary labels ({_listed(cols)}).",),
    )


def _listed(cols: Sequence[str], most: int = 6) -> str:
    return ", ".join(cols[:most]) + (", ..." if len(cols) > most else "")


def _map_values(
    scores: np.ndarray, overlap: np.ndarray, gallery: np.ndarray, leave_out: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: mean overlap of its top-k gallery rows for each k in MAP_KS (float [Q, len(MAP_KS)]), and
    its mean overlap over the whole gallery (what a random top-k averages to)."""
    out = np.zeros((scores.shape[0], len(MAP_KS)))
    rand = np.zeros(scores.shape[0])
    for q in range(scores.shape[0]):
        cols = np.arange(gallery.size)
        if leave_out:
            cols = cols[gallery != q]
        if cols.size == 0:
            continue
        s, o = scores[q, cols], overlap[q, cols]
        # pessimistic ties: among equal scores the lower overlap comes first
        order = np.lexsort((o, -s))
        out[q] = [o[order[:k]].mean() for k in MAP_KS]
        rand[q] = o.mean()
    return out, rand


def _columns(options: BenchOptions) -> tuple[str, ...] | None:
    sets = options.label_sets
    return tuple(k for keys in sets for k in keys) if sets else None


def ct_rate_tables(emb: Embedded, options: BenchOptions) -> list[ProtocolTable]:
    return [report_to_volume(emb, options), volume_to_volume(emb, options)]
