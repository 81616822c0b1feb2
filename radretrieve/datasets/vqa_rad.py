"""VQA-RAD (Lau et al., Scientific Data 2018) -> manifest: one row per image, with a short report-like text.

VQA-RAD has no reports, only clinician-written question-answer pairs per image (``vqa_rad.json``: fields
``image_name``, ``image_organ``, ``question``, ``question_type``, ``answer``, ``answer_type``...). We derive:

- ``organ`` from ``image_organ`` (HEAD / CHEST / ABD -> head / chest / abdomen), which every record has;
- ``modality`` (CT, MRI, X-ray, US or unknown) and ``plane`` (axial, coronal, sagittal, PA, AP, lateral or
  unknown) from the MODALITY / PLANE questions, strongest evidence first (see `_modality` and `_plane`);
  about two thirds of the images are never asked about their modality, so "unknown" is common and is a
  missing value for label-aware metrics (it matches nothing);
- ``text``: "<plane> <modality> of the <organ>: <question answer. ...>" from the remaining questions
  (findings), paraphrased duplicates removed, e.g. "Axial CT of the abdomen: Is there free air? No. ...";
- ``split``: by image, exact 70/10/20 proportions, from a seeded hash so it is the same on every machine.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radretrieve.foundation.fileio import atomic_write_text

ORGANS = {"HEAD": "head", "CHEST": "chest", "ABD": "abdomen"}
MODALITIES = ("CT", "MRI", "X-ray", "US", "unknown")
PLANES = ("axial", "coronal", "sagittal", "PA", "AP", "lateral", "unknown")
COLUMNS = ("path", "text", "study", "split", "organ", "modality", "plane", "case")
SPLITS = ("train", "val", "test")

# Checked in order: MRI words before CT so "CT or MRI? MRI" style answers are read from the answer alone.
_MODALITY_PATTERNS = (
    ("US", re.compile(r"\bultrasound|\bsonogra|\bus\b")),
    ("MRI", re.compile(r"\bmri?\b|\bflair\b|\bt[12]\b|\bdwi\b|\badc\b|diffusion|weighted|gadolinium")),
    ("CT", re.compile(r"\bct\b|computed tomography|\bcat scan")),
    ("X-ray", re.compile(r"x[- ]?ray|\bcxr\b|\bxr\b|radiograph|\bfilm\b|\bkub\b|mammogra")),
)
# PA before AP: "posterior anterior" must not be read as "anterior posterior".
_PLANE_PATTERNS = (
    ("axial", re.compile(r"\baxial\b|\btransverse\b")),
    ("coronal", re.compile(r"\bcoronal\b")),
    ("sagittal", re.compile(r"\bsag+it+al\b")),
    ("PA", re.compile(r"\bpa\b|postero-?\s?anterior|posterior[- ]anterior")),
    ("AP", re.compile(r"\bap\b|antero-?\s?posterior|anterior[- ]posterior")),
    ("lateral", re.compile(r"\blateral (?:film|view|projection|radiograph|image)")),
)
# Projections only a radiograph has: used to call the modality X-ray when nothing else names it.
_RADIOGRAPH_PLANES = {"PA", "AP", "lateral"}
# "Is this a CT?" style questions: a "yes" names the image's own modality or plane.
_ABOUT_THIS_IMAGE = re.compile(r"^\s*(?:is|was|does|did)\s+(?:this|the)\b")
_NEGATED = re.compile(r"\bnot\b|n't\b")
_LABEL_TYPES = {"MODALITY", "PLANE", "ORGAN"}


@dataclass(frozen=True)
class VqaRadImage:
    """One VQA-RAD image with the labels and text derived from its question-answer pairs."""

    image_name: str  # file name inside images/, e.g. "synpic54610.jpg"
    organ: str  # head | chest | abdomen
    modality: str  # one of MODALITIES
    plane: str  # one of PLANES
    case: str  # MedPix case id (the smallest, for the few images linked to several cases)
    text: str  # "<Plane> <modality> of the <organ>: <findings>"


def _first_match(text: str, patterns: Iterable[tuple[str, re.Pattern[str]]]) -> str | None:
    low = text.lower()
    return next((label for label, pattern in patterns if pattern.search(low)), None)


def _types(record: Mapping[str, Any]) -> set[str]:
    return {t.strip().upper() for t in str(record["question_type"]).split(",")}


def _is_yes(record: Mapping[str, Any]) -> bool:
    return str(record["answer"]).strip().lower() == "yes"


def _vote(tiers: Sequence[list[str]]) -> str:
    """The majority label of the first tier with any evidence; a tie there is "unknown" (no guess)."""
    for votes in tiers:
        if votes:
            ranked = Counter(votes).most_common()
            if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
                return "unknown"
            return ranked[0][0]
    return "unknown"


def _modality(records: Sequence[Mapping[str, Any]], plane: str) -> str:
    """Evidence, strongest first: (1) the answer to a MODALITY question names one ("CT with contrast");
    (2) a yes to "Is this a CT?"; (3) another question mentions it ("... on this MRI?");
    (4) a radiograph-only projection (PA, AP, lateral). Negated questions ("does this not represent") are
    skipped, since their answer names what the image is not."""
    answers, confirmed, mentioned = [], [], []
    for r in records:
        question = str(r["question"])
        if _NEGATED.search(question.lower()):
            continue
        if "MODALITY" in _types(r):
            from_answer = _first_match(str(r["answer"]), _MODALITY_PATTERNS)
            if from_answer:
                answers.append(from_answer)
            elif _is_yes(r) and _ABOUT_THIS_IMAGE.search(question.lower()) and " or " not in question:
                confirmed += [m for m in [_first_match(question, _MODALITY_PATTERNS)] if m]
        else:
            mentioned += [m for m in [_first_match(question, _MODALITY_PATTERNS)] if m]
    projection = ["X-ray"] if plane in _RADIOGRAPH_PLANES else []
    return _vote([answers, confirmed, mentioned, projection])


def _plane(records: Sequence[Mapping[str, Any]]) -> str:
    """Evidence, strongest first: (1) the answer to a PLANE or orientation question names a plane;
    (2) a yes to "Is this an axial image?"; (3) another question mentions axial/coronal/sagittal."""
    answers, confirmed, mentioned = [], [], []
    sectional = _PLANE_PATTERNS[:3]  # "PA" or "lateral" in other questions are too ambiguous to trust
    for r in records:
        question = str(r["question"]).lower()
        if "PLANE" in _types(r) or "orient" in question:
            from_answer = _first_match(str(r["answer"]), _PLANE_PATTERNS)
            if from_answer:
                answers.append(from_answer)
            elif _is_yes(r) and _ABOUT_THIS_IMAGE.search(question) and " or " not in question:
                confirmed += [p for p in [_first_match(question, _PLANE_PATTERNS)] if p]
        else:
            mentioned += [p for p in [_first_match(question, sectional)] if p]
    return _vote([answers, confirmed, mentioned])


def _findings(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """ "Question? Answer." sentences from the non-label questions, in qid order. A paraphrase ("para"
    phrase type) of a question already kept is dropped, and so is an exact repeat."""
    originals = {r["qid_linked_id"] for r in records if "para" not in str(r["phrase_type"])}
    seen: set[tuple[str, str]] = set()
    out = []
    for r in sorted(records, key=lambda r: int(r["qid"])):
        if _types(r) & _LABEL_TYPES:
            continue
        if "para" in str(r["phrase_type"]) and r["qid_linked_id"] in originals:
            continue
        question = " ".join(str(r["question"]).split()).rstrip(" ?") + "?"
        answer = " ".join(str(r["answer"]).split()).rstrip(" .")
        key = (question.lower(), answer.lower())
        if answer and key not in seen:
            seen.add(key)
            out.append(f"{question} {answer[0].upper()}{answer[1:]}.")
    return out


def _header(organ: str, modality: str, plane: str) -> str:
    words = [] if plane == "unknown" else [plane]
    words.append("image" if modality == "unknown" else modality)
    head = " ".join(words) + f" of the {organ}"
    return head[0].upper() + head[1:]


def _case_id(url: str) -> str:
    match = re.search(r"[?&]id=([^&]+)", url)
    return match.group(1) if match else url


def load_vqa_rad(root: Path) -> list[VqaRadImage]:
    """Read ``root/vqa_rad.json`` and return one `VqaRadImage` per image that has questions and a file in
    ``root/images``, sorted by image name. Raises ValueError on a missing file or an unknown organ."""
    json_path = Path(root) / "vqa_rad.json"
    if not json_path.is_file():
        raise ValueError(f"{json_path} not found: point at the VQA-RAD folder holding vqa_rad.json and images/")
    records = json.loads(json_path.read_text(encoding="utf-8"))
    by_image: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_image.setdefault(str(record["image_name"]), []).append(record)
    images = []
    for name in sorted(by_image):
        if not (Path(root) / "images" / name).is_file():
            continue  # a question set without its image cannot be embedded
        rs = by_image[name]
        organ_codes = {str(r["image_organ"]).strip().upper() for r in rs}
        if len(organ_codes) != 1 or not organ_codes <= ORGANS.keys():
            raise ValueError(f"{name}: image_organ {sorted(organ_codes)} is not one of {sorted(ORGANS)}")
        organ = ORGANS[organ_codes.pop()]
        plane = _plane(rs)
        modality = _modality(rs, plane)
        text = ": ".join([_header(organ, modality, plane), " ".join(_findings(rs))]).rstrip(": ")
        case = min(_case_id(str(r["image_case_url"])) for r in rs)
        images.append(VqaRadImage(name, organ, modality, plane, case, text))
    return images


def assign_splits(
    names: Sequence[str], fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0
) -> dict[str, str]:
    """Map each name to train/val/test. Names are ordered by SHA-256 of ``"{seed}:{name}"`` (the same on
    every machine and Python version, unlike ``random``) and cut at the rounded cumulative fractions."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    if len(set(names)) != len(names):
        raise ValueError("names must be unique to be split")
    order = sorted(names, key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest())
    n_train = round(fractions[0] * len(order))
    n_val = round((fractions[0] + fractions[1]) * len(order)) - n_train
    cuts = {name: i for i, name in enumerate(order)}
    return {name: "train" if i < n_train else "val" if i < n_train + n_val else "test" for name, i in cuts.items()}


def convert_vqa_rad(
    root: Path,
    manifest: Path,
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    absolute_paths: bool = False,
) -> list[VqaRadImage]:
    """Write the VQA-RAD manifest CSV (columns `COLUMNS`) to ``manifest`` and return its images.

    ``path`` is relative to the manifest's folder unless ``absolute_paths``; the file is written to a
    temporary name and renamed, so a reader never sees half a manifest."""
    root = Path(root).resolve()
    manifest = Path(manifest)
    images = load_vqa_rad(root)
    splits = assign_splits([im.image_name for im in images], fractions, seed)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    base = manifest.parent.resolve()
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for im in images:
        image_path = root / "images" / im.image_name
        path = str(image_path) if absolute_paths else Path(os.path.relpath(image_path, base)).as_posix()
        study = Path(im.image_name).stem
        writer.writerow([path, im.text, study, splits[im.image_name], im.organ, im.modality, im.plane, im.case])
    atomic_write_text(manifest, buf.getvalue())
    return images
