"""The Python API for notebooks: one object per out dir, on the code paths the CLI runs.

    import radretrieve

    with radretrieve.open("out") as out:
        hits = out.search("ct head hyperdense lesion", k=5, where="modality = 'CT'")
        hits[0].study_key, hits[0].score            # typed, frozen `indexers.search.Hit` records
        hits.to_pandas()                            # one row per hit: the fields of `search --format json`
        out.similar(hits[0].item_id, k=5)           # an item id, a study key, or a file/folder to encode
        out.items_df()                              # the catalog's items view (no embeddings)

Queries go through `radretrieve.application.search_service.SearchService`, the class behind `radretrieve
search/similar/reports`, and classification through `radretrieve.application.classify.run_classify`, the
function behind `radretrieve classify --index`: the same hits, scores and stored predictions as the CLI.
Reading needs no lock; `classify` (which writes OUT/predictions.parquet) holds the out dir's writer lock while
it writes, as the CLI does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.outdir.layout import INDEX_DIR, MANIFEST
from radretrieve.outdir.where import DEFAULT_TIMEOUT_S

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa

    from indexers.search import Hit
    from radretrieve.application.classify import ClassifyResult
    from radretrieve.application.search_service import QueryResult, SearchService
    from radretrieve.models.protocol import Encoder
    from radretrieve.outdir.catalog import Catalog
    from radretrieve.outdir.manifest import Manifest

TaskSpec = str | Sequence[str] | Mapping[str, Sequence[str]]  # "organ=head,chest", a list of those, or a dict


@dataclass(frozen=True)
class Hits(Sequence["Hit"]):
    """The ranked hits of one query, best first: a read-only sequence of frozen `Hit` records (attributes
    `rank`, `score`, `item_id`, `kind`, `study_key`, `source`, `modality`, `body_part`, `description`, `text`,
    `labels`), with the CLI's JSON records (`to_json`) and a pandas frame (`to_pandas`) one call away."""

    query: str  # the query text, or the item reference as given
    hits: tuple[Hit, ...]

    @overload
    def __getitem__(self, index: int) -> Hit: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Hit]: ...
    def __getitem__(self, index: int | slice) -> Hit | Sequence[Hit]:
        return self.hits[index]

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def to_json(self) -> list[dict[str, Any]]:
        """The hits as `radretrieve search --format json` prints them (its `hits` list)."""
        from radretrieve.application.search_service import hit_json

        return [hit_json(h) for h in self.hits]

    def to_pandas(self) -> pandas.DataFrame:
        """One row per hit, the columns of `to_json` (needs pandas)."""
        from radretrieve.application.search_service import JSON_FIELDS

        return _pandas().DataFrame(self.to_json(), columns=[*JSON_FIELDS])

    @classmethod
    def of(cls, result: QueryResult) -> Hits:
        return cls(result.query, tuple(result.hits))


