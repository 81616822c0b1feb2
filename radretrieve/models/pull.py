"""`radretrieve models pull NAME` and `models import FILE`: published weights into a radretrieve model directory.

Downloads use `huggingface_hub`'s cache under `HF_HOME`, `HF_ENDPOINT` for a mirror and `HF_HUB_OFFLINE=1` to read
the cache alone; online, the file is fetched by `radretrieve.models.hub_fetch` (one checked metadata answer names
the cache's files; bounded in size and time; an interrupted download resumes). Every weights file is checked
against the sha256 the hub declares for it (an LFS file's ETag is its sha256, and the cache names the blob after
it): a mismatch is refused in one line naming both digests, and the bad copy is deleted from the cache so that
the next pull downloads it again. The file is then converted (`radretrieve.models.install`) and its provenance
recorded. A model whose text tower is a Hugging Face model (BiomedCLIP's BERT) also needs that model's config and
tokenizer files, from the repo its `open_clip_config.json` names: they are fetched first, each verified (a small
file against its git blob id), and kept in the model directory, so that it loads with no hub. Pulling again into
a directory that already holds the same weights changes nothing and says so.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radretrieve.foundation.errors import ConfigError, ModelLoadError
from radretrieve.models.provenance import Provenance, read_provenance
from radretrieve.models.published import CHECK_TERMS, Format, Published, get_published, models_home

log = logging.getLogger(__name__)

SHA256 = re.compile(r"^[0-9a-f]{64}$")
HEX_ID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # an ETag the hub sends: git blob sha1 or LFS sha256
CONFIG_MAX_BYTES = 1 << 20  # an open_clip_config.json is a few kB
OPEN_CLIP_CONFIG = "open_clip_config.json"
RADCLIP_ARCH = "radclip-vit-l-14"  # the registry config of RadCLIP's release
# what a pull or import writes into a model directory (radretrieve.models.radclip.RadCLIP.save + provenance)
MODEL_DIR_ENTRIES = frozenset({"config.json", "model.safetensors", "provenance.json", "hf_text"})
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Result:
    """What a pull or import did."""

    directory: Path  # the model directory: the `--model` value
    provenance: Provenance  # as recorded in it
    unchanged: bool  # it already held these weights: nothing was written
    notes: tuple[str, ...] = ()  # lines for the user (licence terms, an architecture other than expected)


@dataclass(frozen=True)
class TextModel:
    """A Hugging Face text tower's config and tokenizer files, verified, and what the provenance says of them."""

    files: dict[str, Path]  # {file name: the cached file}
    record: dict[str, Any]  # {"repo", "commit", "files": {name: "sha256:HEX"}} (+ the tokenizer's repo if other)


@dataclass(frozen=True)
class Fetched:
    """A file in the huggingface cache, verified."""

    path: Path  # the cached file
    filename: str  # its name in the repo
    sha256: str  # hex digest, checked against the hub's
    commit: str  # the repo commit it came from


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def pull(name: str, dest: Path | None = None, revision: str | None = None) -> Result:
    """Download catalog entry `name`, verify, convert into `dest` (default `models_home()/ENTRY`, where ENTRY is
    the catalog name, or `ORG--REPO` for `hf-hub:ORG/REPO`: one folder level, as `radretrieve models` lists)."""
    entry = get_published(name)
    dest = Path(os.path.abspath(Path(dest).expanduser())) if dest is not None else models_home() / entry.name
    check_destination(dest)
    _check_reachable(entry.repo, entry.weights[0], revision)
    config, text = None, TextModel({}, {})
    if entry.hf_hub:  # small files first: an unusable model is refused before the weights are downloaded
        config, text_cfg = _hf_hub_config(entry, revision)
        if "hf_model_name" in text_cfg:
            text = _fetch_text_model(entry, text_cfg)
    weights = _fetch_first(entry, revision)
    origin = f"hf:{entry.repo}@{weights.commit}/{weights.filename}"
    digest = f"sha256:{weights.sha256}"
    if _holds(dest, origin, digest):
        return Result(dest, read_provenance(dest), True)
    from radretrieve.models.install import config_from_shapes, install_weights, open_clip_state

    state, _ = open_clip_state(weights.path, entry.format)
    if config is None and entry.format == "open_clip":
        config = _builtin_open_clip_config(entry)
    shape_notes: tuple[str, ...] = ()
    if config is None:
        if entry.quick_gelu is None:
            raise ModelLoadError(f"{entry.name}: the catalog does not say which activation its weights use")
        arch, act = entry.architecture, entry.quick_gelu
        config, shape_notes = config_from_shapes(state, weights.path, entry.name, entry.description, arch, act)
    details = {"repo": entry.repo, "revision": revision or "main", "commit": weights.commit, "file": weights.filename}
    details |= {"size_bytes": weights.path.stat().st_size, "format": entry.format, "adapter": _adapter_note()}
    details |= {"text_model": text.record} if text.record else {}
    prov = Provenance("pulled", origin=origin, digest=digest, licence=entry.licence, details=details)
    install_weights(state, weights.path, config.replace(name=entry.name), dest, prov, text.files)
    return Result(dest, prov, False, shape_notes)


