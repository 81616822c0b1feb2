"""The catalog of published weights that `radretrieve models pull NAME` knows, and where models live here.

Each entry names a Hugging Face hub repository, the weights file(s) in it (first found wins: safetensors is
preferred, a torch file is read with `weights_only=True`), the format, the licence as published, and the
architecture expected. Facts, with where they come from:

- `radclip`: the RadCLIP authors' ViT-L/14 release. Their GitHub README (luzhixiu/RadCLIP) points at the hub
  repo `zluvolyote/RadCLIP`, which holds `RadCLIP.pth`, a `transformers.CLIPModel` state dict of CLIP ViT-L/14.
  Neither repository publishes a licence, so the user must check the terms with the authors before use.
- `openai-vit-b-16`: OpenAI CLIP ViT-B/16 as open_clip downloads it: open_clip's pretrained config for
  `ViT-B-16` / `openai` names the hub repo `timm/vit_base_patch16_clip_224.openai` (quick GELU, OpenAI mean/std).
  Licence: MIT (OpenAI's CLIP repository; the timm hub card lists Apache-2.0 for its copy).
- `biomedclip`: `microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`, an open_clip `hf-hub:` model (MIT per
  its model card); its text tower is a Hugging Face BERT whose tokenizer and config live in the hub repo named by
  `hf_model_name` / `hf_tokenizer_name` in its `open_clip_config.json`, fetched by the pull too so that loading
  works offline (`radretrieve.models.radclip.TEXT_DIR`).

`hf-hub:ORG/REPO` names any other open_clip hub model; its entry (and model directory) is named `ORG--REPO`.

No release carries RadCLIP's slice pooling adapter: pulled models keep the adapter at its seeded init (said in
their provenance), so volumes are pooled by an untrained adapter until `radretrieve train` fits one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from radretrieve.foundation.errors import ConfigError

Format = Literal["hf-clip", "open_clip", "radretrieve"]
FORMATS: tuple[Format, ...] = ("hf-clip", "open_clip", "radretrieve")
CHECK_TERMS = "no licence published: check the terms with the authors before use"
GB = 1 << 30


@dataclass(frozen=True)
class Published:
    """One entry of the catalog."""

    name: str  # what the user types: `radretrieve models pull NAME`
    repo: str  # hub repo id, ORG/NAME
    weights: tuple[str, ...]  # weights files in the repo, in order of preference (the first present is used)
    format: Format  # hf-clip: a transformers CLIPModel state dict; open_clip: an open_clip CLIP state dict
    licence: str  # as published (CHECK_TERMS where none is)
    description: str  # one line for the listing
    architecture: str | None = None  # hf-clip: registry config the shapes should match; open_clip: model name
    # (None: the repo's own open_clip_config.json describes the model, as for hf-hub: models)
    pretrained_tag: str | None = None  # open_clip pretrained tag whose mean/std/quick_gelu apply
    max_bytes: int = 4 * GB  # a weights file declared larger than this is refused before it is downloaded
    quick_gelu: bool | None = None  # hf-clip: the activation of the published weights (their shapes do not show it)

    @property
    def hf_hub(self) -> bool:
        """Whether the repo is an open_clip `hf-hub:` model (config and tokenizer from the repo)."""
        return self.format == "open_clip" and self.architecture is None


CATALOG: dict[str, Published] = {
    p.name: p
    for p in (
        Published(
            name="radclip",
            repo="zluvolyote/RadCLIP",
            weights=("RadCLIP.pth",),
            format="hf-clip",
            licence=CHECK_TERMS,
            description="RadCLIP ViT-L/14 (radiology CLIP, the authors' release)",
            architecture="radclip-vit-l-14",
            quick_gelu=True,  # fine-tuned from OpenAI's CLIP ViT-L/14 (transformers' hidden_act "quick_gelu")
        ),
        Published(
            name="openai-vit-b-16",
            repo="timm/vit_base_patch16_clip_224.openai",
            weights=("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
            format="open_clip",
            licence="MIT",
            description="OpenAI CLIP ViT-B/16 (general images, through open_clip)",
            architecture="ViT-B-16",
            pretrained_tag="openai",
            max_bytes=2 * GB,
        ),
        Published(
            name="biomedclip",
            repo="microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
            weights=("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
            format="open_clip",
            licence="MIT",
            description="BiomedCLIP ViT-B/16 + PubMedBERT (biomedical figures, open_clip hf-hub model)",
            max_bytes=2 * GB,
        ),
    )
}


HF_HUB = "hf-hub:"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def get_published(name: str) -> Published:
    """The catalog entry `name`, or an entry for any open_clip hub model `hf-hub:ORG/REPO` (its own config,
    open_clip's weights file names); `ConfigError` listing the catalog otherwise."""
    if name in CATALOG:
        return CATALOG[name]
    repo = name[len(HF_HUB) :] if name.startswith(HF_HUB) else ""
    if is_repo_id(repo):
        local = repo.replace("/", "--")  # the directory name under the models home, as the hub cache spells it
        weights = CATALOG["biomedclip"].weights
        return Published(local, repo, weights, "open_clip", "see the repo's model card", f"open_clip model {name}")
    raise ConfigError(f"unknown published model '{name}'; known: {', '.join(CATALOG)}, or hf-hub:ORG/REPO")


def is_repo_id(repo: str) -> bool:
    """Whether `repo` is a hub repo id ORG/NAME (never a path: the cache names folders after it)."""
    return bool(_REPO_ID.match(repo)) and ".." not in repo


def radretrieve_home() -> Path:
    """`$RADRETRIEVE_HOME`, default `~/.cache/radretrieve`: pulled and imported models live under `models/`."""
    return Path(os.environ.get("RADRETRIEVE_HOME") or Path.home() / ".cache" / "radretrieve").expanduser()


def models_home() -> Path:
    return radretrieve_home() / "models"


def installed_models(home: Path | None = None) -> list[dict[str, object]]:
    """Model directories under the models home (pulled, imported, trained): name, path, provenance kind,
    origin, licence and size on disk. Reads only JSON records (no torch)."""
    from radretrieve.foundation.errors import ModelLoadError
    from radretrieve.models.provenance import read_provenance

    home = models_home() if home is None else home
    rows: list[dict[str, object]] = []
    for folder in sorted(p for p in home.glob("*") if (p / "config.json").is_file()) if home.is_dir() else []:
        if folder.name.startswith("."):
            continue  # a pull in progress (temp folder beside its destination)
        try:
            prov = read_provenance(folder)
            kind, origin, licence = prov.kind, prov.origin, prov.licence
        except ModelLoadError:
            kind, origin, licence = "unknown", None, None
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        rows.append({"name": folder.name, "path": str(folder), "state": kind, "origin": origin})
        rows[-1] |= {"licence": licence, "size_bytes": size}
    return rows
