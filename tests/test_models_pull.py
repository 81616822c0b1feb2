"""`radretrieve models pull / import / models`, against a real hub server on 127.0.0.1
(`radretrieve.testing.hf_hub_server`) that `huggingface_hub` talks to through HF_ENDPOINT: tiny checkpoints in the
real formats (a transformers CLIPModel state dict as RadCLIP.pth, an open_clip hub repo), digests, resume of a cut
download, a corrupted file refused, the cache, offline mode. The CLI runs in subprocesses (huggingface_hub reads
its environment at import). Embeddings are compared with the same weights run by transformers / open_clip."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from radretrieve.testing.hf_hub_server import HubServer, tiny_hf_clip, tiny_open_clip_repo
from tests.procs import side_by_side

RADCLIP_REPO, RADCLIP_FILE = "zluvolyote/RadCLIP", "RadCLIP.pth"
TEXTS = ["a chest radiograph", "axial CT of the abdomen with contrast"]


@pytest.fixture(scope="module")
def tiny():
    """The tiny CLIPModel, its RadCLIP.pth bytes, the tiny open_clip model and its repo files."""
    hf_model, hf_bytes = tiny_hf_clip(seed=1)
    oc_model, oc_files = tiny_open_clip_repo(seed=2)
    return {"hf": hf_model, "hf_bytes": hf_bytes, "oc": oc_model, "oc_files": oc_files}


@pytest.fixture()
def hub(tiny):
    with HubServer() as server:
        server.add(RADCLIP_REPO, RADCLIP_FILE, tiny["hf_bytes"])
        for name, data in tiny["oc_files"].items():
            server.add("test/tiny-open-clip", name, data)
        yield server


def env_for(tmp: Path, hub: HubServer | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "RADRETRIEVE_"))}
    env |= {"HF_HOME": str(tmp / "hf"), "RADRETRIEVE_HOME": str(tmp / "rr"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env |= {"HF_ENDPOINT": hub.url if hub is not None else "http://127.0.0.1:9"} | extra
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "radretrieve", *args], env=env, capture_output=True, text=True, timeout=240
    )


def clis(*runs: tuple[dict[str, str], list[str]]) -> list[subprocess.CompletedProcess]:
    """`cli(env, *args)` for each (env, args), side by side (tests/procs.py): commands independent of each other."""
    return side_by_side([functools.partial(cli, env, *args) for env, args in runs])


def model_dir(out: str) -> Path:
    lines = [line for line in out.splitlines() if line.startswith("use it with: --model ")]
    assert len(lines) == 1, out
    return Path(lines[0].removeprefix("use it with: --model "))


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def hf_reference(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised text and image features of a transformers CLIPModel: the independent reference."""
    from open_clip.tokenizer import tokenize

    with torch.no_grad():
        text = model.get_text_features(input_ids=tokenize(TEXTS, context_length=16))
        image = model.get_image_features(pixel_values=images)
    text, image = (getattr(t, "pooler_output", t) for t in (text, image))
    return F.normalize(text, dim=-1), F.normalize(image, dim=-1)


def assert_same_embeddings(directory: Path, text_ref: torch.Tensor, image_ref: torch.Tensor, images) -> None:
    from radretrieve.models.loading import load_model

    model = load_model(str(directory), device="cpu")
    torch.testing.assert_close(model.encode_text(TEXTS), text_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.encode_images(images), image_ref, atol=1e-5, rtol=1e-4)


def images32() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def test_pull_open_clip_hub_repo(hub, tiny, tmp_path):
    env = env_for(tmp_path, hub)
    proc = cli(env, "models", "pull", "hf-hub:test/tiny-open-clip")
    assert proc.returncode == 0, proc.stderr
    directory = model_dir(proc.stdout)
    # one folder under the models home, named as the hub cache names the repo, and listed by `radretrieve models`
    assert directory == tmp_path / "rr" / "models" / "test--tiny-open-clip"
    assert json.loads((directory / "config.json").read_text())["name"] == "test--tiny-open-clip"
    rows = {r["name"]: r for r in json.loads(cli(env, "models", "--json").stdout)}
    assert rows["test--tiny-open-clip"]["state"] == "pulled" and rows["test--tiny-open-clip"]["path"] == str(directory)
    digest = hashlib.sha256(tiny["oc_files"]["open_clip_model.safetensors"]).hexdigest()
    assert json.loads((directory / "provenance.json").read_text())["digest"] == "sha256:" + digest
    config = json.loads((directory / "config.json").read_text())
    assert config["preprocess"]["mean"] == [0.5, 0.5, 0.5]  # the repo's own preprocessing config
    from open_clip.tokenizer import tokenize

    with torch.no_grad():
        text_ref = F.normalize(tiny["oc"].encode_text(tokenize(TEXTS, context_length=16)), dim=-1)
        image_ref = F.normalize(tiny["oc"].encode_image(images32()), dim=-1)
    assert_same_embeddings(directory, text_ref, image_ref, images32())