class OutDir:
    """One out dir (written by `radretrieve index`) opened for queries: `radretrieve.open(path)`.

    `model`/`weights`: an override that must have the out dir's fingerprint (as `--model`); `device`: cpu |
    cuda (default: cuda if present); `where_timeout`: seconds a `where` filter may run. The model, the indexes
    and the catalog are opened on first use and kept until `close()` (or the end of a `with` block)."""

    def __init__(
        self,
        path: str | Path,
        *,
        model: str | None = None,
        weights: str | None = None,
        device: str | None = None,
        where_timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.path = Path(path)
        if not (self.path / MANIFEST).is_file():
            what = "no such directory" if not self.path.is_dir() else f"not an out dir (no {MANIFEST})"
            raise RadRetrieveError(f"{self.path}: {what}; make one with `radretrieve index ARCHIVE --out {path}`")
        self._override, self._weights, self._device = model, weights, device
        self._where_timeout = where_timeout
        self._service: SearchService | None = None
        self._catalog: Catalog | None = None
        self._model: Encoder | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"OutDir({str(self.path)!r}{', closed' if self._closed else ''})"

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> OutDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the indexes, the catalog and the model; the object cannot be used afterwards."""
        if self._service is not None:
            self._service.close()
        if self._catalog is not None:
            self._catalog.close()
        self._service = self._catalog = self._model = None
        self._closed = True

    # -- what the out dir holds ----------------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        """The out dir's `manifest.json`: model fingerprint, embedding dim, finished shards."""
        from radretrieve.outdir.manifest import read_manifest

        self._check_open()
        return read_manifest(self.path)

    @property
    def service(self) -> SearchService:
        """The search service of the CLI's `search`, `similar` and `reports` over this out dir."""
        self._check_open()
        if self._service is None:
            from radretrieve.application.search_service import SearchService

            device = self._device or "auto"
            self._service = SearchService(
                self.path, self._override, self._weights, device=device, where_timeout=self._where_timeout
            )
        return self._service

    @property
    def model(self) -> Encoder:
        """The out dir's model (or the checked override), loaded on first use."""
        self._check_open()
        if self._model is None:
            if self._service is not None or (self.path / INDEX_DIR).is_dir():  # one model for queries and classify
                self._model = self.service.model
            else:
                from radretrieve.outdir.model_ref import load_model_for_out_dir

                self._model = load_model_for_out_dir(self.path, self._override, self._weights, self._device)
        return self._model

    def items(self, where: str | None = None) -> pa.Table:
        """The images and volumes (the catalog's `items` view: one row per item, no embeddings) passing
        `where`, an SQL filter as `--where` takes it, in item-id order. `labels` is a JSON object string."""
        return self._table("items", where)

    def report_items(self, where: str | None = None) -> pa.Table:
        """The reports (the catalog's `reports` view), as `items` does for images and volumes."""
        return self._table("reports", where)

    def items_df(self, where: str | None = None) -> pandas.DataFrame:
        """`items` as a pandas DataFrame (needs pandas)."""
        _pandas()
        return self.items(where).to_pandas()

    # -- queries: the CLI's code paths ---------------------------------------------------------------------
    def search(
        self, text: str, k: int = 10, where: str | None = None, kind: str | None = None, mode: str | None = None
    ) -> Hits:
        """Text -> the `k` best images and volumes (`kind`: volume | image), as `radretrieve search`; `mode`:
        vector | keyword | hybrid, None: hybrid where the out dir has a full-text index, else vector
        (docs/guide/hybrid-search.md)."""
        return Hits.of(self.service.search_text([text], k, kind=kind, where=where, mode=mode)[0])

    def similar(self, item: int | str | Path, k: int = 10, where: str | None = None, kind: str | None = None) -> Hits:
        """An item id, a study key, or a file/folder (encoded on the fly) -> similar studies, one hit per study,
        the item's own study left out, as `radretrieve similar`."""
        return Hits.of(self.service.similar(str(item), k, kind=kind, where=where))

    def reports(self, item: int | str | Path, k: int = 5, where: str | None = None, mode: str | None = None) -> Hits:
        """An item id, a study key, or a file/folder -> the `k` best reports, as `radretrieve reports`."""
        return Hits.of(self.service.reports(str(item), k, where=where, mode=mode))

    def classify(
        self, tasks: TaskSpec, templates: str | Path | None = None, where: str | None = None
    ) -> ClassifyResult:
        """Zero-shot classification of the items passing `where`, as `radretrieve classify --index`: the
        predictions are stored in OUT/predictions.parquet (the `predictions` view of `where` filters), and the
        result holds them with the accuracy per task where the items have a label named like the task.
        `tasks`: "organ=head,chest,abdomen", a list of such strings, or {"organ": ["head", "chest", ...]}."""
        from radretrieve.application.classify import ClassifyOptions, check_classify, run_classify

        self._check_open()
        options = ClassifyOptions(
            tuple(_task_strings(tasks)), Path(templates) if templates is not None else None, where
        )
        check_classify([], self.path, options)  # argument errors before the model loads
        return run_classify([], self.path, options, model=self.model)

    # -- helpers --------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RadRetrieveError(f"{self.path}: this OutDir is closed; open it again with radretrieve.open()")

    def _table(self, view: str, where: str | None) -> pa.Table:
        self._check_open()
        if self._catalog is None:
            from radretrieve.outdir.catalog import Catalog

            self._catalog = Catalog(self.path, where_timeout=self._where_timeout)
        return self._catalog.table(view, where)


def _task_strings(tasks: TaskSpec) -> list[str]:
    if isinstance(tasks, str):
        return [tasks]
    if isinstance(tasks, Mapping):
        return [f"{name}=" + ",".join(classes) for name, classes in tasks.items()]
    return [str(t) for t in tasks]


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise RadRetrieveError("pandas is not installed: `pip install pandas`, or use the Arrow tables") from None
    return pandas
