"""The full-text (keyword) index: its analysis, hits against a brute-force scan, BM25 computed here, filters,
damage detected and rebuilt, an incremental add equal to a rebuild, and no patient identifier among its terms."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from indexers import BuildConfig, Searcher, build_indexes
from indexers.analyzer import PY_TERM_RE, RUST_TERM_RE, TERMS, WORDS, analyzers
from indexers.fulltext import open_keyword, read_fulltext_json
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.outdir.layout import SHARD_DIR
from radretrieve.outdir.manifest import read_manifest, write_manifest
from radretrieve.outdir.shards import write_shard
from radretrieve.outdir.verify import DamagedFile
from radretrieve.testing.shards import SyntheticItems, write_out_dir

DIM = 8
# Report sentences built from these words, so that the brute-force scan below knows every document's words.
WORDS_POOL = (
    "no acute hemorrhage",
    "small hemorrhages in the left frontal lobe",
    "Chiari malformation with tonsillar descent",
    "disc herniation at C5-C6",
    "C5 and C6 vertebral bodies intact",
    "T2-weighted FLAIR hyperintensities",
    "T2 signal unremarkable",
    "brown tumour of the mandible",
    "pulmonary nodules measuring 3.5 cm",
    "L4/L5 foraminal stenosis",
)


def reports_for(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [". ".join(WORDS_POOL[j] for j in sorted(rng.choice(len(WORDS_POOL), 2, replace=False))) for _ in range(n)]


def texts_part(n: int, seed: int, id_offset: int, kinds=("volume", "image", "report")) -> tuple[SyntheticItems, list]:
    return SyntheticItems.random(n, DIM, seed, id_offset=id_offset, kinds=kinds), reports_for(n, seed + 100)


def add_shard(out: Path, items: SyntheticItems, texts: list[str], task_id: str) -> None:
    """One more shard whose `text` column holds `texts` (the synthetic fixture writes a fixed sentence)."""
    manifest = read_manifest(out)
    table = items.table(manifest.dim, manifest.fingerprint)
    table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts))
    file = f"{SHARD_DIR}/part-{len(manifest.shards):05d}.parquet"
    write_shard(out / file, table)
    from radretrieve.testing.shards import _entry

    write_manifest(out, manifest.with_shard(_entry(items, task_id, file)))


def make_out(out: Path, parts: list[tuple[SyntheticItems, list[str]]]) -> None:
    write_out_dir(out, [], DIM)
    for i, (items, texts) in enumerate(parts):
        add_shard(out, items, texts, f"task-{i:05d}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("fulltext") / "out"
    parts = [texts_part(120, 0, 1000), texts_part(90, 1, 50_000)]
    make_out(out, parts)
    build_indexes(out)
    docs = {}  # item id -> (view, searchable text) as the test understands it
    for items, texts in parts:
        for i, item in enumerate(items.ids):
            view = "reports" if items.kinds[i] == "report" else "items"
            labels = " ".join(json.loads(json.dumps({"modality": items.modalities[i]})).values())
            desc = f"{items.modalities[i]} {items.body_parts[i]}"
            docs[int(item)] = (
                view,
                items.kinds[i],
                items.modalities[i],
                "\n".join([texts[i], desc, items.modalities[i], items.body_parts[i], labels]),
            )
    return out, docs


# -- analysis ---------------------------------------------------------------------------------------------
def test_the_analyzer_keeps_medical_terms_whole_and_stems_english():
    text = "Disc herniations at C5-C6. T2-weighted FLAIR hyperintensities, 3.5 cm, L4/L5"
    terms = analyzers()[TERMS].analyze(text)
    words = analyzers()[WORDS].analyze(text)
    assert terms == ["disc", "herniat", "at", "c5-c6", "t2-weight", "flair", "hyperintens", "3.5", "cm", "l4/l5"]
    assert words == [
        "disc",
        "herniat",
        "at",
        "c5",
        "c6",
        "t2",
        "weight",
        "flair",
        "hyperintens",
        "3.5",
        "cm",
        "l4",
        "l5",
    ]


def test_the_python_tokenizer_finds_the_tokens_tantivys_does():
    import tantivy

    raw = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(RUST_TERM_RE)).build()
    text = "Naïve T2-weighted FLAIR: C5–C6 (en dash), C5-C6, 3.5x2 cm, Größe 12mm, 肺結節 ok_done, x²"
    assert raw.analyze(text) == PY_TERM_RE.findall(text)


# -- hits -------------------------------------------------------------------------------------------------
def scan_terms(text: str, name: str) -> list[str]:
    return analyzers()[name].analyze(text)


def bm25(docs: dict, view: str, query: str) -> dict[int, float]:
    """BM25 (k1 1.2, b 0.75) summed over the view's two fields, for the documents of `view` matching any query
    term. Each view has its own fields; tantivy counts every document of the index in N and in the average field
    length (a document of the other view has an empty field)."""
    scores: dict[int, float] = {}
    for name in (TERMS, WORDS):
        q = list(dict.fromkeys(scan_terms(query, name)))
        tokens = {i: scan_terms(text, name) if v == view else [] for i, (v, _, _, text) in docs.items()}
        avgdl = sum(len(t) for t in tokens.values()) / len(tokens)
        for term in q:
            n_t = sum(1 for t in tokens.values() if term in t)
            idf = math.log(1 + (len(docs) - n_t + 0.5) / (n_t + 0.5))
            for i, t in tokens.items():
                tf = Counter(t)[term]
                if tf and docs[i][0] == view:
                    part = idf * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * len(t) / avgdl))
                    scores[i] = scores.get(i, 0.0) + part
    return scores


@pytest.mark.parametrize("query", ["Chiari", "hemorrhage", "C5-C6", "t2 FLAIR", "brown tumor", "3.5", "l5 stenoses"])
@pytest.mark.parametrize("view", ["items", "reports"])
def test_keyword_hits_are_the_brute_force_scan_ranked_by_bm25(corpus, query, view):
    out, docs = corpus
    expected = bm25(docs, view, query)
    hits, terms = open_keyword(out).search(query, view, 1000)
    assert terms and {i for i, _ in hits} == set(expected)
    for item, score in hits:
        assert score == pytest.approx(expected[item], rel=2e-3)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_a_huge_k_reads_at_most_every_document(corpus):
    out, docs = corpus
    hits, _ = open_keyword(out).search("Chiari", "items", 2 * 10**9)  # tantivy would allocate its heap for k
    assert {i for i, _ in hits} == set(bm25(docs, "items", "Chiari"))


def test_a_compound_term_ranks_its_exact_spelling_first(corpus):
    out, docs = corpus
    hits, _ = open_keyword(out).search("C5-C6", "items", 1000)
    exact = {i for i, d in docs.items() if "C5-C6" in d[3] and d[0] == "items"}
    assert exact and {i for i, _ in hits[: len(exact)]} == exact  # "C5 and C6" matches too, below them


def test_query_syntax_is_text_not_syntax(corpus):
    out, _ = corpus
    index = open_keyword(out)
    for query in ('item_id:1000 OR "x', "view:reports", "*", "(((", "-"):
        hits, _ = index.search(query, "items", 10)
        assert all(isinstance(i, int) for i, _ in hits)  # no query parser error, no field reached


@pytest.mark.parametrize(
    ("kind", "where"), [(None, "modality = 'CT'"), ("image", None), ("volume", "body_part IN ('HEAD', 'KNEE')")]
)
def test_keyword_search_honours_kind_and_where_before_cutting_to_k(corpus, kind, where):
    out, docs = corpus
    searcher = Searcher(out)
    allowed = {
        i
        for i, (view, k, modality, text) in docs.items()
        if view == "items"
        and (kind is None or k == kind)
        and (where != "modality = 'CT'" or modality == "CT")
        and (where is None or "body_part" not in where or re.search(r"\n(HEAD|KNEE)\n", text))
    }
    expected = {i: s for i, s in bm25(docs, "items", "hemorrhage").items() if i in allowed}
    k = 5
    hits = searcher.keyword(["hemorrhage"], k, kind=kind, where=where)[0]
    assert len(hits) == min(k, len(expected))
    assert {h.item_id for h in hits} <= allowed
    best = sorted(expected.values(), reverse=True)[:k]
    assert [h.score for h in hits] == pytest.approx(best, rel=2e-3)
    assert all(h.evidence.matched_terms == ("hemorrhag",) for h in hits)
    searcher.close()


# -- the index's contracts --------------------------------------------------------------------------------
def test_the_index_folder_is_listed_in_index_json_with_size_and_digest(corpus):
    out, docs = corpus
    info = read_fulltext_json(out)
    folder = out / "index" / info.folder
    assert info.count == len(docs)
    listed = {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".tantivy-")}
    assert listed == set(info.checks) and len(listed) > 2
    for name, check in info.checks.items():
        assert (folder / name).stat().st_size == check.size and len(check.sha256) == 64


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove", "extra"])
def test_a_damaged_index_is_refused_then_rebuilt(tmp_path, damage):
    out = tmp_path / "out"
    make_out(out, [texts_part(60, 3, 1000)])
    build_indexes(out)
    before = open_keyword(out).search("Chiari", "items", 100)
    info = read_fulltext_json(out)
    folder = out / "index" / info.folder
    victim = folder / max(info.checks, key=lambda n: info.checks[n].size)  # the largest segment file
    data = victim.read_bytes()
    if damage == "flip":
        victim.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "truncate":
        victim.write_bytes(data[:-10])
    elif damage == "remove":
        victim.unlink()
    else:
        victim = folder / "planted.bin"
        victim.write_bytes(b"x")
    with pytest.raises(DamagedFile) as err:
        open_keyword(out)
    message = str(err.value)
    assert "\n" not in message and str(victim) in message and "build-index" in message
    build_indexes(out)
    rebuilt = read_fulltext_json(out)
    assert rebuilt.folder != info.folder and rebuilt.build["mode"] == "rebuild"
    assert open_keyword(out).search("Chiari", "items", 100) == before


def test_an_add_indexes_only_the_new_shard_and_equals_a_full_rebuild(tmp_path):
    inc, full = tmp_path / "inc", tmp_path / "full"
    first, second = texts_part(80, 4, 1000), texts_part(70, 5, 90_000)
    make_out(inc, [first])
    build_indexes(inc)
    old = read_fulltext_json(inc)
    assert build_indexes(inc) and read_fulltext_json(inc) == old  # nothing new: kept
    add_shard(inc, *second, "task-00001")
    build_indexes(inc)
    grown = read_fulltext_json(inc)
    assert grown.build == {"mode": "add", "rows_added": 70, "shards_added": 1} and grown.count == 150
    shutil.copytree(inc, full, ignore=shutil.ignore_patterns("index"))
    build_indexes(full, BuildConfig(rebuild=True))
    assert read_fulltext_json(full).build["mode"] == "rebuild"
    catalog = Searcher(inc).catalog  # the documents per view the add counted, against the catalog's rows
    assert grown.views == read_fulltext_json(full).views == {v: catalog.count(v) for v in ("items", "reports")}
    for query in ("Chiari malformation", "C5-C6", "hemorrhages", "T2 FLAIR", "CT HEAD"):
        for view in ("items", "reports"):
            assert open_keyword(inc).search(query, view, 200) == open_keyword(full).search(query, view, 200)
    # the folder before the add stays one generation for readers of the old index.json; older ones go
    assert (inc / "index" / old.folder).is_dir()


def test_keyword_search_without_a_full_text_index_says_how_to_build_one(tmp_path):
    out = tmp_path / "out"
    make_out(out, [texts_part(20, 6, 1000)])
    build_indexes(out)
    data = json.loads((out / "index" / "index.json").read_text())
    del data["fulltext"]  # an out dir indexed before the full-text index existed
    (out / "index" / "index.json").write_text(json.dumps(data))
    with pytest.raises(RadRetrieveError, match=r"no full-text index .*radretrieve build-index"):
        Searcher(out).keyword(["Chiari"], 5)


# -- patient data -----------------------------------------------------------------------------------------
def test_planted_identifiers_are_not_among_the_indexed_terms(tmp_path):
    from radretrieve.testing.dicom import PLANTED_PHI, phi_strings, write_ct_series

    arch, out = tmp_path / "arch", tmp_path / "out"
    attrs = dict(PLANTED_PHI, StudyDescription="CT HEAD", SeriesDescription="AXIAL 1MM")
    write_ct_series(arch / "good", 6, attrs=attrs)
    report = f"Patient {PLANTED_PHI['PatientName']} (MRN {PLANTED_PHI['PatientID']}): Chiari malformation."
    (arch / "good.json").write_text(json.dumps({"text": report}))
    cmd = [sys.executable, "-m", "radretrieve", "index", str(arch), "--out", str(out), "--workers", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = read_fulltext_json(out)
    assert info is not None and info.count >= 1
    import tantivy

    index = tantivy.Index.open(str(out / "index" / info.folder))
    searcher = index.searcher()
    fields = ("items_terms", "items_words", "reports_terms", "reports_words")
    indexed = {t for field in fields for t, _ in searcher.terms_with_prefix(field, "")}
    assert "chiari" in indexed  # the report's finding is there: the redacted text was indexed
    planted = {t for s in phi_strings() for name in (TERMS, WORDS) for t in analyzers()[name].analyze(s)}
    planted -= {"mrn", "st"}  # the report's own label for the number, and a two-letter word
    assert planted and not (planted & indexed), sorted(planted & indexed)


def test_verify_reports_a_damaged_full_text_file(tmp_path):
    from radretrieve.application.verify import verify_out_dir

    out = tmp_path / "out"
    make_out(out, [texts_part(30, 7, 1000)])
    build_indexes(out)
    assert verify_out_dir(out).damaged == ()
    info = read_fulltext_json(out)
    victim = out / "index" / info.folder / "meta.json"
    victim.write_text(victim.read_text() + " ")
    lines = verify_out_dir(out).damaged
    assert len(lines) == 1 and lines[0].startswith(f"{victim}: damaged full-text index")


def test_a_long_query_is_cut_to_its_first_terms(corpus):
    from indexers.analyzer import MAX_QUERY_TERMS

    out, _ = corpus
    text = " ".join(f"word{i}" for i in range(5 * MAX_QUERY_TERMS)) + " Chiari"
    hits, terms = open_keyword(out).search(text, "items", 10)
    assert len(terms) <= 2 * MAX_QUERY_TERMS and "word0" in terms and "chiari" not in terms
    assert hits == []


def test_a_folder_name_in_index_json_cannot_leave_the_index_folder(tmp_path):
    out = tmp_path / "out"
    make_out(out, [texts_part(10, 8, 1000)])
    build_indexes(out)
    path = out / "index" / "index.json"
    for bad in ("../../elsewhere", "/etc", "fulltext.00000/../..", "other"):
        data = json.loads(path.read_text())
        data["fulltext"]["folder"] = bad
        path.write_text(json.dumps(data))
        with pytest.raises(RadRetrieveError, match="unreadable full-text entry"):
            read_fulltext_json(out)
    build_indexes(out)  # an unreadable entry: everything is rebuilt
    assert open_keyword(out).search("Chiari", "items", 5)[1] == ("chiari",)


def test_tampered_document_counts_in_index_json_are_refused_then_rebuilt(tmp_path):
    out = tmp_path / "out"
    make_out(out, [texts_part(12, 9, 1000)])  # 8 items, 4 reports
    build_indexes(out)
    path = out / "index" / "index.json"
    good = json.loads(path.read_text())
    assert good["fulltext"]["views"] == {"items": 8, "reports": 4} and good["fulltext"]["count"] == 12
    bad_views = (
        {"items": float("inf"), "reports": 4},  # json writes Infinity, which json.loads accepts
        {"items": -8, "reports": 20},
        {"items": True, "reports": 11},
        {"items": 8.0, "reports": 4},
        {"items": 12},
        {"items": 8, "reports": 4, "errors": 0},
        {"items": 80, "reports": 4},  # more than the index holds: every word would be rare
        [8, 4],
    )
    for views in bad_views:
        data = json.loads(json.dumps(good))
        data["fulltext"]["views"] = views
        path.write_text(json.dumps(data))
        with pytest.raises(RadRetrieveError, match="unreadable full-text entry .*rebuild with --rebuild"):
            read_fulltext_json(out)
    data = json.loads(json.dumps(good))
    data["fulltext"]["count"] = float("inf")
    path.write_text(json.dumps(data))
    with pytest.raises(RadRetrieveError, match="unreadable full-text entry"):
        read_fulltext_json(out)
    build_indexes(out)  # an unreadable entry: everything is rebuilt, views counted again
    assert read_fulltext_json(out).views == {"items": 8, "reports": 4}
