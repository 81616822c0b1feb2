"""Prompt ensembles (radretrieve.evaluation.prompts) against hand computations with numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radretrieve.evaluation.prompts import (
    DEFAULT_TEMPLATES,
    Templates,
    class_embeddings,
    load_templates,
    prompts_for,
    templates_hash,
)
from radretrieve.foundation.errors import ConfigError


def test_prompts_fill_class_task_and_task_name():
    tpls = ["a {class} image", "{task}: {class}", "an {organ} radiograph", "a {class} image"]
    assert prompts_for("organ", "chest", tpls) == ["a chest image", "organ: chest", "an chest radiograph"]
    # built-in sets exist per task and every template mentions the class
    for task in ("organ", "modality", "finding"):
        prompts = prompts_for(task, "XYZ")
        assert len(prompts) >= 5 and all("XYZ" in p for p in prompts)
    assert "a CT of the head" in prompts_for("organ", "head")


def test_class_embedding_equals_hand_computation(tiny_model):
    labels = ["head", "chest", "abdomen"]
    tpls = ["a {class} image", "radiograph of the {class}", "a CT of the {class}"]
    got = class_embeddings(tiny_model.encode_text, labels, tpls, task="organ")
    assert got.shape == (3, tiny_model.config.embed_dim) and got.dtype == np.float32
    for c, label in enumerate(labels):
        # one prompt at a time through the real text tower, normalised, averaged, normalised: by hand
        vecs = [tiny_model.encode_text([t.format(**{"class": label})]).numpy()[0] for t in tpls]
        vecs = [v / np.linalg.norm(v) for v in vecs]
        mean = np.mean(vecs, axis=0)
        np.testing.assert_allclose(got[c], mean / np.linalg.norm(mean), atol=1e-5)
    # the ensemble is not just the first prompt
    first = tiny_model.encode_text(["a head image"]).numpy()[0]
    assert not np.allclose(got[0], first / np.linalg.norm(first), atol=1e-3)


def test_class_embedding_renormalises_unnormalised_encoder():
    # an encoder whose outputs are not unit length: each prompt must be normalised before the mean
    table = {"a x": [3.0, 0.0], "b x": [0.0, 1.0], "a y": [1.0, 1.0], "b y": [-2.0, 0.0]}
    got = class_embeddings(lambda texts: np.array([table[t] for t in texts]), ["x", "y"], ["a {class}", "b {class}"])
    x = np.array([1.0, 0.0]) + np.array([0.0, 1.0])
    y = np.array([1.0, 1.0]) / np.sqrt(2) + np.array([-1.0, 0.0])
    np.testing.assert_allclose(got, np.stack([x / np.linalg.norm(x), y / np.linalg.norm(y)]), atol=1e-6)


def test_templates_files_json_and_text(tmp_path):
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"organ": ["{organ} scan", "the {class}"], "*": ["{class} finding"]}))
    t = load_templates(js)
    assert prompts_for("organ", "knee", t) == ["knee scan", "the knee"]
    assert prompts_for("finding", "mass", t) == ["mass finding"]
    assert templates_hash(t) != templates_hash(Templates()) and templates_hash(t) == templates_hash(load_templates(js))
    txt = tmp_path / "t.txt"
    txt.write_text("# my prompts\n\na photo of {class}\n{class}\n")
    assert prompts_for("modality", "CT", load_templates(txt)) == ["a photo of CT", "CT"]
    lst = tmp_path / "l.json"
    lst.write_text('["x {class}"]')
    assert prompts_for("organ", "hand", load_templates(lst)) == ["x hand"]
    assert Templates().for_task("organ") == DEFAULT_TEMPLATES["organ"]


@pytest.mark.parametrize(
    "name,text,needle",
    [
        ("bad.json", "{not json", "not valid JSON"),
        ("bad.json", '{"organ": "a {class}"}', "must be a list"),
        ("bad.json", '{"organ": ["a {colour} image"]}', "{colour}"),
        ("bad.txt", "a {class image\n", "bad template"),
        ("bad.txt", "# only comments\n", "no templates"),
    ],
)
def test_bad_templates_file_names_file(tmp_path, name, text, needle):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_templates(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_star_template_with_other_tasks_placeholder_fails_when_used():
    with pytest.raises(ConfigError, match="modality"):
        prompts_for("organ", "chest", ["{organ} {modality}"])
