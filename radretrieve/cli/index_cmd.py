"""`radretrieve index ARCHIVE --out DIR`: the bulk indexing job (thin wrapper over `pipelines.job`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from radretrieve.cli.options import MODEL_HELP, PREPROCESS_HELP
from radretrieve.cli.output import say, say_json

if TYPE_CHECKING:  # not imported at run time: --help stays light
    from radretrieve.archive.dicomweb import Limits

KEEP_PATHS_WARNING = (
    "warning: --keep-paths: file and folder names are stored in shards and errors/ and shown in search output; "
    "names can carry patient data"
)
AUTH_ENV = "RADRETRIEVE_DICOMWEB_AUTH"  # radretrieve.archive.dicomweb.AUTH_ENV (not imported: --help stays light)


def index(
    archive: str = typer.Argument(
        ..., help="Archive folder, a manifest (CSV/Parquet/JSONL), or dicomweb+http(s)://HOST:PORT/PATH (a PACS)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Out dir: shards/, errors/, manifest.json, index/."),
    model: str = typer.Option("radclip-tiny", "--model", "-m", help=MODEL_HELP),
    weights: str | None = typer.Option(None, "--weights", "-w", help="Weights file or pretrained tag."),
    preprocess: str | None = typer.Option(None, "--preprocess", help=PREPROCESS_HELP),
    workers: int = typer.Option(2, "--workers", help="Reader processes (0: decode in the main process)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Slices per encoder call."),
    studies_per_task: int = typer.Option(64, "--studies-per-task", help="Studies per task (= per shard)."),
    engine: str = typer.Option("local", "--engine", help="local | ray"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Join this Ray cluster (engine ray)."),
    encoders: int = typer.Option(
        0, "--encoders", help="Engine ray without GPUs: CPU encoder actors (default: one per node)."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: cuda if present)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Rebuild an out dir made with another model or preprocessing."
    ),
    anonymise_paths: bool = typer.Option(
        True,
        "--anonymise-paths/--keep-paths",
        help="Store and show keyed hashes instead of file and folder names, the default (names can carry patient "
        "data); --keep-paths stores the names themselves.",
    ),
    follow_external_links: bool = typer.Option(
        False,
        "--follow-external-links",
        help="Index files and folders that links inside the archive point to outside it (default: skip and record "
        "them in errors/).",
    ),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="Retry every recorded failure (failures whose files changed always are)."
    ),
    wait: float = typer.Option(
        0.0, "--wait", help="Seconds to wait for another job writing --out (default: stop at once naming it)."
    ),
    include: list[str] = typer.Option(
        [],
        "--include",
        help="Keep series matching FIELD=GLOB (sop_class, modality, image_type, description) whatever the default "
        "selection says, or turn a default rule off by its reason (e.g. secondary-capture). Repeatable.",
    ),
    exclude: list[str] = typer.Option(
        [], "--exclude", help="Skip series matching FIELD=GLOB (e.g. 'description=*dose*'). Repeatable."
    ),
    selection: Path | None = typer.Option(
        None, "--selection", help="Series selection rules file (JSON or TOML: include, exclude, defaults)."
    ),
    reports: Path | None = typer.Option(
        None, "--reports", help="Report texts (CSV/JSONL) keyed by StudyInstanceUID or AccessionNumber."
    ),
    scrubber: str | None = typer.Option(
        None, "--scrubber", help="module:callable (text -> text) run on every text after the built-in redaction."
    ),
    no_index: bool = typer.Option(False, "--no-index", help="Do not build the FAISS index at the end."),
    since: str | None = typer.Option(None, "--since", help="DICOMweb: studies with StudyDate on or after DATE."),
    modality: str | None = typer.Option(None, "--modality", help="DICOMweb: series of these modalities (CT,MR)."),
    query: list[str] = typer.Option(
        [], "--query", help="DICOMweb: a QIDO-RS match KEY=VALUE (DICOM keyword), repeatable."
    ),
    auth_file: Path | None = typer.Option(
        None, "--auth-file", help=f"DICOMweb: credentials ('basic USER:PASSWORD' or 'bearer TOKEN'); else ${AUTH_ENV}."
    ),
    retries: int = typer.Option(4, "--retries", help="DICOMweb: retries of a failed request (network, 5xx)."),
    retry_backoff: float = typer.Option(
        0.5, "--retry-backoff", help="DICOMweb: seconds before the first retry, doubled for each next one."
    ),
    max_response_mb: float = typer.Option(
        1024.0, "--max-response-mb", help="DICOMweb: largest answer accepted (an instance, a page), in MiB."
    ),
    max_listed: int = typer.Option(
        1_000_000, "--max-listed", help="DICOMweb: most entries one QIDO-RS query may return over all its pages."
    ),
    request_deadline: float = typer.Option(
        600.0, "--request-deadline", help="DICOMweb: seconds one HTTP request may take, connect to last byte."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bars and no INFO log lines: warnings and errors only."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Embed an archive into Parquet shards (resumable: rerun to continue after a crash), then build the index."""
    from radretrieve.foundation.errors import RadRetrieveError

    if quiet:  # the root logger: the job's, the index build's and captured library warnings alike
        logging.getLogger().setLevel(logging.WARNING)
    if engine not in ("local", "ray"):
        raise RadRetrieveError(f"--engine must be local or ray, got {engine!r}")
    if engine == "ray":  # an optional extra: one line before the model loads
        from pipelines.ray_cluster.connect import require_ray

        require_ray()
    from radretrieve.archive.scanner import make_policy

    if follow_external_links and engine == "ray":
        raise RadRetrieveError("--follow-external-links is supported by the local engine only")
    if not anonymise_paths:
        say(KEEP_PATHS_WARNING, err=True)
    # bad options fail before torch and the model load
    from radretrieve.models.reference import parse_model_ref

    parse_model_ref(model, weights)
    policy = make_policy(include, exclude, selection, reports, scrubber, follow_external_links)
    limits = _limits(archive, max_response_mb, max_listed, request_deadline)
    source = _source(archive, auth_file, since, modality, query, retries, retry_backoff, limits)
    from pipelines.job import IndexOptions, index_archive
    from radretrieve.models.loading import load_model

    m = load_model(model, weights=weights, device=device, preprocess=preprocess)
    opts = IndexOptions(
        workers=workers,
        batch_size=batch_size,
        studies_per_task=studies_per_task,
        engine=engine,
        overwrite=overwrite,
        retry_errors=retry_errors,
        anonymise_paths=anonymise_paths,
        wait=wait,
        progress=not quiet,
        ray_address=ray_address,
        encoders=encoders,
        policy=policy,
    )  # type: ignore[arg-type]
    summary = index_archive(source, out, m, opts)
    if as_json:
        say_json(json.dumps(summary.to_dict()))
    else:
        for line in summary.lines():
            say(line)
    if not no_index:
        _build_index(out, quiet or as_json)


