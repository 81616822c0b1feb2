"""Benchmark protocols (`bench retrieval --protocol ct-rate|pools|labels`) on hand-made tiny cases, against
brute-force computations written here from the protocols' definitions (plain python loops over sorted lists)."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from radretrieve.cli.app import app
from radretrieve.evaluation.metrics import chance_precision, chance_recall
from radretrieve.evaluation.protocols import PoolOptions, protocol_tables
from radretrieve.evaluation.protocols.pools import partition
from radretrieve.evaluation.retrieval import BenchOptions, Embedded, Side
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.testing.shards import SyntheticItems, normalise, write_out_dir

OPTS = BenchOptions(n_bootstrap=200, seed=3)


def unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    return normalise(rng.standard_normal((n, d)).astype(np.float32))


def side(vectors, studies, labels=None, kind="volume") -> Side:
    n = len(vectors)
    return Side(
        np.arange(n, dtype=np.int64),
        np.asarray(vectors, np.float32),
        tuple(studies),
        tuple(labels or [{}] * n),
        (kind,) * n,
    )


def metric(table, run, name):
    return table.runs[run]["metrics"][name]["value"]


# ------------------------------------------------------------------------------------------ chance levels
def test_chance_levels_match_enumeration():
    # N = 6 items, r = 2 relevant: enumerate every ranking
    n, rel = 6, {0, 1}
    perms = list(itertools.permutations(range(n)))
    for k in (1, 2, 4, 8):
        hit = sum(any(p in rel for p in perm[:k]) for perm in perms) / len(perms)
        prec = sum(sum(p in rel for p in perm[:k]) for perm in perms) / len(perms) / k
        assert chance_recall(np.array([2]), n, k) == pytest.approx(hit)
        assert chance_precision(np.array([2]), n, k) == pytest.approx(prec)


# ------------------------------------------------------------------------------------------ ct-rate
def ctclip_map(vectors, labels, k, leave_out):
    """CT-CLIP's volume_to_volume script, restated: gallery = volumes with a positive label; per query the
    mean Jaccard of the top-k by cosine (python's stable sort); mean over all queries."""
    gallery = [g for g in range(len(vectors)) if sum(labels[g])]
    per_query = []
    for q in range(len(vectors)):
        cands = [g for g in gallery if not (leave_out and g == q)]
        cos = [float(np.dot(vectors[q], vectors[g])) for g in cands]
        top = [cands[i] for i, _ in sorted(enumerate(cos), key=lambda x: x[1], reverse=True)[:k]]
        ratios = []
        for g in top:
            both = sum(a == 1 and b == 1 for a, b in zip(labels[q], labels[g]))
            either = sum(a != b for a, b in zip(labels[q], labels[g]))
            ratios.append(both / (both + either))
        per_query.append(sum(ratios) / len(ratios))
    return sum(per_query) / len(per_query)


def test_ct_rate_against_ctclip_scripts():
    rng = np.random.default_rng(0)
    n = 60
    img = unit(rng, n)
    txt = normalise(img + 0.9 * unit(rng, n)).astype(np.float32)  # reports near their volume
    lab = (rng.random((n, 5)) < 0.3).astype(int)
    lab[:4] = 0  # some volumes without any finding: queries, never gallery
    rows = [{f"abn{j}": str(v) for j, v in enumerate(r)} | {"split": "test"} for r in lab]
    studies = [f"s{i:02d}" for i in range(n)]
    emb = Embedded(side(txt, studies, kind="report"), side(img, studies, rows))
    r2v, v2v = protocol_tables("ct-rate", emb, OPTS)
    sim = txt @ img.T
    for k in (5, 10, 50):  # report -> volume: the own volume among the top k
        expected = np.mean([sum(1 for s in sim[i] if s >= sim[i, i]) <= k for i in range(n)])
        assert metric(r2v, "report->volume", f"R@{k}") == pytest.approx(expected)
    assert r2v.n_gallery == n and r2v.unit == "volume" and r2v.chance["R@10"] == pytest.approx(10 / n)
    for k in (1, 5, 10, 50):
        got_in = metric(v2v, "volume->volume (query in gallery, as CT-CLIP)", f"MAP@{k}")
        assert got_in == pytest.approx(ctclip_map(img, lab.tolist(), k, leave_out=False))
        assert metric(v2v, "volume->volume", f"MAP@{k}") == pytest.approx(ctclip_map(img, lab.tolist(), k, True))
    assert v2v.n_gallery == int((lab.sum(1) > 0).sum())
    assert metric(v2v, "volume->volume (query in gallery, as CT-CLIP)", "MAP@1") > metric(
        v2v, "volume->volume", "MAP@1"
    )  # the query finds itself first


def test_ct_rate_without_binary_labels_is_one_clear_error():
    rng = np.random.default_rng(1)
    v = unit(rng, 5)
    emb = Embedded(side(v, "abcde", kind="report"), side(v, "abcde", [{"organ": "chest"}] * 5))
    with pytest.raises(RadRetrieveError, match="binary"):
        protocol_tables("ct-rate", emb, OPTS)


# ------------------------------------------------------------------------------------------ pools
def test_partitions_are_seeded_full_disjoint_pools():
    a, b = partition(300, 128, 0, 0), partition(300, 128, 0, 1)
    assert [len(p) for p in a] == [128, 128] and len(set(np.concatenate(a))) == 256
    assert not np.array_equal(np.concatenate(a), np.concatenate(b))
    assert all(np.array_equal(x, y) for x, y in zip(a, partition(300, 128, 0, 0)))


def test_pools_against_brute_force():
    rng = np.random.default_rng(2)
    n, size, parts = 70, 16, 3
    img = unit(rng, n)
    txt = normalise(img + 1.2 * unit(rng, n)).astype(np.float32)
    studies = [f"s{i:03d}" for i in range(n)]
    # two images in study 0: the study's image is their normalised mean
    img2 = np.vstack([img, unit(rng, 1)])
    emb = Embedded(side(txt, studies, kind="report"), side(img2, studies + ["s000"], kind="image"))
    (table,) = protocol_tables("pools", emb, OPTS, pools=PoolOptions(pool_size=size, partitions=parts))
    study_img = img.copy()
    mean0 = img2[0] + img2[-1]
    study_img[0] = mean0 / np.linalg.norm(mean0)
    for direction, (q, g) in {"image->report": (study_img, txt), "report->image": (txt, study_img)}.items():
        for k in (1, 8):
            hits, counts = np.zeros(n), np.zeros(n)
            for p in range(parts):
                for pool in partition(n, size, OPTS.seed, p):
                    for i in pool:
                        own = float(q[i] @ g[i])
                        rank = sum(1 for j in pool if float(q[i] @ g[j]) >= own)
                        hits[i] += rank <= k
                        counts[i] += 1
            used = counts > 0
            assert metric(table, direction, f"recall@{k}") == pytest.approx(np.mean(hits[used] / counts[used]))
    assert table.n_gallery == size and table.unit == "study" and table.chance["recall@8"] == pytest.approx(8 / size)


# ------------------------------------------------------------------------------------------ labels
def test_labels_protocol_against_brute_force():
    # texts encode to fixed directions: every prompt naming a class points at that class's axis
    axes = {"chest": 0, "head": 1, "CT": 2, "MRI": 3}

    def encode_text(texts):
        out = np.full((len(texts), 4), 0.05, dtype=np.float32)
        for i, t in enumerate(texts):
            for word, ax in axes.items():
                if word in t.split():
                    out[i, ax] = 1.0
        return out

    rng = np.random.default_rng(4)
    n = 40
    organs = rng.choice(["chest", "head"], n)
    mods = rng.choice(["CT", "MRI", "unknown"], n)
    vec = normalise(rng.standard_normal((n, 4)).astype(np.float32) * 0.6 + np.eye(4)[[axes[o] for o in organs]])
    labels = [{"organ": o, "modality": m} for o, m in zip(organs, mods)]
    emb = Embedded(side(vec[:2], ["a", "b"], kind="report"), side(vec, [f"s{i}" for i in range(n)], labels, "image"))
    tables = protocol_tables("labels", emb, OPTS, encode_text=encode_text, templates=["a {class} image", "{class}"])
    organ, modality = tables
    assert organ.n_gallery == n and modality.n_gallery == int((mods != "unknown").sum())  # unknowns left out
    for table, task, values in ((organ, "organ", organs), (modality, "modality", mods)):
        keep = values != "unknown"
        for label in sorted(set(values[keep])):
            q = np.zeros(4)
            for prompt in (f"a {label} image", label):
                e = encode_text([prompt])[0]
                q += e / np.linalg.norm(e)
            scores = vec[keep] @ (q / np.linalg.norm(q))
            order = sorted(range(len(scores)), key=lambda i: -scores[i])
            run = next(r for r in table.runs if r.startswith(f"{task}={label} "))
            for k in (10, 50):
                expected = sum(values[keep][i] == label for i in order[:k]) / k
                est = table.runs[run]["metrics"][f"P@{k}"]
                assert est["value"] == pytest.approx(expected)
                assert est["low"] <= est["value"] <= est["high"]
    assert metric(organ, f"organ=chest ({(organs == 'chest').sum()})", "P@10") > 0.5  # the signal is there


# ------------------------------------------------------------------------------------------ CLI
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def test_cli_pools_and_standard_print_n_unit_and_chance(tmp_path: Path):
    items = SyntheticItems.random(40, 8, seed=5, kinds=("image",), per_study=1)
    reports = SyntheticItems(
        ids=items.ids + 10_000,
        vectors=items.vectors,
        kinds=("report",) * 40,
        studies=items.studies,
        modalities=items.modalities,
        body_parts=items.body_parts,
    )
    write_out_dir(tmp_path / "idx", [items, reports], dim=8)
    out = tmp_path / "b"
    res = invoke("bench", "retrieval", "--index", str(tmp_path / "idx"), "--out", str(out), "--protocol", "pools")
    assert "N = 40 (unit ranked: study); chance: recall@1 0.025, recall@8 0.200" in res.stdout
    assert "one pool of all" in res.stdout
    data = json.loads((out / "retrieval.json").read_text())
    assert data["protocol"] == "pools" and data["tables"][0]["runs"]["image->report"]["metrics"]["recall@1"]
    res = invoke("bench", "retrieval", "--index", str(tmp_path / "idx"), "--out", str(out), "--no-plot")
    assert "text->image: N = 40 (unit ranked: image); chance: recall@1 0.025" in res.stdout
    bad = runner.invoke(app, ["bench", "retrieval", "--index", str(tmp_path / "idx"), "--protocol", "nope"])
    assert isinstance(bad.exception, RadRetrieveError) and "--protocol 'nope'" in str(bad.exception)


def test_cli_labels_with_model_and_templates_file(tmp_path: Path):
    rows = []
    rng = np.random.default_rng(6)
    for i in range(6):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(path)
        rows.append({"path": path.name, "text": f"case {i}", "organ": ["chest", "head"][i % 2], "modality": "CT"})
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    tpl = tmp_path / "t.json"
    tpl.write_text('{"organ": ["a {organ} image", "{class}"]}')
    out = tmp_path / "b"
    args = ["bench", "retrieval", "--model", "radclip-tiny", "--data", str(manifest), "--out", str(out)]
    res = invoke(*args, "--protocol", "labels", "--templates", str(tpl), "--labels", "organ", "--bootstrap", "50")
    assert "# labels: organ" in res.stdout and str(tpl) in res.stdout
    assert "N = 6 (unit ranked: image); chance: P@10 0.300, P@50 0.060" in res.stdout
    tables = json.loads((out / "retrieval.json").read_text())["tables"]
    assert [t["title"] for t in tables] == ["labels: organ"] and math.isfinite(tables[0]["chance"]["P@10"])
