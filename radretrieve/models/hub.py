"""Fail fast when a download cannot happen: is the Hugging Face hub reachable, or are the files cached?

open_clip fetches pretrained weights and `hf-hub:` models through huggingface_hub, which retries a failed
connection five times with back-off (about 25 s, measured with no network) before it falls back to the
cache. `check_download` decides up front: hub reachable -> go ahead; files cached -> go ahead (the library
falls back to them; HF_HUB_OFFLINE=1 skips its retries); neither -> one `ModelLoadError` line at once.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from radretrieve.foundation.errors import ModelLoadError

OFFLINE_HINT = (
    "no network? download it once on a connected machine (it is cached under ~/.cache/huggingface) "
    "or pass a local file with --weights"
)
PROBE_SECONDS = 3.0  # connect timeout of the reachability probe
# Files open_clip looks for in a hub repo: its config (hf-hub ids) and the weights (either format).
HUB_FILES = ("open_clip_config.json", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _proxied() -> bool:
    return any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the hub endpoint (HF_ENDPOINT) opens within `timeout` seconds."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def cached(repo: str) -> bool:
    """Whether any open_clip file of hub repo `repo` is in the local huggingface cache."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, name), str) for name in HUB_FILES)


def check_download(what: str, repo: str | None) -> None:
    """Raise `ModelLoadError` now if `repo` (a hub repo id, or None when unknown) can be neither downloaded
    nor read from the cache. In offline mode or behind a proxy the library itself decides (and fails fast)."""
    if repo is None or _offline_mode() or _proxied():
        return
    if hub_reachable() or cached(repo):
        return
    raise ModelLoadError(f"could not download {what}: {OFFLINE_HINT}")
