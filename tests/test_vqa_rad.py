"""VQA-RAD converter on the real data set (read-only, from ../shared/data/vqa-rad) and on hand-made records."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from radretrieve.datasets.vqa_rad import (
    COLUMNS,
    MODALITIES,
    PLANES,
    assign_splits,
    convert_vqa_rad,
    load_vqa_rad,
)
from tests.samples import needs, sample

VQA_RAD = sample("vqa-rad")
needs_data = needs("vqa-rad", "vqa_rad.json")


def read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vqa") / "manifests" / "vqa_rad.csv"
    convert_vqa_rad(VQA_RAD, out)
    return out


@needs_data
def test_counts_match_the_json(manifest: Path) -> None:
    records = json.loads((VQA_RAD / "vqa_rad.json").read_text())
    organ_of = {r["image_name"]: r["image_organ"] for r in records}
    on_disk = {name for name in organ_of if (VQA_RAD / "images" / name).exists()}
    rows = read_manifest(manifest)
    assert len(rows) == len(on_disk) == 314
    assert list(rows[0]) == list(COLUMNS)
    want_organs = Counter({"HEAD": "head", "CHEST": "chest", "ABD": "abdomen"}[organ_of[n]] for n in on_disk)
    assert Counter(r["organ"] for r in rows) == want_organs
    assert {r["study"] + ".jpg" for r in rows} == on_disk


@needs_data
def test_paths_exist_relative_to_the_manifest(manifest: Path) -> None:
    for row in read_manifest(manifest):
        assert not Path(row["path"]).is_absolute()
        assert (manifest.parent / row["path"]).is_file(), row["path"]


@needs_data
def test_labels_and_text(manifest: Path) -> None:
    rows = read_manifest(manifest)
    assert {r["organ"] for r in rows} == {"head", "chest", "abdomen"}
    assert {r["modality"] for r in rows} <= set(MODALITIES)
    assert {r["plane"] for r in rows} <= set(PLANES)
    assert {"CT", "MRI", "X-ray"} <= {r["modality"] for r in rows}
    for r in rows:
        assert r["text"] and r["case"]
        organ = r["organ"]
        assert f" of the {organ}" in r["text"].split(":")[0]
    by_study = {r["study"]: r for r in rows}
    # synpic54610: "What type of imaging is this? -> MRI Diffusion Weighted", "Is this an axial plane? -> yes".
    first = by_study["synpic54610"]
    assert (first["organ"], first["modality"], first["plane"]) == ("head", "MRI", "axial")
    assert first["text"].startswith("Axial MRI of the head: Are regions of the brain infarcted? Yes.")
    # synpic28602: "What type of imaging does this not represent? -> ultrasound" must not make it US.
    assert by_study["synpic28602"]["modality"] != "US"


@needs_data
def test_splits_are_deterministic_disjoint_and_sized(manifest: Path, tmp_path: Path) -> None:
    rows = read_manifest(manifest)
    counts = Counter(r["split"] for r in rows)
    assert counts == {"train": 220, "val": 31, "test": 63}
    again = tmp_path / "again.csv"
    convert_vqa_rad(VQA_RAD, again)
    assert [r["split"] for r in read_manifest(again)] == [r["split"] for r in rows]
    other = tmp_path / "other.csv"
    convert_vqa_rad(VQA_RAD, other, seed=1, absolute_paths=True)
    other_rows = read_manifest(other)
    assert [r["split"] for r in other_rows] != [r["split"] for r in rows]
    assert all(Path(r["path"]).is_absolute() and Path(r["path"]).is_file() for r in other_rows)


def test_assign_splits_exact_and_stable() -> None:
    names = [f"img{i}" for i in range(10)]
    a = assign_splits(names, seed=3)
    assert Counter(a.values()) == {"train": 7, "val": 1, "test": 2}
    assert a == assign_splits(list(reversed(names)), seed=3)  # input order does not matter
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(names, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="unique"):
        assign_splits(["a", "a"])


def _record(
    qid: int, image: str, qtype: str, question: str, answer: str, phrase: str = "freeform", linked: str | None = None
) -> dict[str, str]:
    return {
        "qid": str(qid),
        "image_name": image,
        "image_organ": "CHEST",
        "question_type": qtype,
        "question": question,
        "answer": answer,
        "answer_type": "OPEN",
        "phrase_type": phrase,
        "qid_linked_id": linked or f"l{qid}",
        "image_case_url": f"https://medpix.nlm.nih.gov/case?id=c-{image}",
    }


def test_rules_on_hand_made_records(tmp_path: Path) -> None:
    records = [
        # a.jpg: negated question ignored; a PA projection makes it a radiograph; a paraphrase is dropped.
        _record(0, "a.jpg", "MODALITY", "What type of imaging does this not represent?", "ultrasound"),
        _record(1, "a.jpg", "PLANE", "Is this a PA image?", "yes"),
        _record(2, "a.jpg", "PRES", "Is there a pneumothorax", "no", linked="p"),
        _record(3, "a.jpg", "PRES", "Is a pneumothorax present?", "no", phrase="para", linked="p"),
        # b.jpg: an answer naming the modality beats a mention elsewhere; "CT or MRI?" read from the answer.
        _record(4, "b.jpg", "MODALITY", "Is this a CT or an MRI?", "MRI"),
        _record(5, "b.jpg", "PRES", "Is there a mass on this CT?", "yes"),
        # c.jpg: conflicting evidence of equal strength -> unknown; a question set without an image is skipped.
        _record(6, "c.jpg", "MODALITY", "What modality?", "CT"),
        _record(7, "c.jpg", "MODALITY", "Which modality?", "MRI"),
        _record(8, "missing.jpg", "PRES", "Is there a mass?", "yes"),
    ]
    (tmp_path / "images").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / "images" / name).write_bytes(b"not read")
    (tmp_path / "vqa_rad.json").write_text(json.dumps(records))
    images = {im.image_name: im for im in load_vqa_rad(tmp_path)}
    assert sorted(images) == ["a.jpg", "b.jpg", "c.jpg"]
    a, b, c = images["a.jpg"], images["b.jpg"], images["c.jpg"]
    assert (a.modality, a.plane) == ("X-ray", "PA")
    assert a.text == "PA X-ray of the chest: Is there a pneumothorax? No."
    assert (b.modality, b.plane) == ("MRI", "unknown")
    assert b.text == "MRI of the chest: Is there a mass on this CT? Yes."
    assert c.modality == "unknown" and c.text == "Image of the chest"
    assert a.case == "c-a.jpg"


def test_missing_json_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vqa_rad.json"):
        load_vqa_rad(tmp_path)
