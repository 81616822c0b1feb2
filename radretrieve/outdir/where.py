"""`--where` filters: one boolean SQL expression over the catalog's views, and nothing else.

A filter is checked on duckdb's own parse tree (`json_serialize_sql`) before it runs:

- the statement `SELECT item_id FROM <view> WHERE (<filter>)` must parse to exactly one plain SELECT whose
  shape equals that of `... WHERE (true)`: a filter that closes the parenthesis to add a UNION, a GROUP BY,
  an ORDER BY or a second statement is refused (a `;` inside a string literal is fine);
- inside the filter every table is one of the catalog's views (subqueries over them are allowed), no table
  function (`read_csv`, `glob`, `query`, ...), no function that reads settings or the environment, no
  function that turns data into an error or log message (`error`, `write_log`: its message would carry row
  text to the client), and no function that builds a value whose size the filter chooses (`repeat('x', 1e9)`,
  `range(6e7)`, `lpad`, nested `replace`, `list` / `string_agg` over a join): those allocate outside
  duckdb's memory limit (measured: `length(repeat('x', 500000000)) > 0` took a process to 1 GB with a 256 MB
  limit set), so they are refused before anything runs.

The connection is also locked to the shard and error files and runs under a memory limit
(radretrieve.outdir.catalog), queries run under a time limit, and error messages never echo data: a parse or
binder error (about the filter's own text) keeps duckdb's line with quoted text blanked; an error raised
while rows are read says only its kind (`error_kind`), since its message may quote a value of a row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from radretrieve.foundation.errors import RadRetrieveError

VIEWS = frozenset({"items", "reports", "errors", "predictions"})  # what a filter may read
# settings and the environment: what the filter may not read
READS_SETTINGS = frozenset({"current_setting", "getenv", "current_schemas", "current_database", "pragma"})
# turn their argument (row data) into an error or log message
TO_MESSAGE = frozenset({"error", "write_log"})
# build a value whose size an argument chooses, or gather many rows' values into one: allocated outside the
# memory limit, so one call can take the process's memory
AMPLIFIERS = frozenset(
    {"repeat", "range", "generate_series", "lpad", "rpad", "list_resize", "array_resize", "printf", "format",
     "bar", "bitstring", "replace", "regexp_replace", "list", "array_agg", "string_agg", "group_concat",
     "listagg", "histogram", "bitstring_agg", "unnest", "enum_range"}
)  # fmt: skip
DENIED_FUNCTIONS = READS_SETTINGS | TO_MESSAGE | AMPLIFIERS
LOCATION_KEYS = frozenset({"query_location", "query_location_length"})
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 1024  # duckdb memory limit of a catalog connection (joins, sorts, aggregates of a filter)
MAX_THREADS = 4  # duckdb threads of a catalog connection (its default is every core, per query)


class BadWhere(RadRetrieveError):
    """A user `--where` filter is not one allowed boolean expression over the catalog's views."""


def one_line(message: str) -> str:
    """duckdb's message on one line, quoted text blanked so that no value of any file can leak through it."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    first = lines[0] if lines else "error"
    return re.sub(r"'[^']*'", "'…'", first)


def error_kind(exc: Exception) -> str:
    """What a duckdb error raised while rows are read may say: its kind only ("Conversion Error"), never its
    message, which can quote a row's value (`error(text)`, a failed cast, malformed JSON)."""
    name = type(exc).__name__.removesuffix("Exception")
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name) or "Query"
    return f"the filter failed while reading the rows ({words} Error)"


def _tree(con: Any, sql: str) -> dict[str, Any]:
    # fetchall: the result is finished, so the relation API (`con.sql`) can run next on the same cursor
    return json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])


def _strip_locations(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_locations(v) for k, v in node.items() if k not in LOCATION_KEYS}
    if isinstance(node, list):
        return [_strip_locations(v) for v in node]
    return node


def _walk(node: Any):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _check_node(node: dict[str, Any]) -> None:
    kind = node.get("type")
    if kind == "TABLE_FUNCTION":
        raise BadWhere("bad --where: table functions are not allowed (a filter reads only the catalog's views)")
    if kind == "BASE_TABLE":
        name = str(node.get("table_name", ""))
        if name not in VIEWS or node.get("schema_name") or node.get("catalog_name"):
            raise BadWhere(f"bad --where: table {name!r} is not one of the views {', '.join(sorted(VIEWS))}")
    if node.get("class") == "FUNCTION" and str(node.get("function_name", "")).lower() in DENIED_FUNCTIONS:
        raise BadWhere(f"bad --where: function {node['function_name']}() is not allowed in a filter")


def check_where(con: Any, view: str, where: str) -> str:
    """The stripped filter if it is one allowed boolean expression over `view`, else `BadWhere` (one line)."""
    frag = where.strip()
    if not frag:
        raise BadWhere("bad --where: empty expression")
    import duckdb

    sql = f"SELECT item_id FROM {view} WHERE ({frag})"
    try:
        parsed = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise BadWhere(f"bad --where: {one_line(str(exc))}") from exc
    if len(parsed) != 1 or parsed[0].type != duckdb.StatementType.SELECT:
        raise BadWhere("bad --where: give one boolean expression (a ';' may appear only inside quotes)")
    tree = _tree(con, sql)
    if tree.get("error"):
        raise BadWhere(f"bad --where: {one_line(tree.get('error_message', 'syntax error'))}")
    node = tree["statements"][0]["node"]
    template = _tree(con, f"SELECT item_id FROM {view} WHERE (true)")["statements"][0]["node"]
    if _shape(node) != _shape(template):
        raise BadWhere("bad --where: the filter must be one boolean expression (no UNION, GROUP BY, ORDER BY ...)")
    for inner in _walk(node.get("where_clause")):
        _check_node(inner)
    return frag


def filter_query(con: Any, view: str, select: str, where: str | None, kinds: Sequence[str] = (), tail: str = "") -> str:
    """`SELECT <select>` over the rows of `view` of the given kinds that pass the user filter `where`, then `tail`
    (e.g. an ORDER BY): the query the catalog runs for a `--where`.

    The filter can only narrow: the kind restriction sits in a subquery the filter cannot reach, so a filter
    such as `false) OR (true` (which, pasted after `kind IN (...) AND`, would have undone `--kind` by operator
    precedence) selects at most every row of that subquery. And what runs is checked as well as the filter:
    the composed statement must parse to the same tree as the one composed with the filter `true`, except for
    the filter's own WHERE clause, so no text of the filter (a comment, a parenthesis) changes the rest."""
    inner = f"SELECT * FROM {view}"
    if kinds:
        inner += f" WHERE kind IN ({', '.join(_sql_str(k) for k in kinds)})"
    head = f"SELECT {select} FROM ({inner}) AS {view}"
    if where is None:
        return f"{head} {tail}".strip()
    frag = check_where(con, view, where)
    sql = f"{head} WHERE ({frag}) {tail}".strip()
    intended = _tree(con, f"{head} WHERE (true) {tail}".strip())["statements"][0]["node"]
    composed = _tree(con, sql)
    if (
        composed.get("error")
        or len(composed["statements"]) != 1
        or _shape(composed["statements"][0]["node"]) != _shape(intended)
    ):
        raise BadWhere("bad --where: the filter must be one boolean expression (it changed the query around it)")
    return sql


def _shape(node: dict[str, Any]) -> Any:
    """A SELECT's parse tree without its WHERE clause and source positions (what a filter must not change)."""
    return _strip_locations({k: v for k, v in node.items() if k != "where_clause"})


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
