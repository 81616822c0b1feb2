"""`load_model`: one entry point for every source of RadCLIP weights.

1. a registry name (`radclip-tiny`, ...): random init from the config's fixed seed;
2. an open_clip model name with a pretrained tag (`load_model("ViT-B-16", weights="openai")`) or an
   `hf-hub:org/repo` id: downloaded when online, one clear error line when offline;
3. a radretrieve model directory (`config.json` + `model.safetensors`);
4. `weights=` an open_clip checkpoint file (`.safetensors`, or `.pt/.bin` read with `weights_only=True`);
5. `weights=` a Hugging Face `CLIPModel` state dict such as RadCLIP's `RadCLIP.pth`, converted on load.
Nothing is ever unpickled.

Every loaded model carries `model.provenance` (`radretrieve.models.provenance`): a registry config or an open_clip
name without weights is untrained, a weights file on top is imported (its name, and its sha256, taken when the
record is first read: not on a load for a search), an open_clip pretrained tag or an hf-hub id is published, a
model directory says itself (`provenance.json`). Loading an untrained model logs the one warning line
(`warn_if_untrained`) unless the caller says `warn=False`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from radretrieve.foundation.config import ModelConfig
from radretrieve.foundation.errors import ModelLoadError
from radretrieve.models.hf_convert import hf_to_open_clip, is_hf_clip
from radretrieve.models.hub import OFFLINE_HINT, check_download
from radretrieve.models.open_clip_import import import_open_clip
from radretrieve.models.provenance import provenance_of_source, read_provenance, warn_if_untrained
from radretrieve.models.radclip import CONFIG_FILE, TEXT_DIR, WEIGHTS_FILE, RadCLIP, file_identity
from radretrieve.models.reference import ModelSource, parse_model_ref
from radretrieve.models.registry import get_model_config

log = logging.getLogger(__name__)


def load_model(
    name_or_path: str,
    weights: str | None = None,
    device: str | None = None,
    preprocess: str | None = None,
    *,
    warn: bool = True,
) -> RadCLIP:
    """Load a RadCLIP model from a reference string (rules: `radretrieve.models.reference`); `preprocess`
    names a preprocessing profile that overrides the model's own (None: the model's); `warn`: log the one
    warning line when the weights are untrained (False where random weights are expected: a training start)."""
    source = parse_model_ref(name_or_path, weights)
    if preprocess is not None:
        source = dataclasses.replace(source, preprocess=preprocess)
    return load_source(source, device, warn=warn)


CONFIG_MAX_BYTES = 1 << 20  # a model directory's config.json is a few KB


def import_open_clip_for(source: ModelSource) -> None:
    """Import open_clip as loading `source` will need it (`import_open_clip`): without `transformers` unless the
    model's text tower is a Hugging Face model or its config cannot be read here (then open_clip is imported as
    it is, and loading the model says what is wrong)."""
    import_open_clip(hf_text=_may_have_hf_text(source))


def _may_have_hf_text(source: ModelSource) -> bool:
    if source.scheme == "open_clip":
        return False  # a name whose text tower is a Hugging Face model is refused before it is built
    if source.scheme == "registry":
        return "hf_model_name" in get_model_config(source.ref).clip.get("text_cfg", {})
    if source.scheme != "path":
        return True  # an hf-hub id: its config is not known yet
    path = Path(source.ref) / CONFIG_FILE
    try:  # a regular file of config size only: a FIFO or a device would block or never end
        if not path.is_file() or path.stat().st_size > CONFIG_MAX_BYTES:
            return True
        text_cfg = json.loads(path.read_text())["clip"]["text_cfg"]
    except Exception:  # noqa: BLE001 - any unreadable config: loading the model names the problem
        return True
    return not isinstance(text_cfg, dict) or "hf_model_name" in text_cfg


def load_source(source: ModelSource, device: str | None = None, *, warn: bool = True) -> RadCLIP:
    """Load the model a `ModelSource` names, on `device` (default: cuda if present), in eval mode, with its
    provenance attached (see the module docstring)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    found = provenance_of_source(source, digest=False)  # a weights file's sha256: on demand (`attach_provenance`)
    weights_file = Path(source.weights) if found is not None and found.kind == "imported" and source.weights else None
    identity = file_identity(weights_file) if weights_file is not None and weights_file.is_file() else None
    if source.scheme == "path":
        path = Path(source.ref)
        if not path.is_dir():
            raise ModelLoadError(f"{path}: no such model directory")
        model = load_model_dir(path)
    elif source.scheme == "registry":
        model = init_model(get_model_config(source.ref), source)
    else:  # open_clip name (+ pretrained tag) or hf-hub id: the tag/hub weights come with it
        model = _from_open_clip(source)
    if source.weights is not None and source.scheme in ("path", "registry"):
        load_weights(model, Path(source.weights))
        model.source = source
    model = _with_profile(model, source).to(device).eval()
    if found is not None:  # else a directory: its own record, attached by `load_model_dir`
        model.attach_provenance(found, weights_file if identity else None, identity)
    if warn:  # the record's kind decides; reading `model.provenance` would hash the weights file now
        warn_if_untrained(model.config.name, found if found is not None else model.provenance)
    return model


