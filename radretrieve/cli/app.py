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
    """Run the command line: known errors become one line on stderr and exit code 1 (raises `SystemExit` with the
    code, so that a caller in the same process goes on)."""
    code = _run()
    if code:
        sys.exit(code)


def entry() -> None:
    """The console script and `python -m radretrieve`: `main`, then the process ends at once (`_exit_now`)."""
    from radretrieve.models.open_clip_import import import_lean

    import_lean()  # this process is ours: open_clip without transformers where the model needs none
    _exit_now(_run())


def _run() -> int:
    """Run the command; the exit code of every outcome it handles (others propagate: Ctrl-C, SIGTERM's 143)."""
    from radretrieve.foundation.errors import RadRetrieveError

    try:
        code = app(standalone_mode=False)
        # click returns (does not raise) the code of a `typer.Exit` in non-standalone mode
        return code if isinstance(code, int) else 0
    except RadRetrieveError as exc:
        if _state["debug"]:
            _traceback_and_exit()
        error_line(str(exc))
        return 1
    except typer.Exit as exc:  # raised by commands to end with a code
        return exc.exit_code
    except typer.Abort:
        say("aborted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one error boundary
        if _is_usage_error(exc):
            exc.show(file=PrintableWriter(sys.stderr))  # type: ignore[attr-defined] - the value may be a file name
            return exc.exit_code  # type: ignore[attr-defined]
        if _state["debug"]:
            _traceback_and_exit()
        error_line(f"{type(exc).__name__}: {exc} (rerun with --debug for a traceback)")
        return 1


def _exit_now(code: int) -> None:
    """End the process with `code` once the exit handlers have run, without tearing down every module.

    After torch and open_clip were imported, the interpreter's final clean-up (freeing tens of thousands of
    modules' objects one by one) takes 1-3 s on a 2-core machine, longer than many commands' own work. Everything
    this process writes is written and closed by then (radretrieve.foundation.fileio); the exit handlers
    (reader processes, logging) run as in a normal exit. A thread still running, e.g. one a library started
    and its owner did not join, gets the normal exit instead, which waits for it."""
    import atexit
    import os
    import threading

    others = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    if others:
        sys.exit(code)
    atexit._run_exitfuncs()  # the handlers a normal exit runs (multiprocessing, concurrent.futures, logging)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: a normal exit would lose the same output
            code = code or 120
    _flush_c_streams()
    os._exit(code)


def _flush_c_streams() -> None:
    """Flush the C library's stdio buffers, as the normal exit does: what a native library (FAISS, OpenMP,
    torch) wrote with printf sits there, in full when stdout is a pipe or a file, and `os._exit` drops it."""
    import ctypes

    try:
        ctypes.CDLL(None).fflush(None)  # NULL: every open C stream
    except (OSError, AttributeError):  # no C library to ask (not a POSIX build): nothing buffered we know of
        pass


def _is_usage_error(exc: Exception) -> bool:
    return hasattr(exc, "show") and hasattr(exc, "exit_code")


def _traceback_and_exit() -> None:
    """--debug: the full traceback, escaped like every other line (its message may hold a file name)."""
    import traceback

    PrintableWriter(sys.stderr).write(traceback.format_exc())
    sys.exit(1)