def import_file(
    path: Path,
    name: str | None = None,
    fmt: Format | None = None,
    dest: Path | None = None,
    arch: str | None = None,
    quick_gelu: bool | None = None,
) -> Result:
    """Convert a weights file copied by hand into a model directory (provenance `imported`, digest recorded).
    `arch` (an open_clip model name) or `quick_gelu` say the activation where no config beside the file does
    (`radretrieve.models.install.activation`); without either, only RadCLIP's own release is recognised."""
    from radretrieve.foundation.fileio import file_sha256

    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such weights file")
    name = name or _name_from_file(path)
    if not NAME.match(name):
        raise ConfigError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    dest = Path(os.path.abspath(Path(dest).expanduser())) if dest is not None else models_home() / name
    check_destination(dest)
    digest = f"sha256:{file_sha256(path)}"
    if _holds(dest, path.name, digest):
        return Result(dest, read_provenance(dest), True)
    from radretrieve.models.install import install_weights, open_clip_state

    state, found = open_clip_state(path, fmt)
    config, notes = _import_config(state, path, found, arch, quick_gelu)
    details = {"file": path.name, "size_bytes": path.stat().st_size, "format": found, "adapter": _adapter_note()}
    details |= {"quick_gelu": bool(config.clip.get("quick_gelu", False))}
    licence = CHECK_TERMS if found == "hf-clip" else None
    prov = Provenance("imported", origin=path.name, digest=digest, licence=licence, details=details)
    install_weights(state, path, config.replace(name=name), dest, prov)
    return Result(dest, prov, False, notes)


def _import_config(
    state: dict[str, Any], path: Path, found: Format, arch: str | None, quick_gelu: bool | None
) -> tuple[Any, tuple[str, ...]]:
    """The config of an imported file: `arch`'s, or its shapes with the activation the files or the user say.
    Neither saying: RadCLIP's release is recognised by its shapes (CLIP ViT-L/14 as a transformers state dict:
    quick GELU, as the OpenAI CLIP it was fine-tuned from, said in a note); anything else is refused."""
    from radretrieve.models.install import ACTIVATION_HINT, activation, arch_config, config_from_shapes

    act = activation(path, quick_gelu)
    description = f"imported from {path.name}"
    if arch is not None:
        return arch_config(arch, description, act), ()
    if act is not None:  # the registry's RadCLIP config where the shapes and activation are its own
        expected = RADCLIP_ARCH if found == "hf-clip" else None
        return config_from_shapes(state, path, path.stem, description, expected, act)[0], ()
    if found == "hf-clip":
        config, other = config_from_shapes(state, path, path.stem, description, RADCLIP_ARCH, True)
        if not other:  # the shapes are RadCLIP's
            note = f"{path.name}: CLIP ViT-L/14 taken as RadCLIP's release (quick GELU); {ACTIVATION_HINT} otherwise"
            return config, (note,)
    raise ModelLoadError(f"{path}: the weights do not say which activation they use; {ACTIVATION_HINT}")


