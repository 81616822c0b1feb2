"""Study grouping and pairing: a file is its own study unless a real key groups it (DICOM StudyInstanceUID,
a manifest or sidecar `study`, a sidecar beside its folder); each file gets only its own same-stem caption."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from pipelines.job import IndexOptions, index_archive
from radretrieve.archive import scan
from radretrieve.outdir.anonymise import read_sources
from radretrieve.outdir.catalog import Catalog
from radretrieve.testing.dicom import write_ct_series


def _png(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 24), dtype=np.uint8)).save(path)


def _flat_folder(root) -> None:
    """The clip-retrieval / img2dataset layout: x.jpg + x.txt pairs in one folder, one image without a caption."""
    for i, caption in enumerate(["chest x-ray, no finding", "head ct, bleed", "abdomen ct, mass"]):
        _png(root / f"img{i}.png", i)
        (root / f"img{i}.txt").write_text(caption)
    _png(root / "uncaptioned.png", 9)


def test_a_flat_folder_of_captioned_images_is_one_study_per_image(tmp_path):
    _flat_folder(tmp_path)
    result = scan(tmp_path)
    by_source = {s.items[0].source: s for s in result.studies}
    assert len(result.studies) == 4 and all(len(s.items) == 1 for s in result.studies)
    assert by_source["img1.png"].report == "head ct, bleed"  # its own caption only, not every caption joined
    assert by_source["uncaptioned.png"].report == ""  # no sidecar: no report, not another file's
    assert len({s.key for s in result.studies}) == 4


def test_a_sidecar_beside_a_folder_groups_its_files(tmp_path):
    _png(tmp_path / "case1" / "a.png", 1)
    _png(tmp_path / "case1" / "b.png", 2)
    (tmp_path / "case1" / "b.txt").write_text("lateral view")
    (tmp_path / "case1.txt").write_text("two views of the chest: clear lungs")
    _png(tmp_path / "case2" / "c.png", 3)  # no sidecar beside case2/: c is a study of its own
    studies = {s.key: s for s in scan(tmp_path).studies}
    assert sorted(i.source for i in studies["case1"].items) == ["case1/a.png", "case1/b.png"]
    assert studies["case1"].report.startswith("two views of the chest")
    assert "lateral view" in studies["case1"].report
    assert [s.key for s in studies.values() if s.items[0].source == "case2/c.png"] == ["file:case2/c.png"]


def test_dicom_studies_follow_the_study_uid_whatever_the_folders(tmp_path):
    study, _ = write_ct_series(tmp_path / "x" / "s1", 3)
    write_ct_series(tmp_path / "y" / "s2", 3, study=study, seed=1)  # the same study, another folder
    write_ct_series(tmp_path / "x" / "s3", 3, seed=2)  # the same folder, another study
    studies = scan(tmp_path).studies
    assert sorted(len(s.items) for s in studies) == [1, 2]
    assert next(s for s in studies if len(s.items) == 2).key == study


def test_manifest_rows_without_a_study_are_their_own_studies(tmp_path):
    _flat_folder(tmp_path)
    with (tmp_path / "m.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "text", "study"])
        w.writerows([["img0.png", "first", ""], ["img1.png", "second", ""], ["img2.png", "third", "pair"]])
        w.writerow(["uncaptioned.png", "fourth", "pair"])
    studies = {s.key: s for s in scan(tmp_path / "m.csv").studies}
    assert len(studies) == 3 and len(studies["pair"].items) == 2
    folder = {s.items[0].item_id: s.key for s in scan(tmp_path).studies if len(s.items) == 1}
    manifest = {s.items[0].item_id: s.key for s in studies.values() if len(s.items) == 1}
    assert manifest.items() <= folder.items()  # a folder scan and its manifest give the same keys


def test_indexed_flat_folder_pairs_each_image_with_its_own_text(tmp_path, tiny_model):
    _flat_folder(tmp_path / "arch")
    out = tmp_path / "out"
    index_archive(tmp_path / "arch", out, tiny_model, IndexOptions(workers=0, progress=False))
    real = read_sources(out)  # paths are anonymised by default: the private map gives each item's file back
    rows = {real[i]: text for i, text in Catalog(out).sql("SELECT item_id, coalesce(text, '') FROM items")}
    assert rows == {
        "img0.png": "chest x-ray, no finding",
        "img1.png": "head ct, bleed",
        "img2.png": "abdomen ct, mass",
        "uncaptioned.png": "",
    }
    assert Catalog(out).sql("SELECT count(*) FROM reports")[0][0] == 3