def test_interrupted_download_resumes_with_a_range_request(hub, tiny, tmp_path):
    # huggingface_hub writes what it got in chunks of 10 MiB: cut after the first one (the file is ~12.6 MB)
    cut = 11_000_000
    assert len(tiny["hf_bytes"]) > cut
    hub.repos[RADCLIP_REPO][RADCLIP_FILE].cut_after = cut
    proc = cli(env_for(tmp_path, hub), "models", "pull", "radclip")
    assert proc.returncode == 0, proc.stderr
    ranges = [r for _, _, r in hub.gets(RADCLIP_FILE)]
    assert ranges[0] is None and len(ranges) == 2 and ranges[1].startswith("bytes="), ranges
    assert 0 < int(ranges[1].removeprefix("bytes=").split("-")[0]) <= cut  # resumed, not started again
    prov = json.loads((model_dir(proc.stdout) / "provenance.json").read_text())
    assert prov["digest"] == "sha256:" + hashlib.sha256(tiny["hf_bytes"]).hexdigest()


def test_corrupted_download_is_refused_and_not_left_in_the_cache(hub, tiny, tmp_path):
    hub.repos[RADCLIP_REPO][RADCLIP_FILE].corrupt = 1
    env = env_for(tmp_path, hub)
    proc = cli(env, "models", "pull", "radclip")
    assert proc.returncode == 1
    errors = error_lines(proc)
    want = hashlib.sha256(tiny["hf_bytes"]).hexdigest()
    assert len(errors) == 1 and RADCLIP_FILE in errors[0] and want in errors[0], proc.stderr
    blobs = tmp_path / "hf" / "hub" / "models--zluvolyote--RadCLIP" / "blobs"
    assert not any(blobs.glob("*")) if blobs.is_dir() else True
    assert not (tmp_path / "rr" / "models" / "radclip").exists()
    assert not any(p.name.startswith(".") for p in (tmp_path / "rr" / "models").glob("*"))
    again = cli(env, "models", "pull", "radclip")  # the next pull downloads it again, and it is right
    assert again.returncode == 0, again.stderr
    assert len(hub.gets(RADCLIP_FILE)) == 2


def test_declared_huge_file_is_refused_before_download(hub, tmp_path):
    hub.repos[RADCLIP_REPO][RADCLIP_FILE].declared_size = 50 << 30
    proc = cli(env_for(tmp_path, hub), "models", "pull", "radclip")
    assert proc.returncode == 1 and len(error_lines(proc)) == 1 and "declares" in proc.stderr, proc.stderr
    assert hub.gets(RADCLIP_FILE) == []


def test_path_like_etag_is_refused_and_nothing_written_outside_the_cache(hub, tmp_path):
    # huggingface_hub names the cache blob after the ETag: a hostile hub's "../.." would place it elsewhere
    hub.repos[RADCLIP_REPO][RADCLIP_FILE].declared_etag = "../../../../escaped"
    proc = cli(env_for(tmp_path, hub), "models", "pull", "radclip")
    assert proc.returncode == 1 and len(error_lines(proc)) == 1 and "ETag" in proc.stderr, proc.stderr
    assert not any(tmp_path.rglob("escaped*"))
    assert hub.gets(RADCLIP_FILE) == []


