"""Help texts shared by several commands (kept torch-free: `--help` must not import torch)."""

from __future__ import annotations

from radretrieve.models.reference import RULES

MODEL_RULES = RULES[0].upper() + RULES[1:] + "."
MODEL_HELP = "Model to use. " + MODEL_RULES
WEIGHTS_HELP = "Weights file (.safetensors/.pt/.bin, or RadCLIP.pth) or an open_clip pretrained tag for --model."
PREPROCESS_HELP = (
    "Preprocessing profile: clip (grey to RGB, shortest side resized + centre crop, one CT window; what pretrained "
    "CLIP weights saw) or radiology-3window (three HU windows, padded; models trained here). "
    "Default: the model's own (pretrained references: clip; radclip-tiny and trained models: as trained)."
)