def check_destination(dest: Path) -> None:
    """A pull or import replaces its destination whole: only a model directory that a pull or import made, or
    an empty folder, may be replaced (never a folder of other files, nor a model trained here). Temp folders of
    this destination left by a pull or import killed while writing it are removed first."""
    from radretrieve.foundation.fileio import remove_stale_temps

    remove_stale_temps(dest.parent, recursive=False, only_dead=True, of=dest.name)
    if not dest.exists():
        return
    if dest.is_dir() and not any(dest.iterdir()):
        return
    from radretrieve.models.radclip import CONFIG_FILE

    if not (dest / CONFIG_FILE).is_file():
        raise ConfigError(f"{dest}: exists and is not a model directory; give another --to")
    try:
        kind = read_provenance(dest).kind
    except ModelLoadError:
        kind = "unknown"
    if kind not in ("pulled", "imported"):
        raise ConfigError(f"{dest}: holds a model that was not pulled or imported ({kind}); give another --to")
    others = sorted(p.name for p in dest.iterdir() if p.name not in MODEL_DIR_ENTRIES)
    if others:  # the user's own files beside an earlier pull: replacing the folder would delete them
        shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
        raise ConfigError(f"{dest}: also holds files that are not the model's ({shown}); move them or use another --to")


def _adapter_note() -> str:
    from radretrieve.models.install import ADAPTER_NOTE

    return ADAPTER_NOTE


def _name_from_file(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.").lower()
    return stem[:64] or "imported"


def _holds(dest: Path, origin: str, digest: str) -> bool:
    """Whether `dest` is a model directory already made from these very weights."""
    from radretrieve.models.radclip import CONFIG_FILE, WEIGHTS_FILE

    if not ((dest / CONFIG_FILE).is_file() and (dest / WEIGHTS_FILE).is_file()):
        return False
    try:
        prov = read_provenance(dest)
    except ModelLoadError:
        return False
    if prov.digest != digest or prov.origin != origin:
        return False
    from radretrieve.models.loading import load_model_dir

    try:  # the record alone does not say the copy is whole: its fingerprint check does (a damaged one is redone)
        load_model_dir(dest)
    except ModelLoadError:
        return False
    return True


# ----------------------------------------------------------------------------------------------- download
def _check_reachable(repo: str, filename: str, revision: str | None) -> None:
    """One line at once when the hub cannot be reached and the file is not cached (the library would retry
    for half a minute first). Offline mode and proxies are left to the library, which fails fast there."""
    from huggingface_hub import try_to_load_from_cache

    from radretrieve.models.hub import _proxied, hub_reachable

    if offline() or _proxied() or hub_reachable():
        return
    if isinstance(try_to_load_from_cache(repo, filename, revision=revision), str):
        return
    raise ModelLoadError(
        f"cannot reach the hub at {endpoint()} and {repo}/{filename} is not in the huggingface cache: "
        "connect, set HF_ENDPOINT to a mirror, or copy a weights file and use `radretrieve models import FILE`"
    )


def _fetch_first(entry: Published, revision: str | None) -> Fetched:
    """The first of the entry's weights files that the repo has (offline: that the cache has), downloaded and
    verified."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    if offline():  # the cache alone: the first candidate it holds (a repo may publish only the second)
        for filename in entry.weights:
            if isinstance(try_to_load_from_cache(entry.repo, filename, revision=revision), str):
                return fetch(entry.repo, filename, revision, entry.max_bytes)
        raise _hub_error(LocalEntryNotFoundError(""), entry.repo, entry.weights[0], revision)
    missing: list[str] = []
    for filename in entry.weights:
        try:
            return fetch(entry.repo, filename, revision, entry.max_bytes)
        except RemoteEntryNotFoundError:
            missing.append(filename)
    raise ModelLoadError(f"hub repo {entry.repo} has none of {', '.join(missing)} (404 at {endpoint()})")


def fetch(repo: str, filename: str, revision: str | None, max_bytes: int) -> Fetched:
    """Download `repo/filename` into the huggingface cache (or find it there) and verify its sha256."""
    return _verify(download(repo, filename, revision, max_bytes), repo, filename, revision)


def download(repo: str, filename: str, revision: str | None, max_bytes: int) -> Path:
    """The file in the huggingface cache: online through `radretrieve.models.hub_fetch` (names, size and digest
    checked by radretrieve, never taken from an unchecked answer), offline from the cache by `hf_hub_download`;
    hub errors become one line."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    from radretrieve.models.hub_fetch import fetch_into_cache

    try:
        if offline():
            return Path(hf_hub_download(repo, filename, revision=revision))
        return fetch_into_cache(repo, filename, revision, max_bytes)
    except (RemoteEntryNotFoundError, ModelLoadError):
        raise
    except Exception as exc:  # the hub library raises many types; each becomes one line
        raise _hub_error(exc, repo, filename, revision) from exc


def _verify(path: Path, repo: str, filename: str, revision: str | None) -> Fetched:
    """Check the cached file against the id the hub declared for it (the blob's name): the sha256 of an LFS
    file, the git blob sha1 of a small one; delete a bad copy. The record keeps the sha256 either way."""
    from radretrieve.foundation.fileio import file_sha256

    blob = Path(os.path.realpath(path))
    expected = blob.name if HEX_ID.match(blob.name) else _declared_id(repo, filename, revision)
    sha256 = file_sha256(blob)
    actual = sha256 if SHA256.match(expected) else _git_blob_sha1(blob)
    if actual != expected:
        for bad in (blob, path):
            if _in_hub_cache(bad):  # never a file elsewhere, whatever a link in a tampered cache points at
                bad.unlink(missing_ok=True)
        kind = "sha256" if SHA256.match(expected) else "git blob sha1"
        raise ModelLoadError(
            f"{repo}/{filename}: downloaded {kind} {actual} does not match the hub's {expected}; "
            "the bad copy was deleted from the cache (pull again)"
        )
    parts = path.parts
    commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts else (revision or "main")
    return Fetched(path, filename, sha256, commit)


def _in_hub_cache(path: Path) -> bool:
    """Whether `path` (resolved) lies inside the huggingface cache."""
    from huggingface_hub import constants

    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(constants.HF_HUB_CACHE))