def test_pull_radclip_records_its_digest_is_served_from_the_cache_and_listed(hub, tiny, tmp_path):
    """RadCLIP's format pulled, recorded and listed; pulled again: nothing changed, a damaged copy redone, and
    from the cache (one download); offline, another copy with not one request, giving the weights' embeddings."""
    env = env_for(tmp_path, hub)
    proc = cli(env, "models", "pull", "radclip")
    assert proc.returncode == 0, proc.stderr
    directory = model_dir(proc.stdout)
    assert directory == tmp_path / "rr" / "models" / "radclip"
    assert "check the terms" in proc.stdout  # no licence published: the user is told
    prov = json.loads((directory / "provenance.json").read_text())
    assert prov["kind"] == "pulled" and prov["trained"] is True and "adapter" in prov["details"]
    assert prov["digest"] == "sha256:" + hashlib.sha256(tiny["hf_bytes"]).hexdigest()
    assert prov["origin"].startswith(f"hf:{RADCLIP_REPO}@") and prov["origin"].endswith("/" + RADCLIP_FILE)
    listing = cli(env, "models", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    assert rows["radclip-tiny"]["state"] == "untrained"
    pulled = rows["radclip"]
    assert pulled["state"] == "pulled" and "check the terms" in pulled["licence"]
    assert pulled["size_bytes"] == sum(f.stat().st_size for f in Path(pulled["path"]).iterdir()) > 0
    again = cli(env, "models", "pull", "radclip")
    assert again.returncode == 0 and "nothing changed" in again.stdout, again.stderr
    weights = Path(pulled["path"]) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-16:] = bytes(16)  # a damaged copy: same record, other tensor bytes
    weights.write_bytes(bytes(data))
    repaired = cli(env, "models", "pull", "radclip")
    assert repaired.returncode == 0 and "nothing changed" not in repaired.stdout, repaired.stderr
    assert len(hub.gets(RADCLIP_FILE)) == 1  # one download; the rest came from the cache
    seen = len(hub.seen)
    offline = cli(env | {"HF_HUB_OFFLINE": "1"}, "models", "pull", "radclip", "--to", str(tmp_path / "offline"))
    assert offline.returncode == 0 and model_dir(offline.stdout) == tmp_path / "offline", offline.stderr
    assert len(hub.seen) == seen  # offline: not one request
    text_ref, image_ref = hf_reference(tiny["hf"], images32())
    assert_same_embeddings(tmp_path / "offline", text_ref, image_ref, images32())
    table = cli(env, "models")
    assert table.returncode == 0 and f"--model {pulled['path']}" in table.stdout


def test_offline_before_any_pull_fails_in_one_line(tmp_path):
    start = time.monotonic()
    proc = cli(env_for(tmp_path, None, HF_HUB_OFFLINE="1"), "models", "pull", "radclip")
    assert proc.returncode == 1
    assert len(error_lines(proc)) == 1 and "HF_HUB_OFFLINE" in proc.stderr, proc.stderr
    assert time.monotonic() - start < 60
    assert not (tmp_path / "rr" / "models" / "radclip").exists()


def test_unreachable_hub_fails_at_once_in_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    proc = cli(env_for(tmp_path, None, HF_ENDPOINT=f"http://127.0.0.1:{port}"), "models", "pull", "radclip")
    assert proc.returncode == 1
    assert len(error_lines(proc)) == 1 and "cannot reach the hub" in proc.stderr, proc.stderr
    assert time.monotonic() - start < 30  # no half-minute of retries


def test_unknown_name_and_missing_repo_or_file_fail_in_one_line(hub, tmp_path):
    env = env_for(tmp_path, hub)
    hub.add("test/no-weights", "open_clip_config.json", hub.repos["test/tiny-open-clip"]["open_clip_config.json"].data)
    pulls = (["nope"], ["hf-hub:test/missing"], ["hf-hub:test/no-weights"])
    unknown, missing, no_file = clis(*[(env, ["models", "pull", *name]) for name in pulls])
    assert unknown.returncode == 1 and "radclip, openai-vit-b-16, biomedclip" in unknown.stderr
    assert missing.returncode == 1 and len(error_lines(missing)) == 1 and "not found" in missing.stderr
    assert no_file.returncode == 1 and len(error_lines(no_file)) == 1 and "404" in no_file.stderr, no_file.stderr
    assert not (tmp_path / "rr" / "models").exists() or not any((tmp_path / "rr" / "models").iterdir())


