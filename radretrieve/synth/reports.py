"""Report text for synthetic studies: every sentence follows from the ground truth, phrasing varies."""

from __future__ import annotations

import numpy as np

from radretrieve.synth.phantoms import LesionSpec

_EXAM = {
    "CT": ("CT of the {region}.", "Non-contrast CT {region}.", "Computed tomography of the {region}.", "{Region} CT."),
    "MR": (
        "MRI of the {region}.",
        "MR {region}, T1-weighted.",
        "Magnetic resonance imaging of the {region}.",
        "{Region} MRI.",
    ),
    "XR": (
        "Radiograph of the {region}.",
        "{Region} X-ray, single view.",
        "Plain film of the {region}.",
        "{Region} radiograph.",
    ),
}
_REGION = {"head": ("head", "brain"), "chest": ("chest", "thorax"), "abdomen": ("abdomen",)}
_ORGAN = {
    "head": ("cerebral hemisphere", "hemisphere"),
    "chest": ("lung",),
    "abdomen": ("abdomen", "side of the abdomen"),
}
_DENSITY = {
    "CT": {"hypo": ("hypodense", "low-attenuation"), "hyper": ("hyperdense", "high-attenuation")},
    "MR": {"hypo": ("hypointense", "low-signal"), "hyper": ("hyperintense", "high-signal")},
    "XR": {"hypo": ("lucent", "radiolucent"), "hyper": ("opaque", "radiopaque")},
}
_POSITION = {
    "upper": ("upper", "superior", "cranial"),
    "middle": ("middle", "mid"),
    "lower": ("lower", "inferior", "caudal"),
}
_SIZE = {"small": ("small", "subtle"), "large": ("large", "sizeable")}
_NOUN = ("lesion", "focal lesion", "mass")
_NORMAL = (
    "No focal lesion is identified.",
    "No abnormality detected.",
    "Unremarkable study without focal lesion.",
    "No focal abnormality is seen.",
)
_LESION_3D = (
    "There is a {size} {density} {noun} in the {side} {organ}, in the {position} part of the scanned range, "
    "measuring {mm} mm.",
    "A {mm} mm {density} {noun} is seen in the {side} {organ} at the {position} level.",
    "{Position} slices show a {size} {density} {noun} ({mm} mm) in the {side} {organ}.",
)
_LESION_2D = (
    "There is a {size} {density} {noun} projecting over the {side} {organ}, measuring about {mm} mm.",
    "A {mm} mm {density} {noun} is seen on the {side}.",
    "{Size} {density} {noun} ({mm} mm) in the {side} {organ}.",
)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def report(rng: np.random.Generator, region: str, modality: str, lesion: LesionSpec | None, size_mm: int) -> str:
    """A short report: exam line, finding line, impression line."""
    region_word = _pick(rng, _REGION[region])
    exam = _pick(rng, _EXAM[modality]).format(region=region_word, Region=region_word.capitalize())
    if lesion is None:
        return f"{exam} {_pick(rng, _NORMAL)} Impression: normal {region} {_modality_word(modality)}."
    words = {
        "size": _pick(rng, _SIZE[lesion.size]),
        "density": _pick(rng, _DENSITY[modality][lesion.density]),
        "noun": _pick(rng, _NOUN),
        "side": lesion.side,
        "organ": _pick(rng, _ORGAN[region]),
        "position": _pick(rng, _POSITION[lesion.position]) if modality != "XR" else "",
        "mm": size_mm,
    }
    words.update({k.capitalize(): str(v).capitalize() for k, v in words.items()})
    template = _pick(rng, _LESION_2D if modality == "XR" else _LESION_3D)
    finding = template.format(**words)
    where = f"{lesion.side} {region}" if modality == "XR" else f"{lesion.position} {lesion.side} {region}"
    return f"{exam} {finding} Impression: {lesion.density}{_density_suffix(modality)} lesion, {where}."


def _modality_word(modality: str) -> str:
    return {"CT": "CT", "MR": "MRI", "XR": "radiograph"}[modality]


def _density_suffix(modality: str) -> str:
    return {"CT": "dense", "MR": "intense", "XR": "dense"}[modality]
