"""The RadCLIP model: an open_clip CLIP (image + text towers) and the slice pooling adapter.

The towers are open_clip's `CLIP`, or its `CustomTextCLIP` when the text tower is a Hugging Face model (BiomedCLIP's
BERT): that model's config and tokenizer files then travel with the model (`TEXT_DIR` of its directory), so it is
built and tokenizes with no hub. Either way the adapter pools what the image tower gives.

Encoders return L2-normalised float32 embeddings under `torch.inference_mode`, with bf16 autocast on CUDA.
Volumes are encoded by flattening the slices of all volumes into chunks of at most `max_batch` slices
(so short and long volumes share full batches), then regrouping per volume for the adapter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radretrieve.foundation.config import ModelConfig, canonical_json
from radretrieve.foundation.errors import InputShapeError, ModelLoadError
from radretrieve.models.adapter import SlicePoolingAdapter
from radretrieve.models.open_clip_import import import_open_clip
from radretrieve.models.provenance import CHANGED, UNTRAINED, Provenance, write_provenance
from radretrieve.models.reference import ModelSource
from radretrieve.models.text import make_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# A model whose text tower is a Hugging Face model (open_clip's CustomTextCLIP, e.g. BiomedCLIP's BERT) keeps that
# model's config and tokenizer files in this folder of its model directory, so that it loads with no hub at all.
TEXT_DIR = "hf_text"
TEXT_FILE_MAX_BYTES = 64 << 20  # a tokenizer.json of a large vocabulary is tens of MB; weights never go here


def build_clip(cfg: ModelConfig, text_dir: Path | None = None) -> nn.Module:
    """An open_clip `CLIP` from the config's `clip` kwargs (random init); a `CustomTextCLIP` when the text tower
    is a Hugging Face model (`hf_model_name`), built from the config files in `text_dir` (never downloaded)."""
    c = cfg.clip
    vision, text = dict(c["vision_cfg"]), dict(c["text_cfg"])
    import_open_clip(hf_text="hf_model_name" in text)
    from open_clip.model import CLIP, CustomTextCLIP

    if "timm_model_name" in vision:
        vision["timm_model_pretrained"] = False  # the weights file holds them; timm must not download any
    kind: type[nn.Module] = CLIP
    if "hf_model_name" in text:
        if text_dir is None or not (text_dir / "config.json").is_file():
            raise ModelLoadError(
                f"{cfg.name}: its text tower is the Hugging Face model {text['hf_model_name']}, whose config is not "
                f"here (a model directory keeps it in {TEXT_DIR}/): get it with `radretrieve models pull`"
            )
        # open_clip reads the tower's config by name: the folder's copy is that name here (the hub is never asked)
        text |= {"hf_model_name": str(text_dir), "hf_model_pretrained": False}
        kind = CustomTextCLIP
    return kind(
        embed_dim=int(c["embed_dim"]),
        vision_cfg=vision,
        text_cfg=text,
        quick_gelu=bool(c.get("quick_gelu", False)),
    )


def read_text_files(text_dir: Path | None) -> dict[str, bytes]:
    """The Hugging Face text model files of a model (see `TEXT_DIR`): {file name: bytes}; {} without a folder."""
    if text_dir is None or not text_dir.is_dir():
        return {}
    files: dict[str, bytes] = {}
    for path in sorted(text_dir.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            if path.stat().st_size > TEXT_FILE_MAX_BYTES:
                raise ModelLoadError(f"{path}: larger than a text model's config or tokenizer file; refused")
            files[path.name] = path.read_bytes()
    return files


class RadCLIP(nn.Module):
    """CLIP towers + slice pooling adapter; see module docstring."""

    def __init__(
        self, cfg: ModelConfig, max_batch: int = 64, source: ModelSource | None = None, text_dir: Path | None = None
    ) -> None:
        """`text_dir`: the Hugging Face text model's config and tokenizer files (`TEXT_DIR`), for a config whose
        text tower is one; they are kept in memory (`text_files`), saved with the model and fingerprinted."""
        super().__init__()
        self.config = cfg
        self.max_batch = max_batch  # slices per image-tower forward pass
        self.text_files = read_text_files(text_dir)
        self.clip = build_clip(cfg, text_dir)  # open_clip CLIP or CustomTextCLIP: the adapter pools the image tower
        self.adapter = SlicePoolingAdapter(cfg.embed_dim, cfg.adapter)
        self.tokenizer = make_tokenizer(cfg.tokenizer, cfg.context_length, text_dir, cfg.clip.get("text_cfg", {}))
        # how it was loaded (an out dir stores it to load the same model again); a bare config: its registry name
        self.source: ModelSource = source or ModelSource("registry", cfg.name)
        self._fingerprint: tuple[tuple, str] | None = None  # (weights version, fingerprint), see `fingerprint`
        self.provenance = UNTRAINED  # a bare config is random init; loaders attach what they loaded

    # ----------------------------------------------------------------- provenance
    @property
    def provenance(self) -> Provenance:
        """Where the weights came from (`radretrieve.models.provenance`). Once the weights are changed in memory
        after the record was attached (an optimizer step, `load_state_dict`) the record no longer holds: the model
        says `unknown` (never still "untrained" for weights someone trained) until a new record is attached, as
        `radretrieve train` does."""
        record, versions = self._provenance
        if versions != self._parameter_versions():
            return CHANGED
        return self._with_digest(record) if self._pending_digest is not None else record

    @provenance.setter
    def provenance(self, record: Provenance) -> None:
        self._provenance = (record, self._parameter_versions())
        self._pending_digest: tuple[Path, tuple[int, ...]] | None = None

    def attach_provenance(
        self, record: Provenance, digest_of: Path | None = None, identity: tuple[int, ...] | None = None
    ) -> None:
        """Attach `record`; `digest_of`: the weights file it came from, whose sha256 the record lacks. The file is
        hashed on the first read of `provenance` (writing a record: index, embed, train), not at load: a search
        loads a model of gigabytes and never reads it. Hashed only if the file is still the one loaded (its
        `file_identity`, taken before it was read: default now); else the digest stays unknown (None), never
        that of other bytes."""
        self.provenance = record
        if digest_of is not None and Path(digest_of).is_file():
            self._pending_digest = (Path(digest_of), identity or file_identity(Path(digest_of)))

    def _with_digest(self, record: Provenance) -> Provenance:
        """The record with the pending file digest filled in (once); see `attach_provenance`."""
        from radretrieve.models.provenance import file_digest

        pending, self._pending_digest = self._pending_digest, None
        if pending is None or record.digest is not None:
            return record
        path, key = pending
        same = path.is_file() and file_identity(path) == key
        record = dataclasses.replace(record, digest=file_digest(path) if same else None)
        self._provenance = (record, self._provenance[1])
        return record

    def _parameter_versions(self) -> tuple[int, ...]:
        """The in-place version counters of the parameters: any update bumps one; `.to(device)` keeps them
        (buffers are left out: a move to another device replaces them with fresh counters). A model built under
        `torch.inference_mode` has no counters (-1): its weights cannot be trained, so its record holds."""
        return tuple(_version(p) for p in self.parameters())

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def image_size(self) -> int:
        return int(self.config.clip["vision_cfg"]["image_size"])

    @property
    def fingerprint(self) -> str:
        """sha256 over the canonical config JSON and every tensor (name, dtype, shape, bytes), sorted by name.

        Hashing every weight takes seconds for a large model, so the value is kept until the weights change:
        any in-place update (an optimizer step, `load_state_dict`, `fill_` under `no_grad`) bumps the tensor's
        version counter, and a move (`.to`) or replacement changes its storage; both change the key below.
        """
        key = self._weights_version()
        if self._fingerprint is None or self._fingerprint[0] != key:
            self._fingerprint = (key, self._hash_weights())
        return self._fingerprint[1]

    def _weights_version(self) -> tuple:
        config = canonical_json(_fingerprint_config(self.config))
        tensors = self.state_dict(keep_vars=True).items()
        return (config, tuple((n, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for n, t in tensors))

    def _hash_weights(self) -> str:
        h = hashlib.sha256(canonical_json(_fingerprint_config(self.config)).encode())
        for name, data in sorted(self.text_files.items()):  # a text model's tokenizer: other ids, other embeddings
            h.update(f"{TEXT_DIR}/{name}|{len(data)}|".encode() + hashlib.sha256(data).digest())
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            if t.numel():  # the buffer itself, not a bytes copy of it (hashlib reads it outside the GIL)
                h.update(t.reshape(-1).view(torch.uint8).numpy())
        return h.hexdigest()[:32]

    # ----------------------------------------------------------------- encoders
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Texts -> float32 [N, D], L2-normalised. Over-long texts are truncated (counted, warned once)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return torch.zeros(0, self.config.embed_dim)
        out = []
        with self._inference():
            for start in range(0, len(texts), self.max_batch):
                tokens = self.tokenizer(list(texts[start : start + self.max_batch])).to(self.device)
                out.append(self.clip.encode_text(tokens).float())
        return F.normalize(torch.cat(out), dim=-1).cpu()

    def encode_images(self, images: Tensor) -> Tensor:
        """Preprocessed images float [N, 3, H, W] -> float32 [N, D], L2-normalised."""
        self._check_images(images, "images")
        with self._inference():
            return F.normalize(self._slice_features(images), dim=-1).cpu()

    def encode_volumes(self, volumes: Sequence[Tensor]) -> Tensor:
        """Volumes, each preprocessed slices float [S_i, 3, H, W] (S_i >= 1) -> float32 [N, D], L2-normalised."""
        if not volumes:
            return torch.zeros(0, self.config.embed_dim)
        for i, v in enumerate(volumes):
            self._check_images(v, f"volume {i}")
        with self._inference():
            slices = F.normalize(self._slice_features(torch.cat(list(volumes))), dim=-1)
            return self.pool(slices, [v.shape[0] for v in volumes]).cpu()

    def encode_mixed(self, arrays: Sequence[Tensor], is_volume: Sequence[bool]) -> Tensor:
        """2D images ([1, 3, H, W]) and volumes ([S_i, 3, H, W]) in one pass -> float32 [N, D], L2-normalised.

        All slices share the image-tower chunks; images are used as they are, volumes go through the adapter.
        Equal to `encode_images` / `encode_volumes` on the two groups (bulk indexing mixes both in a batch).
        """
        if len(arrays) != len(is_volume):
            raise InputShapeError(f"encode_mixed: {len(arrays)} arrays but {len(is_volume)} kind flags")
        if not arrays:
            return torch.zeros(0, self.config.embed_dim)
        for i, (a, vol) in enumerate(zip(arrays, is_volume)):
            self._check_images(a, f"item {i}")
            if not vol and a.shape[0] != 1:
                raise InputShapeError(f"item {i}: a 2D image must be [1, 3, H, W], got {tuple(a.shape)}")
        with self._inference():
            slices = F.normalize(self._slice_features(torch.cat(list(arrays))), dim=-1)
            groups = torch.split(slices, [a.shape[0] for a in arrays])
            out = torch.empty(len(arrays), slices.shape[1], device=slices.device)
            vol_idx = [i for i, v in enumerate(is_volume) if v]
            img_idx = [i for i, v in enumerate(is_volume) if not v]
            if img_idx:
                out[img_idx] = torch.cat([groups[i] for i in img_idx])
            if vol_idx:
                out[vol_idx] = self.pool(torch.cat([groups[i] for i in vol_idx]), [arrays[i].shape[0] for i in vol_idx])
            return out.cpu()

    def pool(self, slice_embeddings: Tensor, counts: Sequence[int]) -> Tensor:
        """Regroup per-slice embeddings float [sum(counts), D] into padded volumes and run the adapter."""
        groups = torch.split(slice_embeddings, list(counts))
        padded = nn.utils.rnn.pad_sequence(groups, batch_first=True)
        lengths = torch.tensor(list(counts), device=padded.device)
        pad_mask = torch.arange(padded.shape[1], device=padded.device)[None, :] >= lengths[:, None]
        return F.normalize(self.adapter(padded.float(), pad_mask).float(), dim=-1)

    def _slice_features(self, images: Tensor) -> Tensor:
        """Unnormalised image-tower features float32 [N, D], computed in chunks of `max_batch`."""
        feats = [
            self.clip.encode_image(chunk.to(self.device, non_blocking=True)).float()
            for chunk in torch.split(images, self.max_batch)
        ]
        return torch.cat(feats)

    def _check_images(self, images: Tensor, what: str) -> None:
        size = self.image_size
        if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InputShapeError(f"{what}: expected float [N, 3, {size}, {size}] with N >= 1, got {shape}")
        if images.shape[0] == 0:
            raise InputShapeError(f"{what}: empty (shape {tuple(images.shape)}); a volume needs at least one slice")

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        was_training = self.training
        self.eval()
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()
        )
        try:
            with torch.inference_mode(), autocast:
                yield
        finally:
            self.train(was_training)

    # ----------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write a model directory: config.json (+ fingerprint, source), model.safetensors, provenance.json and,
        for a Hugging Face text tower, its config and tokenizer files in `TEXT_DIR`."""
        from safetensors.torch import save_file

        from radretrieve.foundation.fileio import atomic_path, atomic_write_bytes

        directory = Path(directory)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp))
        for name, data in self.text_files.items():
            atomic_write_bytes(directory / TEXT_DIR / name, data)
        meta = self.config.to_dict() | {"fingerprint": self.fingerprint, "source": self.source.to_json()}
        atomic_write_bytes(directory / CONFIG_FILE, json.dumps(meta, indent=1).encode())
        write_provenance(directory, self.provenance)
        return directory


def file_identity(path: Path) -> tuple[int, ...]:
    """What tells a file from a changed or replaced one without reading it: size, mtime and inode."""
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _version(tensor: Tensor) -> int:
    """A tensor's in-place version counter; -1 for an inference tensor, which has none."""
    try:
        return tensor._version
    except RuntimeError:
        return -1


def _fingerprint_config(cfg: ModelConfig) -> dict:
    """The parts of the config that change embeddings (not the name or description)."""
    d = cfg.to_dict()
    for key in ("name", "description", "seed"):
        d.pop(key, None)
    d["preprocess"] = cfg.preprocess.canonical_dict()  # the default profile is left out: fingerprints unchanged
    return d