def test_import_a_file_copied_by_hand(tiny, tmp_path):
    weights = tmp_path / "usb" / "RadCLIP.pth"
    weights.parent.mkdir()
    weights.write_bytes(tiny["hf_bytes"])
    proc = cli(env_for(tmp_path, None), "models", "import", str(weights), "--name", "radclip-usb", "--quick-gelu")
    assert proc.returncode == 0, proc.stderr
    directory = model_dir(proc.stdout)
    assert directory == tmp_path / "rr" / "models" / "radclip-usb"
    prov = json.loads((directory / "provenance.json").read_text())
    assert prov["kind"] == "imported" and prov["origin"] == "RadCLIP.pth"
    assert prov["digest"] == "sha256:" + hashlib.sha256(tiny["hf_bytes"]).hexdigest()
    text_ref, image_ref = hf_reference(tiny["hf"], images32())
    assert_same_embeddings(directory, text_ref, image_ref, images32())


def test_hub_model_whose_hugging_face_text_tower_is_not_on_the_hub_is_refused_before_its_weights(hub, tmp_path):
    # BiomedCLIP's layout (tests/test_models_pull_biomedclip.py): the text tower's config comes from another repo
    config = {"model_cfg": {"embed_dim": 32, "vision_cfg": {}, "text_cfg": {"hf_model_name": "org/bert"}}}
    hub.add("test/hf-text", "open_clip_config.json", json.dumps(config).encode())
    hub.add("test/hf-text", "open_clip_model.safetensors", b"\0" * 4096)
    config["model_cfg"]["text_cfg"]["hf_model_name"] = "../../outside"  # never a path under the cache
    hub.add("test/hf-path", "open_clip_config.json", json.dumps(config).encode())
    env = env_for(tmp_path, hub)
    proc, path = clis(*[(env, ["models", "pull", f"hf-hub:test/{name}"]) for name in ("hf-text", "hf-path")])
    assert proc.returncode == 1 and len(error_lines(proc)) == 1 and "org/bert" in proc.stderr, proc.stderr
    assert hub.gets("open_clip_model.safetensors") == []
    assert path.returncode == 1 and len(error_lines(path)) == 1 and "not a hub repo id" in path.stderr, path.stderr


def test_import_an_open_clip_checkpoint_infers_its_architecture(tiny, tmp_path):
    weights = tmp_path / "open_clip_model.safetensors"
    weights.write_bytes(tiny["oc_files"]["open_clip_model.safetensors"])
    env = env_for(tmp_path, None)
    proc, wrong = clis(
        (env, ["models", "import", str(weights), "--format", "open_clip", "--quick-gelu"]),
        (env, ["models", "import", str(weights), "--format", "hf-clip", "--name", "x"]),
    )
    assert proc.returncode == 0, proc.stderr
    from open_clip.tokenizer import tokenize

    with torch.no_grad():
        text_ref = F.normalize(tiny["oc"].encode_text(tokenize(TEXTS, context_length=16)), dim=-1)
        image_ref = F.normalize(tiny["oc"].encode_image(images32()), dim=-1)
    assert_same_embeddings(model_dir(proc.stdout), text_ref, image_ref, images32())
    assert wrong.returncode == 1 and len(error_lines(wrong)) == 1 and "open_clip" in wrong.stderr, wrong.stderr


