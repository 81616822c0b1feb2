"""`Encoder`: what the rest of radretrieve needs of a model, as a typed protocol.

`radretrieve.models.radclip.RadCLIP` is the implementation; pipelines, the out-dir format, evaluation and the
application are written against this protocol, so a test double (a slow fake encoder, say) type-checks too.
No torch import at run time: the annotations are strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor

    from radretrieve.foundation.config import ModelConfig
    from radretrieve.models.provenance import Provenance
    from radretrieve.models.reference import ModelSource


@runtime_checkable
class TextEncoder(Protocol):
    """Texts -> embeddings; the stored text tower (`FastTextEncoder`) is one too."""

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """float32 [N, D], L2-normalised."""
        ...


@runtime_checkable
class Encoder(TextEncoder, Protocol):
    """A RadCLIP-style model: text, images and volumes into one embedding space."""

    config: ModelConfig  # backbone, adapter and preprocessing configs
    source: ModelSource  # where it was loaded from
    provenance: Provenance  # where its weights came from: untrained, trained, pulled, imported, published, unknown
    training: bool  # torch.nn.Module's train/eval flag

    @property
    def fingerprint(self) -> str:
        """Hash of config and weights (cached until the weights change)."""
        ...

    def encode_images(self, images: Tensor) -> Tensor:
        """float [N, 3, H, W] -> float32 [N, D]."""
        ...

    def encode_volumes(self, volumes: Sequence[Tensor]) -> Tensor:
        """each float [S_i, 3, H, W] -> float32 [N, D]."""
        ...

    def encode_mixed(self, arrays: Sequence[Tensor], is_volume: Sequence[bool]) -> Tensor:
        """2D images [1, 3, H, W] and volumes [S_i, 3, H, W] in one pass -> float32 [N, D]."""
        ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def save(self, directory: str | Path) -> Path:
        """Write a model directory (config.json + model.safetensors)."""
        ...
