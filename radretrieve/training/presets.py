"""Named training recipes shared by the demo and the benchmarks."""

from __future__ import annotations

from radretrieve.training.config import DataConfig, ImageStageConfig, TextConfig, TrainConfig, VolumeStageConfig

REGION_MODALITY = "{region} {modality}"
POSITION = "lesion {lesion}, {position}"


def synthetic_recipe(
    seed: int = 0, epochs_2d: int = 8, epochs_3d: int = 30, lr: float = 5e-4, adapter_lr: float = 1e-3
) -> TrainConfig:
    """radclip-tiny on a synthetic archive: RadCLIP-style label templates ("REGION MODALITY, LABEL").

    The text encoder is trained too (both stages, token table frozen): radclip-tiny's text tower is a random
    feature map, and position words never occur in the 2D stage. Slices are paired with region/modality and
    the volume's lesion presence, so the image encoder learns to see lesions rather than ignore them.
    """
    return TrainConfig(
        seed=seed,
        text=TextConfig(
            source="template",
            templates=(REGION_MODALITY, f"{REGION_MODALITY}, {POSITION}", POSITION),
            slice_templates=(REGION_MODALITY, REGION_MODALITY + ", lesion {lesion}"),
        ),
        data=DataConfig(slices_per_volume=2),
        image_stage=ImageStageConfig(epochs=epochs_2d, batch_size=32, lr=lr, train_text=True, text_lr=lr),
        volume_stage=VolumeStageConfig(epochs=epochs_3d, batch_size=32, lr=adapter_lr, train_text=False, text_lr=lr),
    )
