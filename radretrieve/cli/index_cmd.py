"""`radretrieve index ARCHIVE --out DIR`: the bulk indexing job (thin: `radretrieve.application.indexing`)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import typer

from radretrieve.application.indexing import AUTH_ENV, check_timings_path, write_timings
from radretrieve.cli.options import MODEL_HELP, PREPROCESS_HELP
from radretrieve.cli.output import say, say_json

KEEP_PATHS_WARNING = (
    "warning: --keep-paths: file and folder names are stored in shards and errors/ and shown in search output; "
    "names can carry patient data"
)


def index(
    archive: str = typer.Argument(
        ...,
        help="Archive folder, a manifest (CSV/Parquet/JSONL), dicomweb+http(s)://HOST:PORT/PATH or "
        "dimse://CALLED_AET@HOST:PORT (a PACS).",
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
    since: str | None = typer.Option(None, "--since", help="DICOMweb, DIMSE: studies with StudyDate on or after DATE."),
    modality: str | None = typer.Option(
        None, "--modality", help="DICOMweb, DIMSE: series of these modalities (CT,MR)."
    ),
    query: list[str] = typer.Option(
        [], "--query", help="DICOMweb, DIMSE: a listing match KEY=VALUE (DICOM keyword), repeatable."
    ),
    auth_file: Path | None = typer.Option(
        None, "--auth-file", help=f"DICOMweb: credentials ('basic USER:PASSWORD' or 'bearer TOKEN'); else ${AUTH_ENV}."
    ),
    retries: int = typer.Option(
        4, "--retries", help="DICOMweb, DIMSE: retries of a failed request (network, 5xx, association aborted)."
    ),
    retry_backoff: float = typer.Option(
        0.5, "--retry-backoff", help="DICOMweb, DIMSE: seconds before the first retry, doubled for each next one."
    ),
    max_response_mb: float = typer.Option(
        1024.0, "--max-response-mb", help="DICOMweb, DIMSE: largest answer accepted (an instance, a page), in MiB."
    ),
    max_listed: int = typer.Option(
        1_000_000, "--max-listed", help="DICOMweb, DIMSE: most entries one listing query may return (all its pages)."
    ),
    request_deadline: float = typer.Option(
        600.0, "--request-deadline", help="DICOMweb, DIMSE: seconds one request (or association) may take, end to end."
    ),
    calling_aet: str | None = typer.Option(
        None, "--calling-aet", help="DIMSE: our AE title, known to the PACS (default RADRETRIEVE)."
    ),
    move_port: int | None = typer.Option(
        None, "--move-port", help="DIMSE: C-MOVE to our storage SCP on this port instead of C-GET."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bars and no INFO log lines: warnings and errors only."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    timings: Path | None = typer.Option(
        None,
        "--timings",
        help="Write where the time went to this JSON file: the wall-clock time each start-up step ended and the "
        "job's seconds per stage (docs/guide/speed.md). Refused, before the job, inside the archive or the out dir "
        "or over a file that is not an earlier timings file.",
    ),
) -> None:
    """Embed an archive into Parquet shards (resumable: rerun to continue after a crash), then build the index."""
    marks = {"command": time.time()}  # after the interpreter started and the CLI was imported
    from radretrieve.application.indexing import (
        DicomWebOptions,
        DimseOptions,
        IndexOptions,
        SelectionOptions,
        build_out_dir_index,
        prepare_index,
        run_index_job,
        summary_json,
    )

    if quiet:  # the root logger: the job's, the index build's and captured library warnings alike
        logging.getLogger().setLevel(logging.WARNING)
    options = IndexOptions(
        model=model,
        weights=weights,
        preprocess=preprocess,
        device=device,
        workers=workers,
        batch_size=batch_size,
        studies_per_task=studies_per_task,
        engine=engine,  # type: ignore[arg-type]  # checked by prepare_index
        ray_address=ray_address,
        encoders=encoders,
        overwrite=overwrite,
        anonymise_paths=anonymise_paths,
        retry_errors=retry_errors,
        wait=wait,
        build_index=not no_index,
        progress=not quiet,
        selection=SelectionOptions(tuple(include), tuple(exclude), selection, reports, scrubber, follow_external_links),
        dicomweb=DicomWebOptions(
            auth_file,
            since,
            modality,
            tuple(query),
            retries,
            retry_backoff,
            max_response_mb,
            max_listed,
            request_deadline,
        ),
        dimse=DimseOptions(calling_aet, move_port),
    )
    options.check()
    if timings is not None:  # before the job: the file is written only at its end
        check_timings_path(timings, archive, out)
    if not anonymise_paths:
        say(KEEP_PATHS_WARNING, err=True)
    job = prepare_index(archive, options)  # bad options fail here, before torch and the model load
    marks["prepared"] = time.time()
    summary = run_index_job(job, out, marks)
    if as_json:
        say_json(json.dumps(summary_json(summary, out)))
    else:
        for line in summary.lines():
            say(line)
    if options.build_index:
        infos = build_out_dir_index(out)
        if not (quiet or as_json):
            from radretrieve.cli.search_cmd import echo_indexes

            echo_indexes(infos)
    if timings is not None:
        marks["end"] = time.time()
        write_timings(timings, marks, summary.stage_seconds)


def register(app: typer.Typer) -> None:
    app.command("index")(index)