def test_import_of_a_gelu_open_clip_checkpoint_takes_the_activation_from_the_files_or_the_user(tmp_path):
    """LAION-style weights (plain GELU): never converted as quick GELU on a guess (other embeddings, no error)."""
    reference, files = tiny_open_clip_repo(seed=3, quick_gelu=False)
    weights = tmp_path / "usb" / "laion.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(files["open_clip_model.safetensors"])
    env = env_for(tmp_path, None)
    refused = cli(env, "models", "import", str(weights))
    assert refused.returncode == 1 and len(error_lines(refused)) == 1, refused.stderr
    assert "--no-quick-gelu" in refused.stderr and str(weights) in refused.stderr
    assert not (tmp_path / "rr" / "models" / "laion").exists()
    said = cli(env, "models", "import", str(weights), "--no-quick-gelu")
    assert said.returncode == 0, said.stderr
    from open_clip.tokenizer import tokenize

    with torch.no_grad():  # open_clip's own model of these weights: the independent reference
        text_ref = F.normalize(reference.encode_text(tokenize(TEXTS, context_length=16)), dim=-1)
        image_ref = F.normalize(reference.encode_image(images32()), dim=-1)
    assert_same_embeddings(model_dir(said.stdout), text_ref, image_ref, images32())
    assert json.loads((model_dir(said.stdout) / "provenance.json").read_text())["details"]["quick_gelu"] is False
    # the config a hub snapshot holds beside the weights says it (no quick_gelu: open_clip's GELU)
    (weights.parent / "open_clip_config.json").write_bytes(files["open_clip_config.json"])
    beside, contradicted, arch = clis(
        (env, ["models", "import", str(weights), "--name", "laion-2"]),
        (env, ["models", "import", str(weights), "--name", "laion-3", "--quick-gelu"]),
        (env, ["models", "import", str(weights), "--name", "laion-4", "--arch", "ViT-B-16-quickgelu"]),
    )
    assert beside.returncode == 0, beside.stderr
    assert_same_embeddings(model_dir(beside.stdout), text_ref, image_ref, images32())
    assert contradicted.returncode == 1 and len(error_lines(contradicted)) == 1, contradicted.stderr
    assert arch.returncode == 1 and "ViT-B-16-quickgelu" in arch.stderr, arch.stderr  # it says GELU beside it


def test_a_destination_that_is_not_a_pulled_model_is_never_replaced(tiny, tmp_path):
    weights = tmp_path / "RadCLIP.pth"
    weights.write_bytes(tiny["hf_bytes"])
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    model = tmp_path / "model"
    env = env_for(tmp_path, None)
    proc, made = clis(
        (env, ["models", "import", str(weights), "--to", str(folder)]),
        (env, ["models", "import", str(weights), "--to", str(model), "--quick-gelu"]),
    )
    assert proc.returncode == 1 and len(error_lines(proc)) == 1 and "not a model directory" in proc.stderr
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and (folder / "notes.txt").read_text() == "keep me"
    # a model an earlier import made, with the user's own file put beside it: refused too, the file kept
    assert made.returncode == 0, made.stderr
    (model / "my_notes.txt").write_text("mine")
    again = cli(env, "models", "import", str(weights), "--to", str(model), "--quick-gelu")
    assert again.returncode == 1 and "also holds files that are not the model's (my_notes.txt)" in again.stderr
    assert (model / "my_notes.txt").read_text() == "mine"
    dead = tmp_path / ".model.999999999-0123abcd.tmp"  # a temp folder of an import killed mid-write (no such pid)
    alive = tmp_path / f".model.{os.getpid()}-0123abcd.tmp"  # one whose writer still runs
    other = tmp_path / ".notes.999999999-0123abcd.tmp"  # a dead temp of another name: not the import's to remove
    for folder in (dead, alive, other):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    cleaned, here = clis(
        (env, ["models", "import", str(weights), "--to", str(model), "--quick-gelu"]),
        (env, ["models", "import", str(weights), "--to", ".", "--quick-gelu"]),  # the current folder, by name
    )
    assert cleaned.returncode == 1
    assert not dead.exists() and alive.exists() and other.exists()
    assert here.returncode == 1 and "not a model directory" in here.stderr and "ValueError" not in here.stderr


def test_the_real_radclip_layout_is_recognised_as_radclip_vit_l_14():
    """RadCLIP.pth's architecture (transformers' CLIP ViT-L/14 config), built on the meta device: shapes only."""
    from transformers import CLIPConfig, CLIPModel

    from radretrieve.models.hf_convert import hf_to_open_clip
    from radretrieve.models.install import config_from_shapes
    from radretrieve.models.registry import get_model_config

    text = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
    vision = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}
    vision |= {"image_size": 224, "patch_size": 14}
    with torch.device("meta"):
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768))
    state = hf_to_open_clip(model.state_dict())
    config, notes = config_from_shapes(state, Path("RadCLIP.pth"), "radclip", "", "radclip-vit-l-14", True)
    assert notes == ()
    assert config.clip == get_model_config("radclip-vit-l-14").clip


