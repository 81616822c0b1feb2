"""`--where` filters that would turn data into a message, or take the process's memory: refused before they run.

The catalog's rows: synthetic shards whose reports say "report of study-NNNN" and an errors/ record whose
message is a marker; neither may appear in any answer to a filter.
"""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from radretrieve.outdir.catalog import BadWhere, Catalog
from radretrieve.testing.shards import SyntheticItems, write_errors, write_out_dir
from tests.serve_env import REPO

DIM = 8
ERROR_MARKER = "ERRMARK-visible-only-in-the-errors-view"


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    path = tmp_path_factory.mktemp("where_limits")
    write_out_dir(path, [SyntheticItems.random(12, DIM, seed=0, kinds=("volume", "report"))], DIM)
    write_errors(path, [{"source": "a.dcm", "stage": "read", "error_type": "ReadError", "message": ERROR_MARKER}])
    return path


def _refused(cat: Catalog, view: str, where: str) -> str:
    with pytest.raises(BadWhere) as err:
        cat.candidates(view, where)
    message = str(err.value)
    assert message.startswith("bad --where: ") and "\n" not in message, message
    assert "report of" not in message and "study-" not in message and ERROR_MARKER not in message, message
    return message


@pytest.mark.parametrize(
    "where",
    [
        "error(text) IS NULL",
        "error((SELECT string_agg(message, '|') FROM errors)) IS NULL",
        "error((SELECT min(message) FROM errors)) IS NULL",
        "main.error(text) IS NULL",
        "ERROR(text) IS NULL",
        "write_log(text) IS NULL",
    ],
)
def test_functions_that_turn_data_into_a_message_are_refused(out, where):
    message = _refused(Catalog(out), "reports", where)
    assert "is not allowed in a filter" in message


@pytest.mark.parametrize(
    "where",
    [
        "text::DATE IS NULL",  # duckdb: invalid date field format: "report of study-..."
        "json_extract(text, '$.a') IS NULL",  # Malformed JSON ... Input: "report of study-..."
        "strptime(text, '%Y') IS NULL",
        "from_base64(text) IS NULL",
        "(SELECT min(message) FROM errors)::INTEGER = 1",
        "(SELECT min(message) FROM errors)::JSON IS NULL",
    ],
)
def test_errors_while_reading_rows_say_their_kind_only(out, where):
    """duckdb's message for these quotes the row's value in double quotes; the filter gets the error's kind."""
    message = _refused(Catalog(out), "reports", where)
    assert "failed while reading the rows" in message and "Error)" in message


def test_an_error_about_the_filter_text_still_names_it(out):
    assert "no_such_column" in _refused(Catalog(out), "items", "no_such_column = 1")


@pytest.mark.parametrize(
    "where",
    [
        "length(repeat('x', 500000000)) > 0",
        "len(range(60000000)) > 0",
        "len(generate_series(1, 60000000)) > 0",
        "length(lpad('x', 500000000, 'y')) > 0",
        "length(rpad('x', 500000000, 'y')) > 0",
        "len(list_resize([1], 60000000)) > 0",
        "length(printf('%500000000s', 'x')) > 0",
        "length(replace(replace(text, 'o', text), 'o', text)) > 0",
        "(SELECT length(string_agg(a.text, '')) FROM reports a, reports b) > 0",
        "(SELECT len(list(a.text)) FROM reports a, reports b) > 0",
    ],
)
def test_functions_that_build_values_of_a_chosen_size_are_refused(out, where):
    message = _refused(Catalog(out), "reports", where)
    assert "is not allowed in a filter" in message


def test_the_connection_has_a_memory_limit_and_bounded_threads(out):
    cat = Catalog(out, memory_mb=300)
    limit = cat.sql("SELECT current_setting('memory_limit')")[0][0]
    assert limit.replace(" ", "") in ("300.0MB", "286.1MiB"), limit  # duckdb shows it in its own unit
    assert 1 <= int(cat.sql("SELECT current_setting('threads')")[0][0]) <= 4


PROBE = """
import resource, sys
from radretrieve.outdir.catalog import BadWhere, Catalog
cat = Catalog(sys.argv[1])
for where in sys.argv[2:]:
    try:
        cat.count("items", where)
        print("ran", where)
    except BadWhere as exc:
        print("refused", exc)
print("peak_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_memory_filters_leave_the_process_small(out):
    """In a process of its own: the peak RSS after the attacker's filters stays near that of a plain one
    (unrefused, `repeat('x', 500000000)` alone took a process to 1 GB, `range(60000000)` to 2 GB)."""
    attacks = ["length(repeat('x', 500000000)) > 0", "len(range(60000000)) > 0"]

    def peak(*wheres: str) -> tuple[int, str]:
        cmd = [sys.executable, "-c", PROBE, str(out), *wheres]
        # a ceiling of 3 GB of address space, so that a regression cannot take the machine's memory
        limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # noqa: E731
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120, preexec_fn=limit)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.split("peak_mb")[-1]), proc.stdout

    base, _ = peak("true")
    attacked, text = peak(*attacks)
    assert text.count("refused bad --where: function") == 2, text
    assert attacked < base + 150, (base, attacked)
