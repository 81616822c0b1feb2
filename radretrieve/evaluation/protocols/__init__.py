"""Benchmark protocols of `radretrieve bench retrieval --protocol NAME`: ways of ranking the same embeddings
that match published evaluations, each table printed with its gallery size N, the unit ranked and the chance
level.

- `standard`: the runs of `radretrieve.evaluation.retrieval` (pairs by study, label sets), unchanged;
- `ct-rate`: CT-CLIP's report -> volume recall@5/10/50/100 and volume -> volume MAP@1/5/10/50 (`ct_rate`);
- `pools`: Merlin's recall@1/@8 within random pools of 128 studies, both directions (`pools`);
- `labels`: one prompt-ensemble query per class, precision@10/@50 per class (`labels`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from radretrieve.evaluation.prompts import Templates
from radretrieve.evaluation.protocols.common import ProtocolReport, ProtocolTable, write_protocol_report
from radretrieve.evaluation.protocols.pools import PoolOptions
from radretrieve.evaluation.report import ReportFiles
from radretrieve.evaluation.retrieval import BenchOptions, Embedded, ModeScorer, bench_retrieval
from radretrieve.foundation.errors import RadRetrieveError

PROTOCOLS = ("standard", "ct-rate", "pools", "labels")


def protocol_tables(
    protocol: str,
    emb: Embedded,
    options: BenchOptions = BenchOptions(),
    *,
    encode_text: Callable[[Sequence[str]], Any] | None = None,
    templates: Templates | Sequence[str] | None = None,
    pools: PoolOptions = PoolOptions(),
    scorer: ModeScorer | None = None,
) -> list[ProtocolTable]:
    """The tables of a non-standard protocol. `labels` needs `encode_text` (the model's text tower), and for
    keyword or hybrid modes (`options.modes`) a `scorer`."""
    if protocol != "labels" and tuple(options.modes) != ("vector",):
        raise RadRetrieveError(f"--mode {','.join(options.modes)}: keyword and hybrid modes apply to --protocol labels")
    if protocol == "ct-rate":
        from radretrieve.evaluation.protocols.ct_rate import ct_rate_tables

        return ct_rate_tables(emb, options)
    if protocol == "pools":
        from radretrieve.evaluation.protocols.pools import pools_table

        return [pools_table(emb, options, pools)]
    if protocol == "labels":
        from radretrieve.evaluation.protocols.labels import labels_tables

        if encode_text is None:
            raise RadRetrieveError("the labels protocol needs a text encoder to build its class queries")
        return labels_tables(emb, options, encode_text, templates, scorer)
    raise RadRetrieveError(f"--protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")


def run_protocol(
    protocol: str,
    emb: Embedded,
    out_dir: Path,
    options: BenchOptions = BenchOptions(),
    *,
    name: str = "retrieval",
    plot: bool = True,
    encode_text: Callable[[Sequence[str]], Any] | None = None,
    templates: Templates | Sequence[str] | None = None,
    pools: PoolOptions = PoolOptions(),
    scorer: ModeScorer | None = None,
) -> ReportFiles:
    """Run `protocol` and write ``out_dir/{name}.json``, ``.md`` (the printed tables) and ``.png``."""
    if protocol == "standard" and tuple(options.modes) != ("vector",):
        raise RadRetrieveError(f"--mode {','.join(options.modes)}: keyword and hybrid modes apply to --protocol labels")
    if protocol == "standard":
        return bench_retrieval(emb, out_dir, options, name=name, plot=plot)[1]
    tables = protocol_tables(
        protocol, emb, options, encode_text=encode_text, templates=templates, pools=pools, scorer=scorer
    )
    meta = dict(emb.meta) | {"n_texts": len(emb.texts), "n_images": len(emb.images)}
    return write_protocol_report(ProtocolReport(protocol, tuple(tables), meta), out_dir, name, plot)


__all__ = ["PROTOCOLS", "PoolOptions", "ProtocolReport", "ProtocolTable", "protocol_tables", "run_protocol"]
