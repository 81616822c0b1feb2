"""Nightly adds that cost what they add: the stored tuning truth is updated with the new rows only, params are
re-tuned only when recall on the stored queries falls below the target, an add hashes only what it reads, and
`radretrieve verify` hashes everything."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace

import numpy as np
import pytest

from indexers import BuildConfig, build_indexes
from indexers.meta import read_index_json
from indexers.truth import TruthDamaged
from indexers.truth import read as read_truth
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import file_sha256
from radretrieve.outdir.manifest import read_manifest, write_manifest
from radretrieve.testing.shards import SyntheticItems, append_shard, clustered_vectors, write_out_dir

DIM = 16
IVF = BuildConfig(exact_threshold=1000, tune_queries=60, target_recall=0.9)
PQ = BuildConfig(index_type="ivf_pq", tune_queries=60, target_recall=0.9)
CLI = [sys.executable, "-m", "radretrieve"]
KINDS = ("volume", "image", "report")  # every third row a report: the items index gets text queries too


def part(i: int, vecs: np.ndarray) -> SyntheticItems:
    return SyntheticItems.random(len(vecs), DIM, seed=i, id_offset=10**6 * (i + 1), kinds=KINDS, vectors=vecs)


def items_and_reports(parts: list[SyntheticItems]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{kind group: (ids, vectors)} of everything the test wrote, as the two indexes hold them."""
    ids = np.concatenate([p.ids for p in parts])
    vecs = np.concatenate([p.vectors for p in parts])
    kinds = np.concatenate([np.array(p.kinds) for p in parts])
    is_report = kinds == "report"
    return {"items": (ids[~is_report], vecs[~is_report]), "reports": (ids[is_report], vecs[is_report])}


