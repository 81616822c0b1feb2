"""`radretrieve serve` end to end: a real server on a free 127.0.0.1 port, real HTTP requests.

Expected values never come from the service: hits are compared with the CLI's `--format json` (run in
process through Typer), rows with the duckdb catalog, thumbnails with `contact_sheet.thumbnail` decoded from
the PNG by Pillow. The out dir (8 synthetic studies, radclip-tiny overfitted on them), the plain server and the
token server (--workers 2, --no-where) are session fixtures in tests/conftest.py; the burned-in out dir is
built here. The Host check, sessions, throttling and credential spellings: tests/test_serve_security.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from typer.testing import CliRunner

from radretrieve.cli.app import app
from radretrieve.testing.dicom import phi_strings
from tests.serve_env import REPO, TOKEN, Server, free_port, fresh_address

runner = CliRunner()
QUERY = "CT of the abdomen with a hypodense lesion"


def cli_json(*args: str) -> dict:
    """The CLI's `--format json` result of one query (computed apart from the server)."""
    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    (one,) = json.loads(result.stdout)
    return one


def cli_error(*args: str) -> str:
    """The CLI's one-line error for ARGS (without the `error: ` prefix)."""
    proc = subprocess.run([sys.executable, "-m", "radretrieve", *args], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    return proc.stderr.strip().splitlines()[-1].removeprefix("error: ")


def assert_same_result(got: dict, want: dict) -> None:
    """Same query, same hits in the same order with the same fields in the same order; scores (and the vector
    scores of hybrid evidence) to 1e-5 (text queries may be encoded in a batch with others)."""
    assert got["query"] == want["query"]
    assert [list(h) for h in got["hits"]] == [list(h) for h in want["hits"]]

    def strip(hits: list[dict]) -> list[dict]:
        out = [{k: v for k, v in h.items() if k != "score"} for h in hits]
        for h in out:
            if "evidence" in h:
                h["evidence"] = {k: v for k, v in h["evidence"].items() if k != "vector_score"}
        return out

    def scores(hits: list[dict]) -> list[float]:
        return [s for h in hits for s in (h["score"], h.get("evidence", {}).get("vector_score")) if s is not None]

    assert strip(got["hits"]) == strip(want["hits"])
    np.testing.assert_allclose(scores(got["hits"]), scores(want["hits"]), atol=1e-5)


def get(server, path: str, **params):
    with server.client() as client:
        return client.get(path, params=params)


def get_json(server, path: str, **params) -> dict:
    response = get(server, path, **params)
    assert response.status_code == 200, response.text
    return response.json()


# -- health, info, OpenAPI ---------------------------------------------------------------------------------
def test_health_says_ready_with_the_index_counts(server, serve_env):
    health = get_json(server, "/api/health")
    n = len(serve_env["items"])
    assert health["status"] == "ready" and health["items"] == n and health["reports"] == n
    assert health["fingerprint"] == serve_env["model"].fingerprint


def test_info_is_what_radretrieve_info_says(server, serve_env):
    from radretrieve.application.info import collect_info

    got = get_json(server, "/api/info")
    now = collect_info(serve_env["out"])
    assert got.pop("out_dir") == serve_env["out"].name  # the folder by name: the server's paths are not shown
    now.pop("out_dir")
    # The server's info is the out dir as it loaded it at start: equal to now only because no test of the
    # session writes the shared out dir (tests/test_search_cli.py rebuilds a copy: a rebuild of this one once
    # changed index.json by 2 bytes after the server had started)
    differing = sorted(k for k in now if got.get(k) != now[k])
    assert differing == [], {k: (got.get(k), now[k]) for k in differing}


def test_openapi_document_lists_the_endpoints_and_no_cdn_pages(server):
    doc = get_json(server, "/openapi.json")
    for path in ("/api/search", "/api/similar", "/api/reports", "/api/item/{item_id}", "/api/thumbnail/{item_id}.png"):
        assert path in doc["paths"], path
    assert {"health", "info"} <= {p.rsplit("/", 1)[-1] for p in doc["paths"]}
    assert get(server, "/docs").status_code == 404  # Swagger UI would load scripts from a CDN


# -- the same hits as the CLI --------------------------------------------------------------------------------
SEARCHES = [
    ({}, []),
    ({"where": "modality = 'CT'"}, ["--where", "modality = 'CT'"]),
    ({"kind": "image"}, ["--kind", "image"]),
    ({"modality": "CT", "body_part": "ABDOMEN"}, ["--where", "modality = 'CT' AND body_part = 'ABDOMEN'"]),
]


@pytest.mark.parametrize("params,cli_args", SEARCHES, ids=["plain", "where", "kind", "modality+body_part"])
def test_search_hits_equal_the_cli(server, serve_env, params, cli_args):
    got = get_json(server, "/api/search", q=QUERY, k=6, **params)
    want = cli_json("search", QUERY, "--index", str(serve_env["out"]), "-k", "6", *cli_args)
    assert len(want["hits"]) >= 1
    assert_same_result(got, want)


def _study_refs(serve_env) -> dict[str, str]:
    volume = next(i for i in serve_env["items"] if i.kind == "volume")
    return {"study key": volume.study_key, "item id": str(volume.item_id)}


@pytest.mark.parametrize("ref", ["study key", "item id"])
@pytest.mark.parametrize("endpoint,k", [("similar", 5), ("reports", 4)])
def test_similar_and_reports_equal_the_cli(server, serve_env, ref, endpoint, k):
    study = _study_refs(serve_env)[ref]
    got = get_json(server, f"/api/{endpoint}", study=study, k=k)
    want = cli_json(endpoint, study, "--index", str(serve_env["out"]), "-k", str(k))
    assert len(want["hits"]) == k
    assert_same_result(got, want)


def test_similar_with_kind_and_where_equals_the_cli(server, serve_env):
    study = _study_refs(serve_env)["study key"]
    got = get_json(server, "/api/similar", study=study, k=10, kind="volume", where="slice_count >= 1")
    args = ["--kind", "volume", "--where", "slice_count >= 1"]
    assert_same_result(got, cli_json("similar", study, "--index", str(serve_env["out"]), "-k", "10", *args))


def test_concurrent_requests_give_the_sequential_answers(server, serve_env):
    """16 clients at once, every query different (k, where, kind): each gets exactly its own answer."""
    volume = next(i for i in serve_env["items"] if i.kind == "volume")
    requests = []
    for i, item in enumerate(serve_env["items"]):
        text = " ".join(item.text.split()[: 6 + i])
        requests.append(("/api/search", {"q": text, "k": 1 + i % 7}))
        requests.append(("/api/search", {"q": text, "k": 8, "where": f"slice_count >= {i % 3}", "kind": "volume"}))
        requests.append(("/api/similar", {"study": item.study_key, "k": 1 + i % 5}))
        requests.append(("/api/reports", {"study": str(item.item_id), "k": 2 + i % 3}))
    requests.append(("/api/similar", {"study": volume.study_key, "k": 3, "modality": "CT"}))
    sequential = [get_json(server, path, **params) for path, params in requests]
    with server.client() as client:

        def fetch(req):
            response = client.get(req[0], params=req[1])
            assert response.status_code == 200, response.text
            return response.json()

        with ThreadPoolExecutor(16) as pool:
            for _ in range(2):
                concurrent = list(pool.map(fetch, requests))
                for got, want in zip(concurrent, sequential):
                    assert_same_result(got, want)


# -- items and thumbnails -------------------------------------------------------------------------------------
def _catalog_row(out, item_id: int) -> dict:
    from radretrieve.outdir.catalog import Catalog

    cat = Catalog(out)
    try:
        for view in ("items", "reports"):
            cur = cat.con.execute(f"SELECT * FROM {view} WHERE item_id = ?", [item_id])
            rows = cur.fetchall()
            if rows:
                row = dict(zip([d[0] for d in cur.description], rows[0]))
                row["labels"] = json.loads(row["labels"]) if row["labels"] else {}
                return row
    finally:
        cat.close()
    raise AssertionError(f"{item_id} not in the catalog")


def test_item_is_the_catalog_row_without_embedding(server, serve_env):
    from radretrieve.foundation.ids import item_id as make_id

    volume = next(i for i in serve_env["items"] if i.kind == "volume")
    report_id = make_id(f"report:{volume.study_key}")
    for item_id in (volume.item_id, report_id):
        got = get_json(server, f"/api/item/{item_id}")
        want = _catalog_row(serve_env["out"], item_id)
        assert "embedding" not in got and set(got) == set(want)
        np.testing.assert_allclose(got.pop("spacing") or [], want.pop("spacing") or [], rtol=1e-6)
        assert got == want
    assert get_json(server, f"/api/item/{report_id}")["kind"] == "report"


def png_array(content: bytes) -> np.ndarray:
    from PIL import Image

    image = Image.open(io.BytesIO(content))
    assert image.format == "PNG"
    return np.asarray(image.convert("L"))


@pytest.mark.parametrize("kind", ["volume", "image", "report"])
def test_thumbnail_is_the_windowed_png_of_the_item(server, serve_env, kind):
    from radretrieve.application.contact_sheet import GAP, THUMB_HEIGHT, THUMB_SLICES, thumbnail
    from radretrieve.foundation.ids import item_id as make_id

    item = next(i for i in serve_env["items"] if i.kind == ("volume" if kind == "report" else kind))
    item_id = make_id(f"report:{item.study_key}") if kind == "report" else item.item_id
    response = get(server, f"/api/thumbnail/{item_id}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    got = png_array(response.content)
    # a report is drawn as its study's first item (the study's items sorted by id)
    first = min((i for i in serve_env["items"] if i.study_key == item.study_key), key=lambda i: i.item_id)
    want, found = thumbnail(serve_env["root"], (first if kind == "report" else item).source)
    assert found and got.shape == want.shape and got.shape[0] == THUMB_HEIGHT
    np.testing.assert_array_equal(got, want)
    if kind == "volume":  # three sampled slices side by side, each a black gap apart
        assert (got[:, :] == 0).all(axis=0).sum() >= GAP * (THUMB_SLICES - 1)
        assert got.shape[1] > THUMB_SLICES * THUMB_HEIGHT * 0.5


def test_thumbnails_only_for_ids_in_the_index(server, serve_env):
    assert get(server, "/api/thumbnail/123.png").status_code == 404
    for path in ("/api/thumbnail/..%2F..%2Fetc%2Fpasswd.png", "/api/thumbnail/%2Fetc%2Fpasswd.png"):
        response = get(server, path)
        assert response.status_code in (404, 422) and response.headers["content-type"] == "application/json"


# -- errors: the CLI's one-line messages, 4xx -----------------------------------------------------------------
ERRORS = [
    ("/api/search", {"q": "x", "where": "no_such_column = 1"}, 400, "bad --where: "),
    ("/api/search", {"q": "x", "where": "modality = 'CT'; DROP VIEW items"}, 400, "bad --where: Parser Error"),
    ("/api/search", {"q": "x", "where": "true) UNION ALL SELECT 1 --"}, 400, "bad --where: "),
    ("/api/search", {"q": "x", "where": "EXISTS (SELECT 1 FROM read_text('/etc/hostname'))"}, 400, "bad --where: "),
    ("/api/search", {"q": "x", "k": 0}, 400, "-k must be between 1 and 10000, got 0"),
    ("/api/search", {"q": "x", "k": 10001}, 400, "-k must be between 1 and 10000, got 10001"),
    ("/api/search", {"q": "x", "kind": "report"}, 400, "--kind 'report'"),
    ("/api/search", {"q": "   "}, 400, "empty query text"),
    ("/api/search", {"q": "x", "k": "ten"}, 422, "k: "),
    ("/api/search", {}, 422, "q: "),
    ("/api/similar", {"study": "no-such-study"}, 404, "'no-such-study' is neither an item id nor a study key"),
    ("/api/reports", {"study": "12345"}, 404, "'12345' is neither an item id nor a study key"),
    ("/api/similar", {"study": "s0-00000", "k": -3}, 400, "-k must be between"),
    ("/api/reports", {"study": "s0-00000", "where": "nope ="}, 400, "bad --where: "),
    ("/api/item/123", {}, 404, "item 123 is not in the index"),
    ("/api/item/abc", {}, 422, "item_id: "),
]


@pytest.mark.parametrize("path,params,status,message", ERRORS, ids=[f"{e[0]}-{e[2]}-{e[3][:20]}" for e in ERRORS])
def test_errors_are_one_line_json_with_a_4xx_status(server, serve_env, path, params, status, message):
    response = get(server, path, **params)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"]
    error = response.json()["error"]
    assert error.startswith(message) and "\n" not in error, error
    assert str(serve_env["out"]) not in error and str(REPO) not in error  # no server paths


@pytest.mark.parametrize(
    "params,cli_args",
    [({"where": "no_such_column = 1"}, ["--where", "no_such_column = 1"]), ({"k": 0}, ["-k", "0"])],
    ids=["where", "k"],
)
def test_error_messages_are_the_clis(server, serve_env, params, cli_args):
    got = get(server, "/api/search", q="x", **params).json()["error"]
    assert got == cli_error("search", "x", "--index", str(serve_env["out"]), *cli_args)


def test_a_path_is_never_read_as_a_study(server, serve_env):
    """The CLI encodes a path on the fly; the service must not touch the file system for a request."""
    path = serve_env["arch"] / "s0-00001" / "mr.nii.gz"
    assert path.is_file()
    response = get(server, "/api/similar", study=str(path))
    assert response.status_code == 404 and str(path) in response.json()["error"]


# -- nothing in the log or in a response carries what the user typed ----------------------------------------
def test_access_log_has_routes_and_statuses_not_queries(server, serve_env):
    phi = phi_strings()
    typed = "Doe^Jane MRN-0042-77 head CT"
    volume = next(i for i in serve_env["items"] if i.kind == "volume")
    assert get(server, "/api/search", q=typed, k=3).status_code == 200
    bad = get(server, "/api/search", q=typed, k=0)
    assert bad.status_code == 400 and not any(s in bad.text for s in phi)
    assert get(server, "/api/similar", study=volume.study_key, where="kind = 'volume'").status_code == 200
    assert get(server, f"/api/thumbnail/{volume.item_id}.png").status_code == 200
    time.sleep(0.3)
    log = server.log_text()
    assert re.search(r"GET /api/search 200 [\d.]+ ms", log) and re.search(r"GET /api/search 400 ", log)
    assert "GET /api/thumbnail/{item_id}.png 200" in log
    for secret in [*phi, "MRN-0042", "q=", volume.study_key, "kind = ", str(volume.item_id)]:
        assert secret not in log, secret


# -- the page is one self-contained file ---------------------------------------------------------------------
def test_page_is_self_contained_with_a_strict_policy(server):
    from radretrieve.application.web.page import content_security_policy

    response = get(server, "/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)  # nothing from another origin
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", html)  # data stays text
    policy = response.headers["content-security-policy"]
    assert policy == content_security_policy(html) and "default-src 'none'" in policy
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'$", policy.split(";")[1].strip())


# -- binding and the token -------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "radretrieve.example"])
def test_binding_other_than_loopback_without_a_token_is_refused(serve_env, host):
    port = free_port()
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "radretrieve", "serve", "--index", str(serve_env["out"]), "--host", host]
    proc = subprocess.run([*cmd, "--port", str(port)], capture_output=True, text=True, cwd=REPO, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and proc.stdout == "" and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: --host {host} ") and "--token-file" in lines[0]
    assert time.monotonic() - t0 < 30  # refused before loading anything
    with socket.socket() as sock:  # nothing was bound
        assert sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("content,needle", [("short", "at least 16"), (None, "cannot read")])
def test_unusable_token_files_are_refused(serve_env, tmp_path, content, needle):
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    cmd = [sys.executable, "-m", "radretrieve", "serve", "--index", str(serve_env["out"]), "--host", "0.0.0.0"]
    proc = subprocess.run([*cmd, "--token-file", str(token_file)], capture_output=True, text=True, cwd=REPO)
    lines = proc.stderr.strip().splitlines()
    assert (
        proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: --token-file") and needle in lines[0]
    )
    assert content is None or content not in lines[0]


def test_loopback_rule():
    from radretrieve.application.web.config import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.0.2", "example.org", ""))


def _paths(serve_env) -> list[str]:
    volume = next(i for i in serve_env["items"] if i.kind == "volume")
    return [
        "/",
        "/api/health",
        "/api/info",
        "/openapi.json",
        f"/api/search?q={QUERY}",
        f"/api/similar?study={volume.study_key}",
        f"/api/item/{volume.item_id}",
        f"/api/thumbnail/{volume.item_id}.png",
    ]


def test_with_a_token_every_request_needs_it(token_server, serve_env):
    import httpx

    for path in _paths(serve_env):
        with token_server.client(address=fresh_address()) as client:  # failures are throttled per address
            for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN}):
                response = client.get(path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.content == b'{"error":"unauthorized"}'  # no detail, no data
            ok = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200, (path, ok.text)
    page = httpx.get(token_server.url + "/", headers={"Accept": "text/html"})  # a browser gets the login form
    assert page.status_code == 401 and 'action="/login"' in page.text and "radretrieve_session" not in page.text


def test_login_form_sets_a_cookie_that_is_not_the_token(token_server):
    import httpx

    with token_server.client(address=fresh_address()) as client:
        refused = client.post("/login", data={"token": "not-the-token-at-all"})
        assert refused.status_code == 401 and "set-cookie" not in refused.headers
        assert client.get("/api/health").status_code == 401
        done = client.post("/login", data={"token": TOKEN})
        assert done.status_code == 303 and done.headers["location"] == "/"
        cookie = done.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and TOKEN not in cookie
        assert client.get("/api/health").status_code == 200  # the client now sends the cookie
        assert client.get("/").status_code == 200
    forged = httpx.get(token_server.url + "/api/health", cookies={"radretrieve_session": "0" * 64})
    assert forged.status_code == 401


def test_no_where_refuses_sql_but_keeps_the_equality_filters(token_server, serve_env):
    with token_server.client(TOKEN) as client:
        refused = client.get("/api/search", params={"q": QUERY, "where": "modality = 'CT'"})
        assert refused.status_code == 403 and "--no-where" in refused.json()["error"]
        got = client.get("/api/search", params={"q": QUERY, "k": 10, "modality": "CT"}).json()
        assert client.get("/api/options").json()["where"] is False
    want = cli_json("search", QUERY, "--index", str(serve_env["out"]), "-k", "10", "--where", "modality = 'CT'")
    assert_same_result(got, want)


# -- burned-in text: flagged images are never drawn ------------------------------------------------------------
@pytest.fixture(scope="module")
def burned_in_server(tmp_path_factory, tiny_model):
    """Synthetic shards with a `burned_in` column (radretrieve.testing.shards), sources that are real NIfTI
    files, the manifest naming radclip-tiny with its fingerprint."""
    import nibabel as nib

    from indexers.build import build_indexes
    from radretrieve.outdir.archive_root import write_archive_root
    from radretrieve.outdir.text_tower import save_text_tower
    from radretrieve.testing.shards import SyntheticItems, write_out_dir

    tmp = tmp_path_factory.mktemp("burned_in")
    out, arch = tmp / "out", tmp / "arch"
    dim = int(tiny_model.encode_text(["probe"]).shape[-1])
    items = SyntheticItems.random(9, dim, seed=3, id_offset=999, kinds=("volume", "image", "report"), per_study=3)
    # per study: volume, image, report; study 0's volume and study 1's image carry burned-in text
    flags = (True, False, False, False, True, False, False, False, False)
    items = dataclasses.replace(items, burned_in=flags)
    write_out_dir(out, [items], dim, fingerprint=tiny_model.fingerprint)
    save_text_tower(tiny_model, out)
    rng = np.random.default_rng(0)
    for i in items.ids:
        path = arch / "src" / f"{i}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(rng.normal(100, 30, (24, 20, 6)).astype(np.float32), np.eye(4)), path)
    write_archive_root(out, arch)
    build_indexes(out)
    srv = Server(out, tmp / "server.log")
    yield srv, items, arch
    srv.stop()


def test_burned_in_images_are_never_drawn(burned_in_server):
    from radretrieve.application.contact_sheet import thumbnail

    srv, items, arch = burned_in_server
    rows = list(zip(items.ids.tolist(), items.kinds, items.studies, items.burned_in))
    for item_id, kind, study, flagged in rows:
        response = get(srv, f"/api/thumbnail/{item_id}.png")
        assert get_json(srv, f"/api/item/{item_id}")["burned_in"] is flagged
        if flagged:
            assert response.status_code == 403 and "burned-in" in response.json()["error"]
            assert not response.content.startswith(b"\x89PNG")
            continue
        assert response.status_code == 200, response.text
        # a report is drawn as the first unflagged image or volume of its study
        drawn = item_id
        if kind == "report":
            drawn = min(i for i, k, s, f in rows if s == study and k != "report" and not f)
        want, found = thumbnail(arch, f"src/{drawn}.nii.gz")
        assert found
        np.testing.assert_array_equal(png_array(response.content), want)
    hits = get_json(srv, "/api/search", q="anything", k=6)["hits"]
    assert len(hits) == 6  # flagged items are still found; only their pixels are withheld


def test_show_burned_in_draws_flagged_images(burned_in_server):
    from radretrieve.application.contact_sheet import thumbnail
    from radretrieve.application.web.config import ServeConfig
    from radretrieve.application.web.service import WebService

    srv, items, arch = burned_in_server
    out = srv.out_dir
    flagged = [int(i) for i, f in zip(items.ids, items.burned_in) if f]
    service = WebService(ServeConfig(out, show_burned_in=True))
    try:
        for item_id in flagged:
            want, _ = thumbnail(arch, f"src/{item_id}.nii.gz")
            np.testing.assert_array_equal(png_array(service.thumbnail_png(item_id)), want)
    finally:
        service.close()


# -- the text batcher on its own: queued texts share one call, answers go to the right caller -------------------
def _batched_round(texts: list[str], max_batch: int) -> tuple[list[list[str]], list[np.ndarray], object]:
    """Encode texts[0] while an encoder call is held open, queue the rest, release: (calls, answers, stats)."""
    from radretrieve.application.web.batching import TextBatcher

    gate, calls = threading.Event(), []

    def encode(batch):
        calls.append(list(batch))
        if len(calls) == 1:
            gate.wait(10)  # hold the first call while the others queue up
        return np.array([[float(len(t)), float(t.count("a"))] for t in batch], np.float32)

    batcher = TextBatcher(encode, max_batch=max_batch)
    try:
        with ThreadPoolExecutor(len(texts)) as pool:
            futures = [pool.submit(batcher.encode, texts[0])]
            time.sleep(0.2)
            futures += [pool.submit(batcher.encode, t) for t in texts[1:]]
            time.sleep(0.3)
            gate.set()
            answers = [f.result(timeout=10) for f in futures]
    finally:
        batcher.close()
    for text, vector in zip(texts, answers):  # each caller gets the row of its own text
        np.testing.assert_array_equal(vector, [len(text), text.count("a")])
    return calls, answers, batcher.stats


def test_text_batcher_batches_queued_texts_and_routes_results():
    texts = ["first", "a", "aa", "aaa", "aa", "aaaaa", "bbbbbb"]
    calls, _, stats = _batched_round(texts, max_batch=8)
    assert calls[0] == ["first"] and len(calls) == 2
    assert sorted(calls[1]) == sorted(set(texts[1:]))  # one call for all queued texts; "aa" encoded once
    assert stats.calls == 2 and stats.largest == 5 and stats.texts == 6


def test_text_batcher_keeps_batches_under_max_batch():
    texts = [f"text {i} " + "a" * i for i in range(8)]
    calls, _, stats = _batched_round(texts, max_batch=3)
    assert [len(c) for c in calls] == [1, 3, 3, 1] and stats.largest == 3
    assert sorted(t for c in calls for t in c) == sorted(texts)
