"""What `radretrieve index` does, as plain functions over one typed option object (the CLI and the Python API
build the same `IndexOptions`).

    options = IndexOptions(workers=0, selection=SelectionOptions(exclude=("description=*dose*",)))
    job = prepare_index("archive/", options)         # every argument check: before torch and the model load
    summary = run_index_job(job, Path("out"))         # scan, encode, write shards (resumable, one writer)
    infos = build_out_dir_index(Path("out"))          # FAISS indexes (incremental)

Nothing heavy is imported at module level: `prepare_index` must refuse bad options in well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from radretrieve.foundation.errors import RadRetrieveError

if TYPE_CHECKING:  # not imported at run time: argument checks stay light
    from pipelines.job import IndexSummary
    from radretrieve.archive.dicomweb import Limits
    from radretrieve.archive.scanner import ScanPolicy

AUTH_ENV = "RADRETRIEVE_DICOMWEB_AUTH"  # radretrieve.archive.dicomweb.AUTH_ENV (not imported: --help stays light)


@dataclass(frozen=True)
class SelectionOptions:
    """Which series and texts of the archive are indexed (radretrieve.archive.scanner.make_policy)."""

    include: tuple[str, ...] = ()  # FIELD=GLOB rules that keep series, or default rules turned off by reason
    exclude: tuple[str, ...] = ()  # FIELD=GLOB rules that skip series
    selection: Path | None = None  # rules file (JSON or TOML: include, exclude, defaults)
    reports: Path | None = None  # report texts (CSV/JSONL) keyed by StudyInstanceUID or AccessionNumber
    scrubber: str | None = None  # module:callable run on every text after the built-in redaction
    follow_external_links: bool = False  # index what links inside the archive point to outside it


@dataclass(frozen=True)
class DicomWebOptions:
    """How a DICOMweb archive (dicomweb+http(s)://...) is listed and read; refused for a folder or manifest."""

    auth_file: Path | None = None  # credentials file ('basic USER:PASSWORD' or 'bearer TOKEN'); else $AUTH_ENV
    since: str | None = None  # studies with StudyDate on or after this date
    modality: str | None = None  # series of these modalities (CT,MR)
    query: tuple[str, ...] = ()  # QIDO-RS matches KEY=VALUE (DICOM keywords)
    retries: int = 4  # retries of a failed request (network, 5xx)
    retry_backoff: float = 0.5  # seconds before the first retry, doubled for each next one
    max_response_mb: float = 1024.0  # largest answer accepted (an instance, a page), in MiB
    max_listed: int = 1_000_000  # most entries one QIDO-RS query may return over all its pages
    request_deadline: float = 600.0  # seconds one HTTP request may take, connect to last byte

    def used_flags(self) -> list[str]:
        """The DICOMweb-only options that were set (an error for a folder or manifest archive)."""
        given = (
            ("--since", self.since),
            ("--modality", self.modality),
            ("--query", self.query),
            ("--auth-file", self.auth_file),
        )
        return [flag for flag, value in given if value]


@dataclass(frozen=True)
class DimseOptions:
    """How a DIMSE archive (dimse://CALLED_AET@HOST:PORT) is reached; refused for any other archive. The listing
    options and bounds of `DicomWebOptions` (--since, --modality, --query, --retries, --max-response-mb,
    --max-listed, --request-deadline) apply to it as well."""

    calling_aet: str | None = None  # our AE title (None: RADRETRIEVE); the node must know it
    move_port: int | None = None  # C-MOVE to our storage SCP on this port instead of C-GET

    def used_flags(self) -> list[str]:
        """The DIMSE-only options that were set (an error for any other archive)."""
        given = (("--calling-aet", self.calling_aet), ("--move-port", self.move_port))
        return [flag for flag, value in given if value is not None]


@dataclass(frozen=True)
class IndexOptions:
    """Everything `radretrieve index ARCHIVE --out OUT` takes besides the two paths (the CLI's defaults)."""

    model: str = "radclip-tiny"  # registry name, model directory, open_clip name or hf-hub: id
    weights: str | None = None  # weights file or pretrained tag
    preprocess: str | None = None  # preprocessing profile override (None: the model's own)
    device: str | None = None  # cpu | cuda (None: cuda if present)
    workers: int = 2  # reader processes (0: decode in the main process)
    batch_size: int = 256  # slices per encoder call
    studies_per_task: int = 64  # studies per task (= per shard)
    engine: Literal["local", "ray"] = "local"  # execution engine
    ray_address: str | None = None  # join this Ray cluster (engine ray)
    encoders: int = 0  # engine ray without GPUs: CPU encoder actors (0: one per node)
    overwrite: bool = False  # rebuild an out dir made with another model or preprocessing
    anonymise_paths: bool = True  # store keyed hashes instead of file and folder names (False: --keep-paths)
    retry_errors: bool = False  # retry every recorded failure (failures whose files changed always are)
    wait: float = 0.0  # seconds to wait for another job writing the out dir (0: stop at once naming it)
    build_index: bool = True  # build or update the FAISS indexes after the job (False: --no-index)
    progress: bool = True  # progress bars on stderr
    selection: SelectionOptions = field(default_factory=SelectionOptions)  # series selection, reports, scrubber
    dicomweb: DicomWebOptions = field(default_factory=DicomWebOptions)  # a PACS archive's listing and bounds
    dimse: DimseOptions = field(default_factory=DimseOptions)  # a DIMSE archive's AE title and C-MOVE port

    def check(self) -> None:
        """The checks of the options alone (no file, no network); `prepare_index` runs them first."""
        if self.engine not in ("local", "ray"):
            raise RadRetrieveError(f"--engine must be local or ray, got {self.engine!r}")
        if self.selection.follow_external_links and self.engine == "ray":
            raise RadRetrieveError("--follow-external-links is supported by the local engine only")
        if self.dimse.move_port is not None and self.engine == "ray":
            # the PACS sends every C-MOVE to the one host and port it has registered for our AE title, never
            # to the worker that asked: use C-GET on a cluster
            raise RadRetrieveError(
                "--move-port needs --engine local (a PACS moves to one registered host); "
                "--engine ray retrieves with C-GET"
            )
        if self.engine == "ray":  # an optional extra: one line before the model loads or anything is written
            from pipelines.ray_cluster.connect import require_ray

            require_ray()


@dataclass(frozen=True)
class PreparedIndex:
    """An indexing job whose options were all checked: what `run_index_job` needs besides the out dir."""

    source: Any  # the archive: a Path (folder or manifest), a DicomWebSource or a DimseSource (checked reachable)
    policy: ScanPolicy  # series selection, --reports, --scrubber, links
    options: IndexOptions
    model: Any = None  # the --model reference parsed (a radretrieve.models.reference.ModelSource)


def prepare_index(archive: str | Path, options: IndexOptions = IndexOptions()) -> PreparedIndex:
    """Check every option and the archive (a DICOMweb server is probed) before torch or the model is loaded;
    each problem is one `RadRetrieveError` line. Writes nothing."""
    options.check()
    sel = options.selection
    from radretrieve.archive.scanner import make_policy
    from radretrieve.models.reference import parse_model_ref

    model = parse_model_ref(options.model, options.weights)
    policy = make_policy(sel.include, sel.exclude, sel.selection, sel.reports, sel.scrubber, sel.follow_external_links)
    limits = _limits(str(archive), options.dicomweb)
    source = _source(str(archive), options.dicomweb, limits, options.dimse)
    if isinstance(source, Path):  # an empty folder or a single file: refused before the model loads
        from pipelines.preflight import check_archive

        check_archive(source)
    return PreparedIndex(source, policy, options, model)


def run_index_job(job: PreparedIndex, out: Path, marks: dict[str, float] | None = None) -> IndexSummary:
    """Load the model and run the bulk job into `out` (pipelines.job.index_archive; holds the writer lock).

    `marks`: when given, the wall-clock time (`time.time()`) at which each start-up step ended is put in it:
    `readers` (reader processes started), `imports` (torch, open_clip and the job's modules), `model` (loaded),
    `job` (the job's summary written); `radretrieve index --timings FILE` writes them."""
    import time

    from pipelines.local import start_readers

    marks = marks if marks is not None else {}
    o = job.options
    # the readers start first: their new interpreters import the decoders while this one imports torch and
    # builds the model, instead of after it (about a second each, more on a busy machine)
    readers = start_readers(o.workers) if o.engine == "local" else None
    marks["readers"] = time.time()
    try:
        return _load_and_run(job, out, marks, readers)
    finally:
        if readers is not None:
            readers.close()


def _load_and_run(job: PreparedIndex, out: Path, marks: dict[str, float], readers: Any) -> IndexSummary:
    import time

    from pipelines.job import IndexOptions as JobOptions
    from pipelines.job import index_archive
    from radretrieve.models.loading import import_open_clip_for, load_model
    from radretrieve.models.provenance import warn_if_untrained

    o = job.options
    if job.model is not None:  # every model is built by open_clip: imported here to time it apart from the build
        import_open_clip_for(job.model)
    marks["imports"] = time.time()
    # warned once the job has found work: a job refused (lock, archive, server) prints its one error line alone
    model = load_model(o.model, weights=o.weights, device=o.device, preprocess=o.preprocess, warn=False)
    marks["model"] = time.time()
    settings = JobOptions(
        workers=o.workers,
        batch_size=o.batch_size,
        studies_per_task=o.studies_per_task,
        engine=o.engine,
        overwrite=o.overwrite,
        retry_errors=o.retry_errors,
        anonymise_paths=o.anonymise_paths,
        wait=o.wait,
        progress=o.progress,
        ray_address=o.ray_address,
        encoders=o.encoders,
        policy=job.policy,
        before_encoding=lambda: warn_if_untrained(model.config.name, model.provenance),
    )
    summary = index_archive(job.source, Path(out), model, settings, readers)
    marks["job"] = time.time()
    return summary


TIMINGS_KEYS = ("marks", "stage_seconds")  # the keys of a `--timings` file, and of nothing else it may replace


def check_timings_path(path: Path, archive: str | Path, out: Path) -> None:
    """`index --timings FILE`, checked before the job (the file is written only after it): RadRetrieveError when
    FILE is in the out dir or the archive, its folder does not exist, or it exists and is not an earlier timings
    file. The file is replaced whole at the job's end, so a typo must not cost a shard, an image or a user's file.
    """
    target = Path(path).resolve()
    where = [("the out dir", Path(out).resolve())]
    if "://" not in str(archive):  # a local folder or manifest (a server's URL has no files here)
        where.append(("the archive", Path(archive).resolve()))
    for what, root in where:
        if target == root or target.is_relative_to(root):
            raise RadRetrieveError(f"--timings {path}: is inside {what}; choose a file elsewhere")
    if not target.parent.is_dir():
        raise RadRetrieveError(f"--timings {path}: its folder does not exist")
    if target.exists() and not _is_timings_file(target):
        raise RadRetrieveError(f"--timings {path}: exists and is not a timings file; choose another name")


def _is_timings_file(path: Path) -> bool:
    """Whether `path` is a regular file holding what `write_timings` writes (so a rerun may replace it)."""
    import json

    if not path.is_file() or path.stat().st_size > 1 << 20:
        return False
    try:
        payload = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and tuple(payload) == TIMINGS_KEYS


def write_timings(path: Path, marks: dict[str, float], stage_seconds: dict[str, float]) -> None:
    """`index --timings FILE`: the start-up marks (wall-clock seconds since the epoch, comparable with the
    clock of the process that started this one) and the job's stage seconds, as JSON."""
    import json

    from radretrieve.foundation.fileio import atomic_write_text

    payload = dict(zip(TIMINGS_KEYS, (marks, stage_seconds), strict=True))
    atomic_write_text(Path(path), json.dumps(payload, indent=1))


def summary_json(summary: IndexSummary, out: Path) -> dict[str, Any]:
    """`index --json`: the job's summary and, as every JSON result carries it, the out dir's model and its state
    (docs/guide/model-state.md, "The JSON field")."""
    from radretrieve.outdir.model_ref import recorded_model

    return summary.to_dict() | {"model": recorded_model(Path(out)).to_json()}


def build_out_dir_index(out: Path) -> dict[str, Any]:
    """Build or update the FAISS indexes of the out dir (incremental when only new shards were added):
    index name -> `indexers.build` info (type, count, recalls)."""
    from indexers.build import build_indexes

    return build_indexes(Path(out))


def _source(archive: str, web: DicomWebOptions, limits: Limits | None, dimse: DimseOptions = DimseOptions()) -> Any:
    """The archive folder or manifest (a Path), or the DICOMweb server (a DicomWebSource) or DICOM node (a
    DimseSource) with `limits`."""
    from radretrieve.archive.dicomweb import Limits, Retry, is_dicomweb, parse_source, resolve_auth
    from radretrieve.archive.dimse import is_dimse

    dimse_used = dimse.used_flags()
    if is_dimse(archive):
        return _dimse_source(archive, web, limits if limits is not None else Limits(), dimse)
    if dimse_used:
        raise RadRetrieveError(f"{dimse_used[0]} applies to DIMSE archives (dimse://AET@HOST:PORT) only")
    if is_dicomweb(archive):
        from radretrieve.archive.dicomweb.listing import probe

        retry = Retry(tries=web.retries + 1, backoff_s=web.retry_backoff)
        limits = limits if limits is not None else Limits()
        auth = resolve_auth(web.auth_file)
        source = parse_source(archive, auth, web.since, web.modality, list(web.query), retry, limits)
        probe(source)  # an unreachable server or bad credentials: one line now, not after loading the model
        return source
    used = web.used_flags()
    if used:
        raise RadRetrieveError(f"{used[0]} applies to DICOMweb archives (dicomweb+http://...) only")
    if not Path(archive).exists():
        raise RadRetrieveError(f"{archive}: archive not found")
    return Path(archive)


def _dimse_source(archive: str, web: DicomWebOptions, limits: Limits, dimse: DimseOptions) -> Any:
    """The DICOM node of a dimse:// archive, probed (one association opened and released)."""
    from radretrieve.archive.dicomweb import Retry
    from radretrieve.archive.dimse import parse_source
    from radretrieve.archive.dimse.listing import probe

    if web.auth_file is not None:
        raise RadRetrieveError("--auth-file applies to DICOMweb archives (dicomweb+http://...) only")
    retry = Retry(tries=web.retries + 1, backoff_s=web.retry_backoff)
    query = list(web.query)
    source = parse_source(archive, dimse.calling_aet, web.since, web.modality, query, retry, limits, dimse.move_port)
    probe(source)  # an unreachable node or a rejection (AE titles): one line now, not after loading the model
    return source


def _limits(archive: str, web: DicomWebOptions) -> Limits | None:
    """The bounds of a server's answers (a frozen, checked `Limits`); None for a folder or manifest."""
    from radretrieve.archive.dicomweb import Limits, is_dicomweb
    from radretrieve.archive.dimse import is_dimse

    if not (is_dicomweb(archive) or is_dimse(archive)):
        return None
    return Limits.from_options(web.max_response_mb, web.max_listed, web.request_deadline)
