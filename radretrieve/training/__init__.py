"""Training: RadCLIP's two-stage recipe (2D image encoder, then the 3D slice pooling adapter).

    from radretrieve.training import TrainConfig, train
    result = train(TrainConfig(), "archive/manifest.csv", "runs/tiny", model="radclip-tiny")

The configs import without torch; `train` and `TrainResult` load torch on first use.
"""

from __future__ import annotations

from typing import Any

from radretrieve.training.config import (
    AugmentConfig,
    CheckpointConfig,
    DataConfig,
    ImageStageConfig,
    StageConfig,
    TextConfig,
    TrainConfig,
    VolumeStageConfig,
)

__all__ = [
    "AugmentConfig",
    "CheckpointConfig",
    "Interrupted",
    "DataConfig",
    "ImageStageConfig",
    "StageConfig",
    "TextConfig",
    "TrainConfig",
    "TrainResult",
    "VolumeStageConfig",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainResult", "Interrupted"):
        from radretrieve.training import api

        return getattr(api, name)
    raise AttributeError(name)