def _git_blob_sha1(path: Path) -> str:
    """git's id of a file (sha1 over "blob SIZE\\0" and the bytes): the hub's ETag of a file kept in git."""
    import hashlib

    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size, usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _declared_id(repo: str, filename: str, revision: str | None) -> str:
    """The hub's id of a file whose cache blob is not named by one (a cache without symlinks)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    etag = None if offline() else get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision)).etag
    if not etag or not HEX_ID.match(etag):
        raise ModelLoadError(f"{repo}/{filename}: the hub declares no digest for it; cannot verify, refused")
    return etag


def _hub_error(exc: BaseException, repo: str, filename: str, revision: str | None) -> ModelLoadError:
    """One line for a failed download, by what failed."""
    from huggingface_hub import errors

    where = f"{repo}/{filename}"
    if isinstance(exc, errors.GatedRepoError):
        return ModelLoadError(f"{repo} is gated: accept its terms on the hub and log in (`hf auth login`)")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return ModelLoadError(f"hub repo {repo} not found at {endpoint()} (404)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return ModelLoadError(f"revision {revision} not found in hub repo {repo} (404)")
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return ModelLoadError(f"hub repo {repo} has no file {filename} (404)")
    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)) or offline():
        if offline():
            return ModelLoadError(
                f"HF_HUB_OFFLINE is set and {where} is not in the huggingface cache (HF_HOME): pull once online, "
                "copy that cache here, or use `radretrieve models import FILE`"
            )
        return ModelLoadError(f"could not download {where} from {endpoint()} and it is not cached")
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        return ModelLoadError(f"the hub at {endpoint()} refused {where} (HTTP {status})")
    first = " ".join(str(exc).split())[:200]
    return ModelLoadError(f"could not download {where}: {type(exc).__name__}: {first}")


# ------------------------------------------------------------------------------------------------ configs
def _hf_hub_config(entry: Published, revision: str | None) -> tuple[Any, dict[str, Any]]:
    """The model config from an open_clip hub repo's `open_clip_config.json` (fetched before the weights), and
    its `text_cfg`."""
    from huggingface_hub.errors import RemoteEntryNotFoundError

    from radretrieve.models.install import open_clip_config

    try:
        path = download(entry.repo, OPEN_CLIP_CONFIG, revision, CONFIG_MAX_BYTES)
    except RemoteEntryNotFoundError as exc:
        raise _hub_error(exc, entry.repo, OPEN_CLIP_CONFIG, revision) from exc
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{entry.repo}/{OPEN_CLIP_CONFIG}: not JSON ({type(exc).__name__})") from exc
    model_cfg = data.get("model_cfg") if isinstance(data, dict) else None
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("text_cfg", {}), dict):
        raise ModelLoadError(f"{entry.repo}/{OPEN_CLIP_CONFIG}: no model_cfg object")
    text = model_cfg.get("text_cfg", {})
    pre = data.get("preprocess_cfg") or {}
    pre = pre if isinstance(pre, dict) else {}
    config = open_clip_config(f"hf-hub:{entry.repo}", model_cfg, pre, entry.description)
    return config, text


def _builtin_open_clip_config(entry: Published) -> Any:
    """The config of an open_clip built-in architecture with its pretrained tag's mean/std and GELU kind."""
    import open_clip

    from radretrieve.models.install import open_clip_config

    clip_cfg = open_clip.get_model_config(entry.architecture or "")
    if clip_cfg is None:
        raise ModelLoadError(f"{entry.name}: open_clip has no config {entry.architecture}")
    pre = open_clip.get_pretrained_cfg(entry.architecture, entry.pretrained_tag or "") or {}
    if pre.get("quick_gelu"):
        clip_cfg["quick_gelu"] = True
    return open_clip_config(entry.architecture or "", clip_cfg, pre, entry.description)


