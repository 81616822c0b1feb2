"""Converters from public radiology datasets to the manifest format (docs/guide/archives.md: Manifests): path,
text, study, split, labels. Each converter reads the dataset where it lies and writes only the manifest."""

from __future__ import annotations

from radretrieve.datasets.vqa_rad import VqaRadImage, assign_splits, convert_vqa_rad, load_vqa_rad

__all__ = ["VqaRadImage", "assign_splits", "convert_vqa_rad", "load_vqa_rad"]
