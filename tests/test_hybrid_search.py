"""Hybrid search: reciprocal rank fusion against rankings computed by hand, filters and kinds in every mode, a rare
term not buried by an untrained model's noise, and the modes on the CLI, the Python API and the HTTP API."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from indexers import Searcher, build_indexes
from indexers.errors import SearchArgError
from indexers.fusion import depth, rrf
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.testing.shards import SyntheticItems, normalise
from tests.test_fulltext import DIM, add_shard, make_out, texts_part

CLI = [sys.executable, "-m", "radretrieve"]


# -- fusion against hand-computed rankings ----------------------------------------------------------------
def test_rrf_matches_a_ranking_computed_by_hand():
    vector = [(10, 0.9), (20, 0.8), (30, 0.7), (40, 0.6)]
    keyword = [(30, 12.0), (50, 9.0), (10, 3.0)]
    # k = 60: 10 -> 1/61 + 1/63 = 0.032266; 30 -> 1/63 + 1/61 = 0.032266 (tie: best rank 1 both, then id);
    # 20 -> 1/62 = 0.016129; 50 -> 1/62 (tie: best rank 2 both, then id); 40 -> 1/64 = 0.015625
    fused = rrf(vector, keyword, k=10)
    assert [f.item_id for f in fused] == [10, 30, 20, 50, 40]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 63)
    assert fused[4].score == pytest.approx(1 / 64)
    assert (fused[1].vector_rank, fused[1].keyword_rank, fused[1].keyword_score) == (3, 1, 12.0)
    assert (fused[3].vector_rank, fused[3].vector_score) == (None, None)
    # k = 1 weighs the head: 10 -> 1/2 + 1/4 = 0.75; 30 -> 1/4 + 1/2 = 0.75; 20 -> 1/3; 50 -> 1/3; 40 -> 1/5
    assert [f.item_id for f in rrf(vector, keyword, k=3, rrf_k=1)] == [10, 30, 20]
    # one list only: its own order
    assert [f.item_id for f in rrf([], keyword, k=5)] == [30, 50, 10]


def test_a_hit_in_both_lists_beats_a_first_place_in_one():
    vector = [(1, 0.9)] + [(100 + i, 0.5) for i in range(20)] + [(7, 0.1)]
    keyword = [(2, 20.0), (7, 19.0)]
    # 7: 1/(60+22) + 1/62 = 0.028324 > 1: 1/61 = 0.016393 > 2: 1/61 (tie with 1: best rank 1 both, id 1 first)
    assert [f.item_id for f in rrf(vector, keyword, 3)] == [7, 1, 2]


def test_exact_matches_rank_first_then_by_fused_score_by_hand():
    vector = [(1, 0.9), (2, 0.8), (3, 0.7), (5, 0.1)]
    keyword = [(4, 9.0), (3, 5.0), (5, 1.0)]
    # scores: 1 -> 1/61; 2 -> 1/62; 3 -> 1/63 + 1/62; 4 -> 1/61; 5 -> 1/64 + 1/63; exact {2, 5}: 5 > 2 among them
    fused = rrf(vector, keyword, 5, exact=frozenset({2, 5}))
    assert [f.item_id for f in fused] == [5, 2, 3, 1, 4]
    assert [f.exact for f in fused] == [True, True, False, False, False]
    assert fused[0].score == pytest.approx(1 / 64 + 1 / 63)  # the score is the fusion's own, the tier only orders
    assert [f.item_id for f in rrf(vector, keyword, 5)] == [3, 5, 1, 4, 2]  # without the tier


def test_each_list_is_read_deep_enough():
    assert depth(10) == 100 and depth(500) == 1000


# -- the searcher's modes over a synthetic out dir ---------------------------------------------------------
@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("hybrid") / "out"
    make_out(out, [texts_part(150, 10, 1000), texts_part(120, 11, 60_000)])
    items, texts = texts_part(40, 12, 200_000, kinds=("volume", "image"))
    texts[17] = "a Kommerell diverticulum of the aortic arch"  # the one rare finding of the archive (item 200119)
    add_shard(out, items, texts, "task-00002")
    build_indexes(out)
    return out


def _allowed(searcher: Searcher, kind: str | None, where: str | None, view: str = "items") -> set[int]:
    kinds = ("image", "volume") if kind is None and view == "items" else ((kind,) if kind else ("report",))
    cond = " AND ".join([f"kind IN ({', '.join(repr(k) for k in kinds)})"] + ([f"({where})"] if where else []))
    return {int(r[0]) for r in searcher.catalog.sql(f"SELECT item_id FROM {view} WHERE {cond}")}


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
@pytest.mark.parametrize(
    ("kind", "where"),
    [(None, None), ("image", None), (None, "modality = 'MR'"), ("volume", "body_part = 'CHEST' AND item_id % 2 = 0")],
)
def test_every_mode_honours_kind_and_where_before_cutting_to_k(out, mode, kind, where):
    searcher = Searcher(out)
    query, k = "hemorrhage in the frontal lobe", 12
    vectors = normalise(np.random.default_rng(3).standard_normal((1, DIM)))
    if mode == "vector":
        hits = searcher.search(vectors, k, kind=kind, where=where)[0]
    elif mode == "keyword":
        hits = searcher.keyword([query], k, kind=kind, where=where)[0]
    else:
        hits = searcher.hybrid([query], vectors, k, kind=kind, where=where)[0]
    allowed = _allowed(searcher, kind, where)
    matching = {h.item_id for h in searcher.keyword([query], 10_000)[0]} & allowed
    expected = min(k, len(matching) if mode == "keyword" else len(allowed))
    assert len(hits) == expected and expected > 0
    assert {h.item_id for h in hits} <= allowed
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    searcher.close()


def test_hybrid_evidence_is_each_lists_own_rank_and_score(out):
    searcher = Searcher(out)
    query = "Chiari malformation with tonsillar descent"
    vectors = normalise(np.random.default_rng(4).standard_normal((1, DIM)))
    k, where = 15, "modality <> 'CR'"
    hits = searcher.hybrid([query], vectors, k, where=where)[0]
    by_vector = {h.item_id: h for h in searcher.search(vectors, depth(k), where=where)[0]}
    by_keyword = {h.item_id: h for h in searcher.keyword([query], depth(k), where=where)[0]}
    for hit in hits:
        ev = hit.evidence
        assert ev.mode == "hybrid" and ev.fused_rank == hit.rank
        if hit.item_id in by_vector:
            assert (ev.vector_rank, ev.vector_score) == (by_vector[hit.item_id].rank, by_vector[hit.item_id].score)
        else:
            assert ev.vector_rank is None
        if hit.item_id in by_keyword:
            assert ev.keyword_rank == by_keyword[hit.item_id].rank
            assert ev.matched_terms == by_keyword[hit.item_id].evidence.matched_terms
        expected = sum(1 / (60 + r) for r in (ev.vector_rank, ev.keyword_rank) if r is not None)
        assert hit.score == pytest.approx(expected)
    # exact matches of a specific query first (tests below), then by score
    order = [(not h.evidence.exact_words, -h.score) for h in hits]
    assert order == sorted(order)
    searcher.close()


def test_a_rare_term_is_not_buried_by_an_untrained_models_noise(out):
    searcher = Searcher(out)
    rare = 200_000 + 7 * 17  # the only item with "Kommerell" (ids are id_offset + 7 * row)
    vectors = normalise(np.random.default_rng(5).standard_normal((1, DIM)))  # a model that knows nothing
    vector_rank = [h.item_id for h in searcher.search(vectors, 10_000)[0]].index(rare) + 1
    hybrid = searcher.hybrid(["Kommerell diverticulum"], vectors, 10)[0]
    assert vector_rank > 10  # vector search alone does not find it
    # hybrid puts it first: the only exact match of a specific query (its keyword rank 1 alone would weigh only as
    # much as the vector list's first hit)
    assert hybrid[0].item_id == rare and hybrid[0].evidence.exact_words == ("kommerel", "diverticulum")
    found = hybrid[0]
    assert found.evidence.keyword_rank == 1 and found.evidence.matched_terms == ("kommerel", "diverticulum")
    text = found.text
    assert [text[a:b] for a, b in found.evidence.highlights] == ["Kommerell", "diverticulum"]
    searcher.close()


def test_a_rare_words_exact_matches_are_not_buried_by_a_confused_trained_model(tmp_path):
    out = tmp_path / "out"
    items, texts = texts_part(60, 21, 300_000, kinds=("volume", "image"))  # 60 rows, all in the items view
    morgagni, bochdalek = [r for r in range(60) if r % 10 == 0], [r for r in range(60) if r % 4 == 1]
    for r in morgagni:  # 6 of 60 rows: "morgagni" is rare (at most a fifth); "hernia" (21 rows) is not
        texts[r] = "Incidental Morgagni hernia is noted."
    for r in bochdalek:
        texts[r] = "Incidental Bochdalek hernia is noted."
    make_out(out, [(items, texts)])
    build_indexes(out)
    searcher = Searcher(out)
    # a trained model (weight 1) that confuses the two hernias: its query vector is the Bochdalek rows' mean
    vectors = normalise(items.vectors[bochdalek].mean(axis=0, keepdims=True))
    holders = {int(items.ids[r]) for r, t in enumerate(texts) if "morgagni" in t.lower()}  # brute force
    hits = searcher.hybrid(["Morgagni hernia"], vectors, 10)[0]
    assert {h.item_id for h in hits[:6]} == holders
    assert all(h.evidence.exact_words == ("morgagni", "hernia") for h in hits[:6])
    assert all(h.evidence.exact_words == () for h in hits[6:])
    assert [h.score for h in hits[:6]] == sorted((h.score for h in hits[:6]), reverse=True)
    # rank fusion alone buries some of them under the model's confident Bochdalek rows
    by_vector = [(h.item_id, h.score) for h in searcher.search(vectors, depth(10))[0]]
    by_keyword = [(h.item_id, h.score) for h in searcher.keyword(["Morgagni hernia"], depth(10))[0]]
    assert {f.item_id for f in rrf(by_vector, by_keyword, 6)} != holders
    # the filter and the kind come first: an exact match they exclude is not lifted, nor shown
    excluded = int(items.ids[morgagni[0]])
    hits = searcher.hybrid(["Morgagni hernia"], vectors, 10, where=f"item_id <> {excluded}")[0]
    assert {h.item_id for h in hits[:5]} == holders - {excluded} and excluded not in {h.item_id for h in hits}
    images = searcher.hybrid(["Morgagni hernia"], vectors, 10, kind="image")[0]  # every Morgagni row is a volume
    assert all(h.kind == "image" and h.evidence.exact_words == () for h in images)
    # the benchmarks' in-memory fusion (indexers/memory.py) ranks the same rows the same way
    from indexers.memory import mode_scores

    scores = mode_scores("hybrid", vectors @ items.vectors.T, ["Morgagni hernia"], texts)[0]
    ranked = [int(items.ids[r]) for r in np.lexsort((np.arange(len(scores)), -scores))[:10]]
    assert ranked == [h.item_id for h in searcher.hybrid(["Morgagni hernia"], vectors, 10)[0]]
    # by rank alone: a query without rare words ("hernia": 21 of 60 rows), and one whose words no row holds all
    # of (each row names one hernia): "morgagni" alone must not outrank the rows that match the rest of it
    for query in ("hernia", "Morgagni or Bochdalek hernia"):
        hits = searcher.hybrid([query], vectors, 10)[0]
        assert [h.item_id for h in hits] == [f.item_id for f in rrf(by_vector, _keyword_list(searcher, query), 10)]
        assert all(h.evidence.exact_words == () for h in hits)
    searcher.close()


def test_a_word_is_rare_among_the_documents_of_the_view_searched(tmp_path):
    out = tmp_path / "out"
    items, texts = texts_part(60, 22, 400_000)  # rows alternate volume, image, report: 40 items, 20 reports
    kinds = list(items.kinds)
    in_items = [r for r, k in enumerate(kinds) if k != "report"][::5]  # 8 of 40 items: rare (a fifth)
    in_reports = [r for r, k in enumerate(kinds) if k == "report"][:5]  # 5 of 20 reports: not rare
    for r in in_items + in_reports:
        texts[r] = "Incidental Morgagni hernia is noted."
    make_out(out, [(items, texts)])
    build_indexes(out)
    searcher = Searcher(out)
    vectors = normalise(np.random.default_rng(8).standard_normal((1, DIM)))
    hits = searcher.hybrid(["Morgagni hernia"], vectors, 10)[0]
    assert {h.item_id for h in hits[:8]} == {int(items.ids[r]) for r in in_items}
    assert all(h.evidence.exact_words == ("morgagni", "hernia") for h in hits[:8])
    reports = searcher.hybrid(["Morgagni hernia"], vectors, 10, index="reports")[0]
    assert reports and all(h.kind == "report" and h.evidence.exact_words == () for h in reports)
    searcher.close()
    # an index built before it counted its views: the catalog's rows per view, the same answers
    index_json = out / "index" / "index.json"
    data = json.loads(index_json.read_text())
    assert data["fulltext"].pop("views") == {"items": 40, "reports": 20}
    index_json.write_text(json.dumps(data))
    older = Searcher(out)
    assert older.keywords.info.views is None
    assert older.hybrid(["Morgagni hernia"], vectors, 10)[0] == hits
    assert older.hybrid(["Morgagni hernia"], vectors, 10, index="reports")[0] == reports
    older.close()


def test_the_table_says_which_hits_are_exact_matches():
    from indexers.search import Evidence, Hit
    from radretrieve.application.render import _evidence_cell

    ev = Evidence("hybrid", ("morgagni", "hernia"), (), 3, 0.2, 1, 7.5, 1, ("morgagni", "hernia"))
    assert _evidence_cell(Hit(5, 0.03, 1, evidence=ev)) == "exact, vector #3, keyword #1: morgagni hernia"
    plain = Evidence("hybrid", ("hernia",), (), 1, 0.4, 9, 2.0, 2)
    assert _evidence_cell(Hit(6, 0.02, 2, evidence=plain)) == "vector #1, keyword #9: hernia"


def _keyword_list(searcher: Searcher, query: str) -> list[tuple[int, float]]:
    return [(h.item_id, h.score) for h in searcher.keyword([query], depth(10))[0]]


def test_an_exact_match_holds_every_word_the_archive_holds_when_one_is_rare():
    import tantivy

    from indexers import analyzer
    from indexers.rare import RARE_ONE_IN, exact_words, holding_all

    docs = ["chiari malformation"] * 2 + ["chest film"] * 3 + ["chest chiari"] + ["normal"] * 4
    index = tantivy.Index(schema := _words_schema())
    analyzer.register(index)
    writer = index.writer(15_000_000, 1)
    for row, text in enumerate(docs):
        writer.add_document(tantivy.Document(row=row, words=text))
    writer.commit()
    index.reload()
    searcher = index.searcher()

    def words(text: str, documents: int = len(docs)) -> tuple[str, ...]:
        return exact_words(searcher, "words", analyzer.query_terms(text)[analyzer.WORDS], documents)

    # rows holding: chiari 3, malformation 2, chest 4, normal 4, typo 0, word 0; rare: at most 2 of 10 (a fifth)
    assert RARE_ONE_IN == 5
    assert words("chiari malformation") == ("chiari", "malform")  # malformation is rare: both must be held
    assert words("chiari chest typo-word normal") == ()  # nothing rare: not specific
    assert words("chiari chest typo-word normal", 15) == ("chiari", "chest", "normal")  # 3 of 15 is a fifth
    assert holding_all(searcher, schema, "words", "row", ("chiari", "malform"), range(10)) == {0, 1}
    assert holding_all(searcher, schema, "words", "row", ("chiari", "chest"), [1, 5, 9]) == {5}
    assert holding_all(searcher, schema, "words", "row", ("chiari", "chest", "normal"), range(10)) == frozenset()
    assert holding_all(searcher, schema, "words", "row", (), range(10)) == frozenset()


def _words_schema():
    import tantivy

    from indexers import analyzer

    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("row", stored=False, indexed=True, fast=True)
    builder.add_text_field("words", stored=False, tokenizer_name=analyzer.WORDS, index_option="freq")
    return builder.build()


def test_bad_mode_arguments_are_one_line_errors(out):
    from radretrieve.application.search_service import check_mode

    with pytest.raises(SearchArgError, match="--mode 'fuzzy': choose from vector, keyword, hybrid"):
        check_mode("fuzzy")
    with pytest.raises(SearchArgError, match="rrf_k"):
        Searcher(out).hybrid(["x"], np.ones((1, DIM), np.float32) / np.sqrt(DIM), 5, rrf_k=0)


# -- CLI, Python API and HTTP API over a real indexed archive (tests/serve_env.py) ----------------------------
def _word_of(serve_env) -> str:
    """A word of the first item's report (the synthetic reports share their vocabulary)."""
    text = next(i for i in serve_env["items"] if getattr(i, "text", None)).text
    return max(text.split(), key=len).strip(".,;:")


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_the_cli_search_and_reports_take_the_mode(serve_env, mode):
    out, word = str(serve_env["out"]), _word_of(serve_env)
    cmd = [*CLI, "search", word, "--index", out, "--mode", mode, "--format", "json", "-k", "4", "--kind", "volume"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    hits = json.loads(proc.stdout)[0]["hits"]
    assert hits and all(h["kind"] == "volume" and h["evidence"]["mode"] == mode for h in hits)
    assert any(h["evidence"]["matched_terms"] for h in hits)
    study = hits[0]["study_key"]
    cmd = [*CLI, "reports", study, "--index", out, "--mode", mode, "--format", "table", "-k", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "found by" in proc.stdout.splitlines()[0]


def test_the_cli_refuses_an_unknown_mode_before_loading_anything(serve_env):
    cmd = [*CLI, "search", "chest", "--index", str(serve_env["out"]), "--mode", "bm25"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "error: --mode 'bm25': choose from vector, keyword, hybrid"


def test_the_python_api_searches_in_every_mode(serve_env):
    import radretrieve

    word = _word_of(serve_env)
    with radretrieve.open(serve_env["out"]) as out:
        vector = out.search(word, k=3, mode="vector")
        keyword = out.search(word, k=3, mode="keyword")
        hybrid = out.search(word, k=3, mode="hybrid", kind="volume")
        default = out.search(word, k=3, kind="volume")
    assert len(vector) == len(keyword) == len(hybrid) == 3
    assert all(h.evidence is None for h in vector)
    assert [(h.item_id, h.score, h.evidence) for h in default] == [(h.item_id, h.score, h.evidence) for h in hybrid]
    assert all(h.evidence.mode == "keyword" and h.evidence.matched_terms for h in keyword)
    assert all(h.kind == "volume" and h.evidence.mode == "hybrid" for h in hybrid)


def test_the_http_api_takes_the_mode(server, serve_env):
    word = _word_of(serve_env)
    with server.client() as client:
        body = client.get("/api/search", params={"q": word, "k": 3, "mode": "hybrid"}).json()
        assert len(body["hits"]) == 3 and all(h["evidence"]["mode"] == "hybrid" for h in body["hits"])
        assert all(isinstance(h["evidence"]["exact_words"], list) for h in body["hits"])
        plain = client.get("/api/search", params={"q": word, "k": 3, "mode": "vector"}).json()
        assert all("evidence" not in h for h in plain["hits"])  # vector hits stay as they were
        default = client.get("/api/search", params={"q": word, "k": 3}).json()
        assert default["hits"] == body["hits"]  # the default: hybrid, the out dir having a full-text index
        study = body["hits"][0]["study_key"]
        rep = client.get("/api/reports", params={"study": study, "k": 2, "mode": "keyword"})
        assert rep.status_code == 200 and all(h["evidence"]["mode"] == "keyword" for h in rep.json()["hits"])
        bad = client.get("/api/search", params={"q": word, "mode": "nope"})
        assert bad.status_code == 400 and bad.json()["error"].startswith("--mode 'nope'")
        options = client.get("/api/options").json()
        assert options["modes"] == ["vector", "keyword", "hybrid"] and options["mode"] == "hybrid"


def test_without_a_full_text_index_the_default_is_vector_and_keyword_modes_say_how_to_build_one(serve_env, tmp_path):
    """An out dir indexed before there was a full-text index: a query without a mode is searched by vector, as
    before; asking for keyword or hybrid says how to add the index."""
    import shutil

    import radretrieve

    out = tmp_path / "out"
    shutil.copytree(serve_env["out"], out, symlinks=True)
    index_json = out / "index" / "index.json"
    data = json.loads(index_json.read_text())
    del data["fulltext"]
    index_json.write_text(json.dumps(data))
    word = _word_of(serve_env)
    with radretrieve.open(out) as opened:
        default = opened.search(word, k=3)
        vector = opened.search(word, k=3, mode="vector")
        with pytest.raises(RadRetrieveError, match=r"no full-text index .*radretrieve build-index"):
            opened.search(word, k=3, mode="hybrid")
    assert [(h.item_id, h.score) for h in default] == [(h.item_id, h.score) for h in vector]
    assert all(h.evidence is None for h in default)


def test_an_add_and_the_searcher_see_the_same_rows_in_every_mode(tmp_path):
    out = tmp_path / "out"
    make_out(out, [texts_part(50, 20, 1000)])
    build_indexes(out)
    items, texts = texts_part(30, 21, 70_000, kinds=("volume",))
    texts[0] = "Kommerell diverticulum"
    add_shard(out, items, texts, "task-00001")
    build_indexes(out)
    vectors = SyntheticItems.random(1, DIM, 22).vectors
    hits = Searcher(out).hybrid(["Kommerell"], vectors, 3)[0]
    assert hits[0].item_id == 70_000 and hits[0].evidence.keyword_rank == 1


# -- the evaluation's modes (bench retrieval --protocol labels --mode) -------------------------------------
def test_mode_scores_for_the_bench_match_a_hand_computed_fusion():
    from indexers.memory import keyword_scores, mode_scores

    cosine = np.array([[0.9, 0.5, 0.1]])
    docs = ["pleural effusion", "small Kommerell diverticulum", "Kommerell diverticulum, a Kommerell remnant"]
    bm25 = keyword_scores(["Kommerell"], docs)
    assert bm25[0, 0] == 0 and bm25[0, 2] > bm25[0, 1] > 0
    fused = mode_scores("hybrid", cosine, ["Kommerell"], docs)[0]
    # vector ranks 1, 2, 3; keyword ranks -, 2, 1
    assert fused == pytest.approx([1 / 61, 1 / 62 + 1 / 62, 1 / 63 + 1 / 61])
    assert mode_scores("vector", cosine, ["Kommerell"], docs) is cosine
    # 2 of 10 docs hold "Kommerell" (rare): they rank first, their score lifted by 1 above every fusion sum
    docs = docs[1:] + ["pleural effusion"] * 8
    cosine = np.linspace(1.0, 0.0, 10)[None, :][:, ::-1].copy()  # vector ranks: doc 9 first, doc 0 last
    fused = mode_scores("hybrid", cosine, ["Kommerell"], docs)[0]
    assert fused[1] == pytest.approx(1 + 1 / 69 + 1 / 61) and fused[0] == pytest.approx(1 + 1 / 70 + 1 / 62)
    assert fused[9] == pytest.approx(1 / 61)
    assert set(np.argsort(-fused)[:2]) == {0, 1}


def test_the_labels_protocol_ranks_each_mode_with_precision_and_recall():
    from indexers.memory import mode_scores
    from radretrieve.evaluation.protocols import protocol_tables
    from radretrieve.evaluation.retrieval import BenchOptions, Embedded, Side

    findings = ["Kommerell diverticulum", "Bochdalek hernia", "scimitar syndrome"] * 4
    n = len(findings)
    rng = np.random.default_rng(0)
    images = Side(
        np.arange(n, dtype=np.int64),
        normalise(rng.standard_normal((n, DIM))),
        tuple(f"s{i}" for i in range(n)),
        tuple({"finding": f} for f in findings),
        ("image",) * n,
        tuple(f"CT chest. Incidental {f}." for f in findings),
    )
    texts = Side(np.arange(1, dtype=np.int64), images.vectors[:1], ("s0",), ({},), ("report",))
    encode = lambda xs: normalise(np.random.default_rng(len(xs[0])).standard_normal((len(xs), DIM)))  # noqa: E731
    options = BenchOptions(label_sets=(("finding",),), n_bootstrap=20, modes=("vector", "keyword", "hybrid"))
    tables = protocol_tables("labels", Embedded(texts, images), options, encode_text=encode, scorer=mode_scores)
    assert [t.title for t in tables] == ["labels: finding", "labels: finding (keyword)", "labels: finding (hybrid)"]
    mean = {t.title: t.runs["finding: mean over 3 classes"]["metrics"] for t in tables}
    # keyword: each class query's 4 items hold its name, so they fill its top 4: P@10 = 4/10, R@10 = 1
    assert mean["labels: finding (keyword)"]["P@10"]["value"] == pytest.approx(0.4)
    assert mean["labels: finding (keyword)"]["R@10"]["value"] == pytest.approx(1.0)
    assert mean["labels: finding (hybrid)"]["R@10"]["value"] >= mean["labels: finding"]["R@10"]["value"]
    with pytest.raises(RadRetrieveError, match="apply to --protocol labels"):
        protocol_tables("pools", Embedded(texts, images), options)


def test_an_untrained_models_vector_list_weighs_less_by_hand():
    from indexers.fusion import UNTRAINED_VECTOR_WEIGHT

    vector, keyword = [(1, 0.9), (2, 0.8), (3, 0.1)], [(3, 5.0), (4, 4.0)]
    # w = 0.25: 1 -> 0.25/61 = 0.0041; 2 -> 0.25/62 = 0.0040; 3 -> 0.25/63 + 1/61 = 0.0204; 4 -> 1/62 = 0.0161
    fused = rrf(vector, keyword, 4, vector_weight=UNTRAINED_VECTOR_WEIGHT)
    assert UNTRAINED_VECTOR_WEIGHT == 0.25 and [f.item_id for f in fused] == [3, 4, 1, 2]
    assert fused[0].score == pytest.approx(0.25 / 63 + 1 / 61) and fused[2].score == pytest.approx(0.25 / 61)


def test_the_service_puts_every_keyword_match_first_when_the_model_is_untrained(out):
    from radretrieve.application.search_service import SearchService

    service = SearchService(out, warn=False)
    assert service.recorded.provenance.trained is False  # the synthetic out dir records an untrained tiny model
    vectors = normalise(np.random.default_rng(6).standard_normal((1, DIM)))
    query = "Chiari malformation with tonsillar descent"
    matches = {h.item_id for h in service.searcher.keyword([query], 10_000)[0]}
    hits = service.text_hits([query], vectors, 30, mode="hybrid")[0]
    n = min(len(matches), 30)
    assert {h.item_id for h in hits[:n]} <= matches  # keyword matches first, vector-only hits after them
    rare = service.text_hits(["Kommerell diverticulum"], vectors, 10, mode="hybrid")[0]
    assert rare[0].item_id == 200_000 + 7 * 17 and rare[0].evidence.keyword_rank == 1
    service.close()