def _source(
    archive: str,
    auth_file: Path | None,
    since: str | None,
    modality: str | None,
    query: list[str],
    retries: int,
    retry_backoff: float,
    limits: Limits | None = None,
) -> Any:
    """The archive folder or manifest (a Path), or the DICOMweb server (a DicomWebSource) with `limits` (a
    `radretrieve.archive.dicomweb.Limits`; None: the defaults)."""
    from radretrieve.archive.dicomweb import Limits, Retry, is_dicomweb, parse_source, resolve_auth
    from radretrieve.foundation.errors import RadRetrieveError

    if is_dicomweb(archive):
        from radretrieve.archive.dicomweb.listing import probe

        retry = Retry(tries=retries + 1, backoff_s=retry_backoff)
        limits = limits if limits is not None else Limits()
        source = parse_source(archive, resolve_auth(auth_file), since, modality, query, retry, limits)
        probe(source)  # an unreachable server or bad credentials: one line now, not after loading the model
        return source
    used = [
        flag
        for flag, value in (
            ("--since", since),
            ("--modality", modality),
            ("--query", query),
            ("--auth-file", auth_file),
        )
        if value
    ]
    if used:
        raise RadRetrieveError(f"{used[0]} applies to DICOMweb archives (dicomweb+http://...) only")
    if not Path(archive).exists():
        raise RadRetrieveError(f"{archive}: archive not found")
    return Path(archive)


def _limits(archive: str, max_response_mb: float, max_listed: int, request_deadline: float) -> Limits | None:
    """The DICOMweb bounds of the options (a frozen, checked `Limits`); None for a folder or manifest."""
    from radretrieve.archive.dicomweb import Limits, is_dicomweb

    return Limits.from_options(max_response_mb, max_listed, request_deadline) if is_dicomweb(archive) else None


def _build_index(out: Path, quiet: bool) -> None:
    """Build or update the FAISS indexes of the out dir (incremental when only new shards were added)."""
    from indexers.build import build_indexes
    from radretrieve.cli.search_cmd import echo_indexes

    infos = build_indexes(out)
    if not quiet:
        echo_indexes(infos)


def register(app: typer.Typer) -> None:
    app.command("index")(index)
