"""Help texts shared by several commands (kept torch-free: `--help` must not import torch)."""

from __future__ import annotations

from radretrieve.models.reference import RULES

MODEL_RULES = RULES[0].upper() + RULES[1:] + "."
MODEL_HELP = "Model to use. " + MODEL_RULES
WEIGHTS_HELP = "Weights file (.safetensors/.pt/.bin, or RadCLIP.pth) or an open_clip pretrained tag for --model."
