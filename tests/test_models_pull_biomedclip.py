"""`radretrieve models pull biomedclip`: an open_clip `hf-hub:` model whose text tower is a Hugging Face BERT
(open_clip's CustomTextCLIP), against a real hub server on 127.0.0.1 serving a tiny model in BiomedCLIP's layout
under the catalog's repo names. The model directory must load with no hub and no huggingface cache at all, and
give the embeddings open_clip itself computes for the same hub repo (run in a subprocess against the same hub)."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from radretrieve.models.published import CATALOG
from radretrieve.testing.hf_hub_server import HubServer, tiny_biomedclip_repos
from tests.procs import side_by_side
from tests.test_models_pull import cli, env_for, error_lines, model_dir

REPO = CATALOG["biomedclip"].repo
TEXT_REPO = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
TEXTS = ["a chest radiograph", "axial ct of the abdomen with contrast", "nodule"]
# Embeddings of TEXTS and of three seeded 32 px images, saved to OUT: `open_clip` builds the model from the hub
# (the reference), `radretrieve` loads the model directory DIR.
EMBED = f"""
import sys, torch
mode, ref, out = sys.argv[1:4]
texts = {TEXTS!r}
images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
if mode == "open_clip":
    import open_clip
    model, tok = open_clip.create_model(ref).eval(), open_clip.get_tokenizer(ref)
    with torch.no_grad():
        t, i = model.encode_text(tok(texts), normalize=True), model.encode_image(images, normalize=True)
    tokens = tok(texts)
else:
    from radretrieve.models.loading import load_model
    from radretrieve.models.open_clip_import import import_lean
    import_lean()  # as the radretrieve command: first a model without a Hugging Face tower,
    load_model("radclip-tiny", device="cpu", warn=False)
    assert "transformers" not in sys.modules  # so open_clip was imported without transformers; then
    model = load_model(ref, device="cpu")  # this model's tower needs it: open_clip's module for it is redone
    t, i, tokens = model.encode_text(texts), model.encode_images(images), model.tokenizer(texts)
