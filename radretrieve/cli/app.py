"""The `radretrieve` Typer app: thin commands over plain functions, one error boundary.

Command modules live beside this file; each defines `register(app)`. Nothing heavy (torch, open_clip,
faiss) is imported at module level anywhere under `radretrieve.cli`, so `--help` answers fast.
Data goes to stdout; progress and logs go to stderr.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from radretrieve.cli.output import PrintableWriter, configure_logging, error_line, say

COMMAND_MODULES = (
    "data_cmd",
    "models_cmd",
    "index_cmd",
    "listen_cmd",
    "info_cmd",
    "synth_cmd",
    "bench_cmd",
    "convert_cmd",
    "train_cmd",
    "demo_cmd",
    "search_cmd",
    "serve_cmd",
    "embed_cmd",
    "classify_cmd",
    "verify_cmd",
)

app = typer.Typer(
    name="radretrieve",
    help="RadCLIP radiology retrieval: embed archives into Parquet shards, index with FAISS, search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more detail to stderr."),
) -> None:
    _state["debug"] = debug
    from radretrieve.models.provenance import reset_warnings

    reset_warnings()  # the untrained-model warning: once per command run, also for runs in one process
    configure_logging(logging.DEBUG if verbose else logging.INFO)  # every log line escaped for the terminal
    if not verbose:  # faiss logs which SIMD build it loaded at INFO on every start
        logging.getLogger("faiss").setLevel(logging.WARNING)
        logging.getLogger("dicomweb_client").setLevel(logging.WARNING)  # a line per QIDO/WADO request
        # a rejected or failed association is logged in several lines: radretrieve reports it in one
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)


for _name in COMMAND_MODULES:
    importlib.import_module(f"radretrieve.cli.{_name}").register(app)


def main() -> None:
    """Console-script entry point: known errors become one line on stderr and exit code 1."""
    from radretrieve.foundation.errors import RadRetrieveError

    try:
        code = app(standalone_mode=False)
        # click returns (does not raise) the code of a `typer.Exit` in non-standalone mode
        if isinstance(code, int) and code:
            sys.exit(code)
    except RadRetrieveError as exc:
        if _state["debug"]:
            _traceback_and_exit()
        error_line(str(exc))
        sys.exit(1)
    except typer.Exit as exc:  # raised by commands to end with a code
        sys.exit(exc.exit_code)
    except typer.Abort:
        say("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one error boundary
        if _is_usage_error(exc):
            exc.show(file=PrintableWriter(sys.stderr))  # type: ignore[attr-defined] - the value may be a file name
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        if _state["debug"]:
            _traceback_and_exit()
        error_line(f"{type(exc).__name__}: {exc} (rerun with --debug for a traceback)")
        sys.exit(1)


def _is_usage_error(exc: Exception) -> bool:
    return hasattr(exc, "show") and hasattr(exc, "exit_code")


def _traceback_and_exit() -> None:
    """--debug: the full traceback, escaped like every other line (its message may hold a file name)."""
    import traceback

    PrintableWriter(sys.stderr).write(traceback.format_exc())
    sys.exit(1)