def test_openai_vit_b_16_entry_converts_with_open_clips_own_config():
    """`openai-vit-b-16` uses open_clip's ViT-B-16 config with the openai tag's quick GELU and mean/std, and the
    bundled BPE: the same architecture as the registry's radclip-vit-b-16 (whose weights it then fits)."""
    from radretrieve.models.published import CATALOG
    from radretrieve.models.pull import _builtin_open_clip_config
    from radretrieve.models.registry import get_model_config

    config = _builtin_open_clip_config(CATALOG["openai-vit-b-16"])
    assert config.clip["quick_gelu"] is True and config.tokenizer == "clip-bpe"
    assert config.preprocess.mean == (0.48145466, 0.4578275, 0.40821073) and config.preprocess.profile == "clip"
    assert _same_architecture(config.clip, get_model_config("radclip-vit-b-16").clip)


def _same_architecture(a, b) -> bool:
    from radretrieve.models.install import _same_clip

    return _same_clip(a, b)


def _limited_memory() -> None:
    """A 6 GiB address-space limit for the child: torch imports within it, a hostile 40 GB model does not fit."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def cli_limited(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`cli` with a 6 GiB address-space limit (`_limited_memory`)."""
    return subprocess.run(
        [sys.executable, "-m", "radretrieve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        preexec_fn=_limited_memory,
    )


def test_a_stray_block_number_is_refused_before_a_model_of_that_many_blocks_is_built(tiny, tmp_path):
    state = torch.load(io.BytesIO(tiny["hf_bytes"]), weights_only=True)
    state["vision_model.encoder.layers.50000.layer_norm1.weight"] = torch.ones(128)
    weights = tmp_path / "RadCLIP.pth"
    torch.save(state, weights)
    proc = cli_limited(env_for(tmp_path, None), "models", "import", str(weights), "--quick-gelu")
    assert proc.returncode == 1
    assert error_lines(proc) == [
        f"error: {weights}: the blocks visual.transformer.resblocks.N are not numbered 0..n-1 without a gap"
    ], proc.stderr
    assert not (tmp_path / "rr" / "models" / "RadCLIP").exists()


def test_a_hub_config_far_larger_than_its_weights_is_refused_without_allocating_it(hub, tiny, tmp_path):
    config = json.loads(tiny["oc_files"]["open_clip_config.json"])
    config["model_cfg"]["vision_cfg"] |= {"width": 4096, "layers": 48}  # about 40 GB of float32 weights
    hub.add("test/huge-config", "open_clip_config.json", json.dumps(config).encode())
    hub.add("test/huge-config", "open_clip_model.safetensors", tiny["oc_files"]["open_clip_model.safetensors"])
    proc = cli_limited(env_for(tmp_path, hub), "models", "pull", "hf-hub:test/huge-config")
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert "weights do not fit this model" in line and "wrong shape" in line, proc.stderr


@pytest.mark.parametrize("pre", [{"mean": [0.5, "nan", 0.5]}, {"std": [0.2, 0.2]}, {"std": [0.2, -1, 0.2]}])
def test_a_normalisation_that_would_give_nan_embeddings_is_refused(pre):
    from radretrieve.foundation.config import PreprocessConfig
    from radretrieve.foundation.errors import ConfigError

    with pytest.raises(ConfigError, match="mean and std must be 3 finite numbers each, std > 0"):
        PreprocessConfig(**{k: tuple(v) for k, v in pre.items()})


def test_a_hub_preprocessing_config_that_would_give_nan_embeddings_is_refused(hub, tiny, tmp_path):
    config = json.loads(tiny["oc_files"]["open_clip_config.json"])
    config["preprocess_cfg"] |= {"std": [0, 0, 0]}
    hub.add("test/bad-std", "open_clip_config.json", json.dumps(config).encode())
    hub.add("test/bad-std", "open_clip_model.safetensors", tiny["oc_files"]["open_clip_model.safetensors"])
    proc = cli(env_for(tmp_path, hub), "models", "pull", "hf-hub:test/bad-std")
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert "mean and std must be 3 finite numbers each, std > 0" in line, proc.stderr
    assert not (tmp_path / "rr" / "models").exists() or not any((tmp_path / "rr" / "models").iterdir())