torch.save({{"text": t, "image": i, "tokens": tokens}}, out)
"""


@pytest.fixture(scope="module")
def biomed():
    return tiny_biomedclip_repos(TEXT_REPO, seed=4)[1]


def _serve(server: HubServer, biomed) -> HubServer:
    for name, data in biomed["open_clip"].items():
        server.add(REPO, name, data)
    for name, data in biomed["text"].items():
        server.add(TEXT_REPO, name, data)
    return server


@pytest.fixture()
def hub(biomed):
    with HubServer() as server:
        yield _serve(server, biomed)


@pytest.fixture(scope="module")
def pulled(biomed, tmp_path_factory):
    """`radretrieve models pull biomedclip` once for the module, from a hub of its own, and beside it open_clip's
    embeddings of the same hub repo (the reference; `embed`): (the hub, the pull's environment, the finished
    pull, its home, the reference). The model directory is read only; a test that damages it copies it."""
    tmp = tmp_path_factory.mktemp("pulled")
    with HubServer() as server:
        env = env_for(tmp, _serve(server, biomed))
        proc, reference = side_by_side(
            [
                functools.partial(cli, env, "models", "pull", "biomedclip"),
                functools.partial(embed, env, "open_clip", f"hf-hub:{REPO}", tmp / "ref.pt"),
            ]
        )
        yield server, env, proc, tmp, reference


def embed(env: dict[str, str], mode: str, ref: str, out: Path) -> dict[str, torch.Tensor]:
    proc = subprocess.run(
        [sys.executable, "-c", EMBED, mode, ref, str(out)], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    return torch.load(out, weights_only=True)


def test_pull_biomedclip_loads_offline_and_gives_open_clips_embeddings(pulled, biomed, tmp_path):
    hub, env, proc, home, reference = pulled
    assert proc.returncode == 0, proc.stderr
    directory = model_dir(proc.stdout)
    assert directory == home / "rr" / "models" / "biomedclip"
    assert sorted(p.name for p in (directory / "hf_text").iterdir()) == sorted(biomed["text"])
    prov = json.loads((directory / "provenance.json").read_text())
    weights = biomed["open_clip"]["open_clip_pytorch_model.bin"]
    assert prov["digest"] == "sha256:" + hashlib.sha256(weights).hexdigest()
    text_files = prov["details"]["text_model"]["files"]
    assert text_files == {n: "sha256:" + hashlib.sha256(d).hexdigest() for n, d in biomed["text"].items()}
    rows = {r["name"]: r for r in json.loads(cli(env, "models", "--json").stdout)}
    assert rows["biomedclip"]["state"] == "pulled"
    seen = len(hub.seen)  # HF_HUB_OFFLINE: the text model's files come from the cache too, without a request
    again = cli(env | {"HF_HUB_OFFLINE": "1"}, "models", "pull", "biomedclip", "--to", str(tmp_path / "offline"))
    assert again.returncode == 0 and len(hub.seen) == seen, again.stderr
    assert sorted(p.name for p in (tmp_path / "offline" / "hf_text").iterdir()) == sorted(biomed["text"])

    # no hub and an empty huggingface cache: everything the model needs is in its directory
    seen = len(hub.seen)
    bare = env | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf"), "TRANSFORMERS_OFFLINE": "1"}
    got = embed(bare, "radretrieve", str(directory), tmp_path / "got.pt")
    assert len(hub.seen) == seen
    assert got["tokens"].shape == (len(TEXTS), 24) and torch.equal(got["tokens"], reference["tokens"])
    torch.testing.assert_close(got["text"], reference["text"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["image"], reference["image"], atol=1e-5, rtol=1e-4)

    # the tokenizer is part of the model: a changed vocabulary is caught by the fingerprint, a broken one is one line
    # (in a copy: the module's other tests use the pulled directory)
    from radretrieve.foundation.errors import ModelLoadError
    from radretrieve.models.loading import load_model

    directory = Path(shutil.copytree(directory, tmp_path / "damaged"))
    vocab = directory / "hf_text" / "vocab.txt"
    vocab.write_bytes(vocab.read_bytes() + b"extra\n")
    with pytest.raises(ModelLoadError, match="fingerprint"):
        load_model(str(directory), device="cpu")
    vocab.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ModelLoadError, match="hf_text: its text model files do not build"):
        load_model(str(directory), device="cpu")


def test_a_missing_or_corrupted_text_model_file_is_refused_before_the_weights(hub, tmp_path):
    env = env_for(tmp_path, hub)
    hub.repos[TEXT_REPO]["vocab.txt"].corrupt = 1
    proc = cli(env, "models", "pull", "biomedclip")
    assert proc.returncode == 1 and len(error_lines(proc)) == 1, proc.stderr
    assert "vocab.txt" in proc.stderr and "does not match" in proc.stderr
    assert hub.gets("open_clip_pytorch_model.bin") == []
    del hub.repos[TEXT_REPO]["vocab.txt"]
    proc = cli(env, "models", "pull", "biomedclip")
    assert proc.returncode == 1 and len(error_lines(proc)) == 1 and "vocabulary" in proc.stderr, proc.stderr
    assert hub.gets("open_clip_pytorch_model.bin") == []
    assert not (tmp_path / "rr" / "models" / "biomedclip").exists()


def test_loading_it_directly_by_hub_id_says_to_pull_it_before_downloading_the_weights(hub, tmp_path):
    load = "from radretrieve.models.loading import load_model; load_model(f'hf-hub:{__import__(\"sys\").argv[1]}')"
    proc = subprocess.run(
        [sys.executable, "-c", load, REPO], env=env_for(tmp_path, hub), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 1 and f"radretrieve models pull hf-hub:{REPO}" in proc.stderr, proc.stderr
    assert hub.gets("open_clip_pytorch_model.bin") == []


def test_a_pulled_biomedclip_trains_its_hugging_face_text_tower_too(pulled, tmp_path):
    """The 2D stage with the text tower unfrozen: CustomTextCLIP keeps its text tower in `text`, not `transformer`."""
    from radretrieve.models.loading import load_model
    from radretrieve.training import DataConfig, ImageStageConfig, TrainConfig, VolumeStageConfig, train
    from tests.test_provenance import _manifest

    proc = pulled[2]
    assert proc.returncode == 0, proc.stderr
    start = load_model(str(model_dir(proc.stdout)), device="cpu", warn=False)
    before = {n: p.detach().clone() for n, p in start.clip.text.named_parameters()}
    stage = ImageStageConfig(epochs=1, batch_size=2, warmup_fraction=0.0, train_text=True, text_lr=1e-3)
    cfg = TrainConfig(data=DataConfig(val_fraction=0.0), image_stage=stage, volume_stage=VolumeStageConfig(epochs=0))
    result = train(cfg, _manifest(tmp_path / "data"), tmp_path / "trained", start, device="cpu")
    assert result.steps >= 1
    after = dict(result.model.clip.text.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)  # the BERT's weights moved