def brute_force(queries: np.ndarray, ids: np.ndarray, vecs: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    keep = ~np.isin(ids, exclude)
    scores = queries @ vecs[keep].T
    return ids[keep][np.argsort(-scores, axis=1, kind="stable")[:, :10]]


def commit_digests(out) -> None:
    """Record the size and SHA-256 of shards without them in the manifest, as `radretrieve index` does when
    it commits a shard (the synthetic writer leaves them unrecorded)."""
    manifest = read_manifest(out)
    shards = tuple(
        e if e.sha256 else replace(e, size=(out / e.file).stat().st_size, sha256=file_sha256(out / e.file))
        for e in manifest.shards
    )
    write_manifest(out, replace(manifest, shards=shards))


def verify(out) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "verify", str(out)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def vecs() -> np.ndarray:
    return clustered_vectors(9000, DIM, 30, seed=4)


def test_add_updates_the_stored_truth_with_the_new_rows_only(tmp_path, vecs) -> None:
    parts = [part(0, vecs[:4000]), part(1, vecs[4000:7500]), part(2, vecs[7500:])]
    write_out_dir(tmp_path, parts[:2], DIM)
    first = build_indexes(tmp_path, IVF)["items"]
    assert first.plan.index_type == "ivf_flat" and first.truth == "items.truth.npz"
    assert first.truth in first.checks  # listed with its size and digest like the other index files
    before = read_truth(tmp_path / "index" / first.truth, DIM)
    assert set(before.sets) == {"image", "text"} and len(before.exclude) == 60

    append_shard(tmp_path, parts[2], "task-00002")
    grown = build_indexes(tmp_path, IVF)["items"]
    add = grown.build["add"]
    assert add["truth"] == "updated" and add["rows_added"] == 1000 and add["shards_added"] == 1
    # the add streamed the new shard's 1000 item rows twice (index + truth), none of the 6000 old ones
    assert grown.build["stream"]["rows"] == 2 * 1000
    after = read_truth(tmp_path / "index" / grown.truth, DIM)
    np.testing.assert_array_equal(after.exclude, before.exclude)
    ids, all_vecs = items_and_reports(parts)["items"]
    for name in ("image", "text"):
        np.testing.assert_array_equal(after.sets[name].queries, before.sets[name].queries)  # re-used, not resampled
        expected = brute_force(after.sets[name].queries, ids, all_vecs, after.exclude)
        np.testing.assert_array_equal(after.sets[name].ids, expected)
    new_ids = parts[2].ids
    assert np.isin(after.sets["image"].ids, new_ids).any()  # the new rows did enter the truth
    rep = read_index_json(tmp_path)["reports"]  # the reports index too (its own text queries, image cross)
    rep_truth = read_truth(tmp_path / "index" / rep.truth, DIM)
    r_ids, r_vecs = items_and_reports(parts)["reports"]
    expected = brute_force(rep_truth.sets["text"].queries, r_ids, r_vecs, rep_truth.exclude)
    np.testing.assert_array_equal(rep_truth.sets["text"].ids, expected)


def test_an_add_that_keeps_recall_does_not_retune_one_below_target_does(tmp_path, vecs) -> None:
    write_out_dir(tmp_path, [part(0, vecs[:4000]), part(1, vecs[4000:7500])], DIM)
    first = build_indexes(tmp_path, IVF, targets=("items",))["items"]
    append_shard(tmp_path, part(2, vecs[7500:8200]), "task-00002")
    kept = build_indexes(tmp_path, IVF, targets=("items",))["items"]
    add = kept.build["add"]
    assert add["retuned"] is False and kept.params == first.params
    assert min(add["recall_before"].values()) >= IVF.target_recall and add["recall_after"] == add["recall_before"]
    assert "tune" in kept.build["seconds"]  # measured on the stored queries

    # the next add asks for more recall than the current params give: measured below target -> re-tuned
    strict = BuildConfig(exact_threshold=1000, tune_queries=60, target_recall=0.995)
    append_shard(tmp_path, part(3, vecs[8200:]), "task-00003")
    retuned = build_indexes(tmp_path, strict, targets=("items",))["items"]
    add = retuned.build["add"]
    assert add["retuned"] is True and min(add["recall_before"].values()) < 0.995
    assert (retuned.params.nprobe or 1) > (first.params.nprobe or 1)
    assert min(add["recall_after"].values()) >= 0.995 and retuned.recall_at_10 >= 0.995


def test_pq_add_holds_every_row_once_and_ids_stay_unique(tmp_path, vecs) -> None:
    import faiss

    parts = [part(0, vecs[:4000]), part(1, vecs[4000:8000]), part(2, vecs[8000:])]
    write_out_dir(tmp_path, parts[:2], DIM)
    build_indexes(tmp_path, PQ, targets=("items",))
    append_shard(tmp_path, parts[2], "task-00002")
    grown = build_indexes(tmp_path, PQ, targets=("items",))["items"]
    assert grown.build["add"]["truth"] == "updated"
    index = faiss.read_index(str(tmp_path / "index" / "volumes.faiss"))  # kept: the views below point into it
    ivf = faiss.extract_index_ivf(index)
    inv = ivf.invlists
    held = np.concatenate([faiss.rev_swig_ptr(inv.get_ids(i), inv.list_size(i)).copy() for i in range(ivf.nlist)])
    expected, _ = items_and_reports(parts)["items"]
    assert len(held) == len(expected) == grown.count  # none lost, none twice (held-out rows included once)
    np.testing.assert_array_equal(np.sort(held), np.sort(expected))


def _damage_in_place(path) -> None:
    """Flip bytes in the middle of a file, keeping its size and modification time (bit rot, not an edit)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_an_add_does_not_hash_untouched_files_and_verify_does(tmp_path, vecs) -> None:
    write_out_dir(tmp_path, [part(0, vecs[:4000]), part(1, vecs[4000:8000])], DIM)
    commit_digests(tmp_path)
    first = build_indexes(tmp_path, PQ, targets=("items",))["items"]
    assert verify(tmp_path).returncode == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    old_shard = tmp_path / manifest["shards"][0]["file"]
    old_segment = tmp_path / "index" / first.store.segments[0].vectors
    _damage_in_place(old_shard)
    _damage_in_place(old_segment)

    append_shard(tmp_path, part(2, vecs[8000:]), "task-00002")
    commit_digests(tmp_path)
    grown = build_indexes(tmp_path, PQ, targets=("items",))["items"]  # reads neither damaged file
    assert grown.build["add"]["rows_added"] == 667 and grown.store.segments[0] == first.store.segments[0]

    res = verify(tmp_path)
    assert res.returncode == 1, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, res.stderr
    shard_line = next(line for line in lines if old_shard.name in line)
    assert "damaged shard" in shard_line and "radretrieve index" in shard_line
    store_line = next(line for line in lines if old_segment.name in line)
    assert "SHA-256 differs" in store_line and "build-index" in store_line and "--rebuild" in store_line


def test_a_damaged_stored_truth_is_detected_and_recomputed(tmp_path, vecs) -> None:
    parts = [part(0, vecs[:4000]), part(1, vecs[4000:8000])]
    write_out_dir(tmp_path, parts, DIM)
    first = build_indexes(tmp_path, IVF, targets=("items",))["items"]
    path = tmp_path / "index" / first.truth
    _damage_in_place(path)
    res = verify(tmp_path)
    assert res.returncode == 1 and path.name in res.stderr and "damaged stored truth" in res.stderr

    again = build_indexes(tmp_path, IVF, targets=("items",))["items"]  # no new shards: only the truth redone
    assert again.build["add"]["truth"] == "recomputed" and again.build["add"]["rows_added"] == 0
    assert again.count == first.count
    assert verify(tmp_path).returncode == 0
    truth = read_truth(path, DIM)
    ids, all_vecs = items_and_reports(parts)["items"]
    for name in ("image", "text"):
        np.testing.assert_array_equal(
            truth.sets[name].ids, brute_force(truth.sets[name].queries, ids, all_vecs, truth.exclude)
        )


def test_a_copied_out_dir_still_adds_and_a_damaged_copied_segment_rebuilds(tmp_path, vecs) -> None:
    """Store segments are checked by size and mtime; a copy changes every mtime, which costs a hash of the
    segment (it matches: still an add), and a segment whose bytes differ then forces a rebuild."""
    src, copy = tmp_path / "src", tmp_path / "copy"
    write_out_dir(src, [part(0, vecs[:4000]), part(1, vecs[4000:8000])], DIM)
    first = build_indexes(src, PQ, targets=("items",))["items"]
    shutil.copytree(src, copy, copy_function=shutil.copyfile)  # new mtimes, same bytes
    segment = first.store.segments[0].vectors
    assert (copy / "index" / segment).stat().st_mtime_ns != first.checks[segment].mtime_ns
    append_shard(copy, part(2, vecs[8000:]), "task-00002")
    grown = build_indexes(copy, PQ, targets=("items",))["items"]
    assert grown.build["add"]["rows_added"] == 667  # an add, not a rebuild

    _damage_in_place(src / "index" / segment)
    shutil.rmtree(copy)
    shutil.copytree(src, copy, copy_function=shutil.copyfile)
    append_shard(copy, part(2, vecs[8000:]), "task-00002")
    rebuilt = build_indexes(copy, PQ, targets=("items",))["items"]
    assert "add" not in rebuilt.build and len(rebuilt.store.segments) == 1  # the damaged segment is gone


@pytest.mark.parametrize("where", ["truth", "file", "checks", "segment"])
@pytest.mark.parametrize("name", ["../../victim.npz", "ABSOLUTE"])
def test_an_index_json_naming_a_file_outside_the_index_folder_is_unreadable_not_followed(
    tmp_path, vecs, where, name
) -> None:
    """index.json names the files the builder reads, hashes and removes (an old stored truth when the rebuilt
    index has none, old store segments); a crafted name outside OUT/index/ made a flat rebuild delete that file.
    Such an index.json is unreadable (one line naming it): verify says so, build-index rebuilds from the shards."""
    out = tmp_path / "out"
    write_out_dir(out, [part(0, vecs[:300])], DIM)
    build_indexes(out, BuildConfig(index_type="flat"), targets=("items",))
    victim = tmp_path / "victim.npz"
    victim.write_bytes(b"not the index's")
    name = str(victim) if name == "ABSOLUTE" else name
    path = out / "index" / "index.json"
    data = json.loads(path.read_text())
    entry = data["indexes"]["items"]
    if where == "checks":
        entry["checks"][name] = next(iter(entry["checks"].values()))
    elif where == "segment":
        entry["store"] = {"dtype": "float32", "count": 300, "segments": [{"vectors": name, "ids": "x", "count": 300}]}
    else:
        entry[where] = name
    path.write_text(json.dumps(data))

    with pytest.raises(RadRetrieveError, match=r"index\.json: unreadable index\.json .* not a plain file name"):
        read_index_json(out)
    res = verify(out)
    assert res.returncode == 1 and "unreadable index.json" in res.stderr and victim.exists()
    rebuilt = build_indexes(out, BuildConfig(index_type="flat", rebuild=True), targets=("items",))["items"]
    assert rebuilt.count == 200 and rebuilt.truth is None  # 300 rows, every third a report
    assert victim.read_bytes() == b"not the index's"


def _npz_member(key: str, header: dict, body: bytes) -> tuple[str, bytes]:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return f"{key}.npy", buf.getvalue() + body


def _crafted_truths(good: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray] | list[tuple[str, bytes]]]:
    """Stored truths a hostile or broken file could hold: arrays of the wrong dtype, shapes numpy would
    allocate before reading (36 TiB), a compressed member (a zip bomb), and files that are no npz at all."""
    huge = {"descr": "<f4", "fortran_order": False, "shape": (10**7, 10**6)}
    return {
        "object ids": good | {"image.ids": np.full((3, 10), None, dtype=object)},
        "string ids": good | {"image.ids": np.full((3, 10), "7")},
        "string queries": good | {"image.queries": np.full((3, DIM), "0.5")},
        "complex queries": good | {"image.queries": np.zeros((3, DIM), complex)},
        "2-D exclude": good | {"exclude": np.zeros((2, 2), np.int64)},
        "36 TiB shape": [_npz_member("image.queries", huge, bytes(64))]
        + [(f"{k}.npy", _npy(v)) for k, v in good.items() if k != "image.queries"],
    }


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def test_a_crafted_stored_truth_is_damaged_never_unpickled_nor_allocated(tmp_path, vecs) -> None:
    """A stored truth is read without trusting it: an object array is never unpickled, a wrong dtype, a shape
    larger than the file or a compressed member is `TruthDamaged` (one line naming the file), not a raw
    ValueError or MemoryError; and an add whose truth has no recorded check (an older index.json, or one edited)
    recomputes it from the shards instead of failing."""
    good = {
        "exclude": np.arange(3, dtype=np.int64),
        "image.queries": np.zeros((3, DIM), np.float32),
        "image.ids": np.zeros((3, 10), np.int64),
        "image.scores": np.zeros((3, 10), np.float32),
    }
    for what, arrays in _crafted_truths(good).items():
        path = tmp_path / f"{what}.npz"
        with zipfile.ZipFile(path, "w") as zf:
            members = arrays if isinstance(arrays, list) else [(f"{k}.npy", _npy(v)) for k, v in arrays.items()]
            for name, data in members:
                zf.writestr(name, data)
        with pytest.raises(TruthDamaged, match=re.escape(str(path))):
            read_truth(path, DIM)
    compressed = tmp_path / "compressed.npz"
    np.savez_compressed(compressed, **good)
    with pytest.raises(TruthDamaged, match="is not one a stored truth holds"):
        read_truth(compressed, DIM)
    for what, data in {
        "not a zip": b"\x80\x04K\x01.",
        "truncated": (tmp_path / "2-D exclude.npz").read_bytes()[:90],
    }.items():
        (tmp_path / what).write_bytes(data)
        with pytest.raises(TruthDamaged, match="unreadable stored truth"):
            read_truth(tmp_path / what, DIM)

    out = tmp_path / "out"
    write_out_dir(out, [part(0, vecs[:4000])], DIM)
    first = build_indexes(out, IVF, targets=("items",))["items"]
    shutil.copy(tmp_path / "36 TiB shape.npz", out / "index" / first.truth)
    path = out / "index" / "index.json"
    data = json.loads(path.read_text())
    del data["indexes"]["items"]["checks"][first.truth]
    path.write_text(json.dumps(data))
    append_shard(out, part(1, vecs[4000:4600]), "task-00001")
    grown = build_indexes(out, IVF, targets=("items",))["items"]
    assert grown.build["add"]["truth"] == "recomputed" and grown.count == first.count + 400