# A Hugging Face text tower (open_clip's `hf_model_name`, e.g. BiomedCLIP's PubMedBERT): its config from the model's
# repo, its tokenizer from `hf_tokenizer_name`'s; the weights are in the open_clip checkpoint, never fetched here.
TOKENIZER_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
VOCABULARY_FILES = frozenset({"vocab.txt", "tokenizer.json", "vocab.json", "spiece.model", "sentencepiece.bpe.model"})


def _fetch_text_model(entry: Published, text_cfg: dict[str, Any]) -> TextModel:
    """Download and verify the text tower's `config.json` and tokenizer files, so that the model directory
    loads with no hub; one line when a repo or its vocabulary is missing."""
    from radretrieve.models.published import is_repo_id
    from radretrieve.models.radclip import TEXT_FILE_MAX_BYTES

    model_repo = text_cfg.get("hf_model_name")
    tokenizer_repo = text_cfg.get("hf_tokenizer_name") or model_repo
    for repo in (model_repo, tokenizer_repo):
        if not isinstance(repo, str) or not is_repo_id(repo):
            what = f"text model {str(repo)[:80]!r} is not a hub repo id"
            raise ModelLoadError(f"{entry.repo}/{OPEN_CLIP_CONFIG}: {what}")
    try:
        config = fetch(model_repo, "config.json", None, TEXT_FILE_MAX_BYTES)
    except Exception as exc:  # RemoteEntryNotFoundError and the like: one line naming the file
        raise (exc if isinstance(exc, ModelLoadError) else _hub_error(exc, model_repo, "config.json", None)) from exc
    got = {"config.json": config}
    for name in TOKENIZER_FILES:
        found = _fetch_optional(tokenizer_repo, name, TEXT_FILE_MAX_BYTES)
        if found is not None:
            got[name] = found
    if not VOCABULARY_FILES & set(got):
        where = "in the huggingface cache" if offline() else f"at {endpoint()}"
        tried = ", ".join(sorted(VOCABULARY_FILES))
        raise ModelLoadError(f"hub repo {tokenizer_repo} has no tokenizer vocabulary {where} (none of {tried})")
    record: dict[str, Any] = {"repo": model_repo, "commit": config.commit}
    if tokenizer_repo != model_repo:
        record["tokenizer_repo"] = tokenizer_repo
    record["files"] = {name: f"sha256:{f.sha256}" for name, f in got.items()}
    return TextModel({name: f.path for name, f in got.items()}, record)


def _fetch_optional(repo: str, filename: str, max_bytes: int) -> Fetched | None:
    """`fetch`, or None when the repo has no such file (offline: when the cache has none)."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import RemoteEntryNotFoundError

    if offline():
        cached = try_to_load_from_cache(repo, filename)
        return _verify(Path(cached), repo, filename, None) if isinstance(cached, str) else None
    try:
        return fetch(repo, filename, None, max_bytes)
    except RemoteEntryNotFoundError:
        return None
