"""A small real Hugging Face hub for tests of `radretrieve models pull`: the file routes `huggingface_hub`
uses, served from memory on a free 127.0.0.1 port (point `HF_ENDPOINT` at `url`).

Routes, as the hub serves them and `huggingface_hub` reads them (its `file_download` module):
`HEAD|GET /{org}/{repo}/resolve/{revision}/{filename}` answers with `X-Repo-Commit` (the commit the revision
resolves to), an `ETag` (a large-file (LFS) blob's sha256, in `X-Linked-Etag` too, with `X-Linked-Size`; a
small file's git blob sha1) and the bytes, honouring `Range: bytes=N-` with 206 for a resumed download. Unknown
repos, revisions and files get 404 with the hub's `X-Error-Code` (RepoNotFound, RevisionNotFound,
EntryNotFound), which the library turns into its typed errors.

Faults a test can ask for, per file: `cut_after` (send the full length header, then close the connection
after N bytes, once), `corrupt` (send other bytes than the declared sha256, that many times), `declared_size`
and `declared_etag` (declare a size or an ETag other than the true one). The tree route (`/api/models/.../tree/...`)
lists a folder's files, as transformers asks it before loading a tokenizer. Every request is recorded in `seen`
as (method, path, Range header) to prove what was (not) downloaded.

Tiny checkpoints in the real formats: `tiny_hf_clip()` (a `transformers.CLIPModel` state dict saved with
torch.save, as RadCLIP.pth is) and `tiny_open_clip_repo()` (an open_clip checkpoint and its
`open_clip_config.json`, as open_clip hub repos hold them).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from radretrieve.testing.local_http import LocalServer, QuietHandler

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # what every revision resolves to (40 hex, like git)
LFS_MIN = 1024  # files at least this big are served as LFS files (sha256 ETag), like the hub's large files


@dataclass
class HubFile:
    """One file of a repo and the faults to inject when it is downloaded."""

    data: bytes
    cut_after: int | None = None  # GET: close the connection after this many body bytes (once)
    corrupt: int = 0  # GET: serve bytes that do not match the declared sha256 this many times
    declared_size: int | None = None  # the size declared in X-Linked-Size (None: the true size)
    declared_etag: str | None = None  # the ETag / X-Linked-Etag sent (None: the true one), e.g. a path
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()

    @property
    def lfs(self) -> bool:
        return len(self.data) >= LFS_MIN

    @property
    def etag(self) -> str:
        if self.lfs:
            return self.sha256
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()  # git's blob id


class HubServer(LocalServer):
    """Serves `repos` ({"org/name": {filename: HubFile}}) like the hub's resolve route; see module docstring."""

    def __init__(self, repos: dict[str, dict[str, HubFile]] | None = None) -> None:
        self.repos: dict[str, dict[str, HubFile]] = repos or {}
        self.seen: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._start()

    def add(self, repo: str, filename: str, data: bytes, **faults: Any) -> HubFile:
        f = HubFile(data, **faults)
        self.repos.setdefault(repo, {})[filename] = f
        return f

    def gets(self, filename: str) -> list[tuple[str, str, str | None]]:
        """The GET requests of a file (by its name at the end of the path)."""
        return [s for s in self.seen if s[0] == "GET" and s[1].endswith("/" + filename)]

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        hub = self

        class Handler(QuietHandler):
            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = urllib.parse.urlsplit(self.path).path
                with hub._lock:
                    hub.seen.append((self.command, path, self.headers.get("Range")))
                if path.startswith("/api/models/") and "/tree/" in path:
                    self._tree(path)
                    return
                found = hub._resolve(path)
                if isinstance(found, str):
                    self._not_found(found)
                    return
                self._send_file(found, body)

            def _tree(self, path: str) -> None:
                """The tree route (a folder's listing, one page), which transformers asks before a tokenizer."""
                found = hub._tree(path)
                if isinstance(found, str):
                    self._not_found(found)
                    return
                data = json.dumps(found).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(data)

            def _not_found(self, code: str) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _send_file(self, f: HubFile, body: bool) -> None:
                start = _range_start(self.headers.get("Range"))
                data = f.data
                if body and f.corrupt > 0:
                    with hub._lock:
                        f.corrupt -= 1
                    data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]  # same size, other bytes
                part = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{f.declared_etag or f.etag}"')
                if f.lfs:
                    self.send_header("X-Linked-Etag", f'"{f.declared_etag or f.sha256}"')
                    self.send_header("X-Linked-Size", str(f.declared_size or len(f.data)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if not body:
                    return
                cut = f.cut_after
                if cut is not None and cut < len(part):
                    with hub._lock:
                        f.cut_after = None  # once
                    self.wfile.write(part[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        return Handler

    def _resolve(self, path: str) -> HubFile | str:
        """The file a resolve path names, or the hub's error code."""
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if len(parts) < 5 or parts[2] != "resolve":
            return "RepoNotFound"
        repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if repo not in self.repos:
            return "RepoNotFound"
        if revision not in ("main", COMMIT):
            return "RevisionNotFound"
        return self.repos[repo].get(filename) or "EntryNotFound"

    def _tree(self, path: str) -> list[dict[str, Any]] | str:
        """The files directly under a folder that `/api/models/ORG/NAME/tree/REVISION/FOLDER` names."""
        head, _, rest = path.removeprefix("/api/models/").partition("/tree/")
        revision, _, folder = urllib.parse.unquote(rest).partition("/")
        if head not in self.repos:
            return "RepoNotFound"
        if revision not in ("main", COMMIT):
            return "RevisionNotFound"
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        names = [n for n in self.repos[head] if n.startswith(prefix) and "/" not in n[len(prefix) :]]
        if not names:
            return "EntryNotFound"
        return [
            {"type": "file", "path": n, "size": len(self.repos[head][n].data), "oid": self.repos[head][n].etag}
            for n in names
        ]


def _range_start(header: str | None) -> int:
    if not header or not header.startswith("bytes="):
        return 0
    first = header[len("bytes=") :].split(",")[0].split("-")[0]
    return int(first) if first.isdigit() else 0


# ------------------------------------------------------------------------------------------- checkpoints
def tiny_clip_config() -> Any:
    """A tiny `transformers.CLIPConfig` of OpenAI CLIP's layout: 64-wide heads, quick GELU, CLIP's BPE
    vocabulary (49408 ids: open_clip's bundled tokenizer reads the texts), 16 tokens, 32 px, patch 8."""
    from transformers import CLIPConfig

    text = {"vocab_size": 49408, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2}
    text |= {"num_attention_heads": 1, "max_position_embeddings": 16, "hidden_act": "quick_gelu"}
    text |= {"bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 0}
    vision = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 2}
    vision |= {"image_size": 32, "patch_size": 8, "hidden_act": "quick_gelu"}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


def tiny_hf_clip(seed: int = 0) -> tuple[Any, bytes]:
    """A tiny `CLIPModel` (eval mode) and its state dict as torch.save bytes, the format of RadCLIP.pth."""
    import torch
    from transformers import CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(tiny_clip_config()).eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return model, buf.getvalue()


TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


def tiny_open_clip_repo(seed: int = 0, quick_gelu: bool = True) -> tuple[Any, dict[str, bytes]]:
    """A tiny open_clip `CLIP` (eval mode) and the files of its hub repo: `open_clip_config.json` and
    `open_clip_model.safetensors`. `quick_gelu=False`: plain GELU, as LAION's checkpoints (the config then
    leaves the key out, as open_clip's own configs do)."""
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save

    torch.manual_seed(seed)
    cfg = TINY_OPEN_CLIP | {"quick_gelu": quick_gelu}
    if not quick_gelu:
        del cfg["quick_gelu"]
    model = CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=quick_gelu).eval()
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    config = {"model_cfg": cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    return model, {"open_clip_config.json": json.dumps(config).encode(), "open_clip_model.safetensors": save(tensors)}


# BiomedCLIP's layout, tiny: an open_clip CustomTextCLIP whose text tower is a Hugging Face BERT (its config and a
# WordPiece vocabulary in a repo of their own), the checkpoint a torch pickle of tensors (open_clip_pytorch_model.bin)
# holding the position ids buffer that transformers before 4.31 saved, as the real one does.
TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TINY_WORDS = "a an the of with and in chest radiograph axial ct abdomen contrast lung liver mass nodule normal"


def tiny_biomedclip_repos(text_repo: str, seed: int = 0) -> tuple[Any, dict[str, dict[str, bytes]]]:
    """A tiny CustomTextCLIP (eval mode, built by open_clip from these very files) and the files of its two hub
    repos: {"open_clip": {open_clip_config.json, open_clip_pytorch_model.bin}, "text": {config.json, vocab.txt,
    tokenizer_config.json}} (`text_repo` is the `hf_model_name` / `hf_tokenizer_name` the config names)."""
    import tempfile
    from pathlib import Path

    import torch
    from transformers import BertConfig

    from radretrieve.foundation.fileio import atomic_write_bytes
    from radretrieve.models.open_clip_import import import_open_clip

    import_open_clip(hf_text=True)  # this process may have imported open_clip for models without such a tower
    from open_clip.model import CustomTextCLIP

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS.split()]
    bert = BertConfig(vocab_size=len(vocab), max_position_embeddings=64, **TINY_BERT)
    text = {"config.json": bert.to_json_string().encode(), "vocab.txt": ("\n".join(vocab) + "\n").encode()}
    text["tokenizer_config.json"] = json.dumps({"do_lower_case": True, "model_max_length": 64}).encode()
    text_cfg = {"hf_model_name": text_repo, "hf_tokenizer_name": text_repo, "hf_proj_type": "mlp"}
    text_cfg |= {"hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 24}
    model_cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8}}
    model_cfg["text_cfg"] = text_cfg
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in text.items():
            atomic_write_bytes(Path(tmp) / name, data)
        torch.manual_seed(seed)
        cfg = text_cfg | {"hf_model_name": tmp, "hf_model_pretrained": False}  # open_clip reads the config by name
        model = CustomTextCLIP(model_cfg["embed_dim"], model_cfg["vision_cfg"], cfg).eval()
    state = dict(model.state_dict())
    state["text.transformer.embeddings.position_ids"] = torch.arange(64)[None]
    buf = io.BytesIO()
    torch.save(state, buf)
    config = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    repos = {
        "open_clip": {
            "open_clip_config.json": json.dumps(config).encode(),
            "open_clip_pytorch_model.bin": buf.getvalue(),
        }
    }
    return model, repos | {"text": text}