def _with_profile(model: RadCLIP, source: ModelSource) -> RadCLIP:
    """Apply the source's preprocessing profile override (it changes the fingerprint: embeddings differ)."""
    if source.preprocess is not None:
        model.config = model.config.replace(preprocess=model.config.preprocess.with_profile(source.preprocess))
        model.source = source
    return model


def init_model(cfg: ModelConfig, source: ModelSource | None = None, text_dir: Path | None = None) -> RadCLIP:
    """A randomly initialised model; the same seed gives the same weights, without touching global RNG.
    `text_dir`: a Hugging Face text tower's config and tokenizer files (`radretrieve.models.radclip.TEXT_DIR`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if text_dir is None:
            return RadCLIP(cfg, source=source)
        try:
            return RadCLIP(cfg, source=source, text_dir=text_dir)
        except ModelLoadError:
            raise
        except Exception as exc:  # transformers raises many types for a bad config or vocabulary: one line
            first = " ".join(str(exc).split())[:200]
            raise ModelLoadError(
                f"{text_dir}: its text model files do not build ({type(exc).__name__}: {first})"
            ) from exc


def load_model_dir(directory: Path) -> RadCLIP:
    """Load a model directory written by `RadCLIP.save`; the stored fingerprint is verified."""
    from safetensors.torch import load_file

    cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise ModelLoadError(f"{directory}: not a model directory (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    meta = json.loads(cfg_path.read_text())
    # the directory itself is the reference (its config.json "source" only says what it was made from)
    text_dir = directory / TEXT_DIR
    model = init_model(ModelConfig.from_dict(meta), ModelSource("path", str(directory)), text_dir)
    _load_strict(model, load_file(str(w_path)), w_path)
    expected = meta.get("fingerprint")
    if expected and model.fingerprint != expected:
        raise ModelLoadError(f"{directory}: weights do not match the fingerprint in {CONFIG_FILE} (corrupt copy?)")
    model.provenance = read_provenance(directory)  # unknown for a directory written before records
    return model


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors from a `.safetensors` file or a `torch.save` file (weights_only: never unpickles code)."""
    if not path.is_file():
        raise ModelLoadError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any decode failure is the same user error
        raise ModelLoadError(_unreadable(path, exc)) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path}: expected a state dict of tensors")
    return {_strip_prefix(k): v for k, v in obj.items()}


def _unreadable(path: Path, exc: Exception) -> str:
    """One line for a weights file that cannot be read; torch's refusal to unpickle spans a page."""
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        return f"{path}: refused: it holds Python objects, not only tensors, and is never unpickled (use safetensors)"
    first = " ".join(str(exc).split())[:200]
    return f"{path}: not a readable weights file ({type(exc).__name__}: {first})"


def load_weights(model: RadCLIP, path: Path) -> None:
    """Load a radretrieve, open_clip or Hugging Face CLIPModel state dict into `model` (strict)."""
    state = read_state_dict(path)
    if any(k.startswith("clip.") for k in state):
        _load_strict(model, state, path)
    elif is_hf_clip(state):
        _load_strict(model.clip, hf_to_open_clip(state), path)
    else:
        _load_strict(model.clip, state, path)


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def _load_strict(module: torch.nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    check_fits(module, state, path)
    module.load_state_dict(state, strict=True)


def check_fits(module: torch.nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    """One line unless `state` has exactly `module`'s tensor names and shapes (`module` may live on the meta
    device: the check then costs no memory)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise ModelLoadError(f"{path}: weights do not fit this model ({detail})")


def _from_open_clip(source: ModelSource) -> RadCLIP:
    """Build from open_clip's config for the name; with a pretrained tag / hf-hub id, download the weights."""
    # a name whose text tower is a Hugging Face model is refused below; an hf-hub id's config is not known yet
    open_clip = import_open_clip(hf_text=source.scheme == "hf-hub")

    name, tag = source.ref, source.weights
    check_download(f"{name}{' (' + tag + ')' if tag else ''}", _hub_repo(source))
    try:
        clip_cfg = open_clip.get_model_config(name)
        if clip_cfg is not None and "hf_model_name" in clip_cfg.get("text_cfg", {}):  # before the weights download
            raise ModelLoadError(
                f"{name}: its text tower is a Hugging Face model, whose config and tokenizer a model directory "
                f"keeps: get it with `radretrieve models pull {name}` and pass the --model directory it prints"
            )
        pre = open_clip.get_pretrained_cfg(name, tag) if tag and source.scheme != "hf-hub" else {}
        needs_download = bool(tag) or source.scheme == "hf-hub"
        reference = open_clip.create_model(name, pretrained=tag, weights_only=True) if needs_download else None
    except ModelLoadError:
        raise
    except Exception as exc:  # network/hub errors come in many types
        raise _open_clip_error(exc, name, tag) from exc
    if clip_cfg is None:
        raise ModelLoadError(f"{name}: open_clip has no config for it")
    if pre.get("quick_gelu"):
        clip_cfg["quick_gelu"] = True
    model = init_model(_wrap_open_clip_config(name, clip_cfg, pre), source)
    if reference is not None:
        _load_strict(model.clip, reference.state_dict(), Path(name))
    return model


def _hub_repo(source: ModelSource) -> str | None:
    """The hub repo a download would read (None: nothing to download, or weights from a plain URL)."""
    open_clip = import_open_clip(hf_text=source.scheme == "hf-hub")

    if source.scheme == "hf-hub":
        return source.ref[len("hf-hub:") :]
    if not source.weights:
        return None
    hub = (open_clip.get_pretrained_cfg(source.ref, source.weights) or {}).get("hf_hub", "")
    return "/".join(hub.strip("/").split("/")[:2]) or None


# Exception classes (anywhere in the cause chain) that mean "the network or the hub was unreachable".
# open_clip wraps them in a RuntimeError, so the chain is walked and classes are matched by name
# (httpx, requests, urllib and huggingface_hub each have their own).
NETWORK_ERRORS = frozenset(
    {
        "ConnectError",
        "ConnectionError",
        "ConnectTimeout",
        "ReadTimeout",
        "TimeoutException",
        "Timeout",
        "gaierror",
        "URLError",
        "LocalEntryNotFoundError",
        "OfflineModeIsEnabled",
        "ProxyError",
    }
)


def _is_network_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if any(cls.__name__ in NETWORK_ERRORS for cls in type(cur).__mro__):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _open_clip_error(exc: BaseException, name: str, tag: str | None) -> ModelLoadError:
    """One line for a failed open_clip build: 'could not download' only when the network is the cause."""
    what = f"{name}{' (' + tag + ')' if tag else ''}"
    if _is_network_failure(exc):
        return ModelLoadError(f"could not download {what}: {OFFLINE_HINT}")
    if "not a known tag" in str(exc):
        return ModelLoadError(f"'{tag}' is not a pretrained tag of {name}: see open_clip.list_pretrained()")
    first = " ".join(str(exc).split())[:200]
    return ModelLoadError(f"open_clip could not build {what}: {type(exc).__name__}: {first}")


def _wrap_open_clip_config(name: str, clip_cfg: dict, pre: Mapping) -> ModelConfig:
    from radretrieve.foundation.config import PreprocessConfig

    size = clip_cfg["vision_cfg"].get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    prep = {"image_size": int(size), "profile": "clip"}  # pretrained CLIP weights saw CLIP's own transform
    if pre.get("mean") and pre.get("std"):
        prep |= {"mean": tuple(pre["mean"]), "std": tuple(pre["std"])}
    tokenizer = (
        name if "hf_tokenizer_name" in clip_cfg.get("text_cfg", {}) or name.startswith("hf-hub:") else "clip-bpe"
    )
    return ModelConfig(name=name, clip=clip_cfg, preprocess=PreprocessConfig(**prep), tokenizer=tokenizer)
