"""A deterministic synthetic radiology archive for demos, tests and scale benchmarks.

Layout of OUT (one imaging item per study)::

    OUT/manifest.csv                 path,text,study,split,region,modality,lesion,position,side,density,size
    OUT/s0-00000/ct/IM0007.dcm ...   a DICOM CT series, shuffled file names;  OUT/s0-00000/ct.json its report
    OUT/s0-00001/mr.nii.gz           a NIfTI MR volume;                        OUT/s0-00001/mr.json
    OUT/s0-00002/xr.png | xr.dcm     a radiograph (PNG, or DICOM DX/CR);        OUT/s0-00002/xr.json

Each JSON sidecar holds the same text, labels, split and study as the manifest row, so scanning the
folder and scanning the manifest give the same items. Study keys carry the seed (`s{seed}-{index}`), so
archives made with different seeds can be merged into one (an incremental-indexing test does). Everything
is derived from `seed` (UIDs via pydicom's `generate_uid` with seed-derived entropy, noise via numpy
Generators): same seed, same bytes.
The lesion's position along the slice axis shows only through slice order (see radretrieve.synth.phantoms).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_write_bytes
from radretrieve.synth.phantoms import POSITIONS, REGIONS, LesionSpec, lesion_radius, phantom_volume, radiograph
from radretrieve.synth.reports import report
from radretrieve.synth.writers import DicomIds, write_ct_series, write_nifti, write_png, write_radiograph_dicom

MANIFEST_NAME = "manifest.csv"
LABEL_COLUMNS = ("region", "modality", "lesion", "position", "side", "density", "size")
_FOV_MM = {"head": 220.0, "chest": 360.0, "abdomen": 380.0}  # in-plane field of view per region
_SLICE_SPACINGS = (1.0, 1.5, 2.0, 2.5, 3.0, 5.0)


@dataclass(frozen=True)
class SynthOptions:
    """Size options of the generator (small defaults keep 1,000 studies at about a minute)."""

    image_size: int = 64  # in-plane pixels of every slice/radiograph
    min_slices: int = 16  # fewest slices per CT/MR volume (>= 15 keeps a lesion inside one third)
    max_slices: int = 48  # most slices per CT/MR volume
    lesion_rate: float = 0.7  # fraction of studies with a lesion
    modality_weights: tuple[float, float, float] = (0.5, 0.25, 0.25)  # CT, MR, XR


@dataclass(frozen=True)
class StudyTruth:
    """Ground truth of one synthetic study."""

    key: str  # study key and folder name, e.g. "s00012"
    region: str  # head | chest | abdomen
    modality: str  # CT | MR | XR
    xr_format: str  # "png", "dx" or "cr" for radiographs; "" otherwise
    lesion: LesionSpec | None  # None: no lesion
    depth: int  # slices (1 for radiographs)
    spacing: tuple[float, float, float]  # (dz, dy, dx) mm
    size_mm: int  # lesion diameter in mm (0 without lesion)
    split: str  # train | val | test

    def labels(self) -> dict[str, str]:
        les = self.lesion
        volume = self.modality != "XR"
        return {
            "region": self.region,
            "modality": self.modality,
            "lesion": "present" if les else "absent",
            "position": les.position if les and volume else "",
            "side": les.side if les else "",
            "density": les.density if les else "",
            "size": les.size if les else "",
        }


@dataclass(frozen=True)
class SynthSummary:
    """What `synthesize` wrote."""

    out: Path  # archive root
    manifest: Path  # OUT/manifest.csv
    studies: int  # studies written
    files: int  # image/volume files written (a CT series counts each slice)
    by_modality: Mapping[str, int]  # studies per modality: CT, MR, XR
    with_lesion: int  # studies with a lesion

    def line(self) -> str:
        mods = ", ".join(f"{k}={v}" for k, v in sorted(self.by_modality.items()))
        return (
            f"wrote {self.studies} studies ({mods}; {self.with_lesion} with a lesion), {self.files} files "
            f"to {self.out} (manifest {self.manifest.name})"
        )


def draw_truth(seed: int, index: int, opts: SynthOptions) -> StudyTruth:
    """Ground truth of study `index`: a function of (seed, index) only, so studies are independent."""
    rng = np.random.default_rng([seed, index, 0])
    region = REGIONS[int(rng.integers(3))]
    weights = np.asarray(opts.modality_weights, dtype=np.float64)
    modality = ("CT", "MR", "XR")[int(rng.choice(3, p=weights / weights.sum()))]
    xr_format = ("png", "dx", "cr")[int(rng.integers(3))] if modality == "XR" else ""
    has_lesion = bool(rng.random() < opts.lesion_rate)
    lesion = LesionSpec(
        position=POSITIONS[int(rng.integers(3))],
        side=("left", "right")[int(rng.integers(2))],
        density=("hypo", "hyper")[int(rng.integers(2))],
        size=("small", "large")[int(rng.integers(2))],
        offset_y=float(rng.uniform(-1.0, 1.0)),
    )
    depth = 1 if modality == "XR" else int(rng.integers(opts.min_slices, opts.max_slices + 1))
    pixel = _FOV_MM[region] / opts.image_size
    dz = 1.0 if modality == "XR" else float(rng.choice(_SLICE_SPACINGS))
    size_mm = int(round(2 * lesion_radius(opts.image_size, lesion) * pixel)) if has_lesion else 0
    split_draw = rng.random()
    split = "train" if split_draw < 0.8 else ("val" if split_draw < 0.9 else "test")
    return StudyTruth(
        f"s{seed}-{index:05d}",
        region,
        modality,
        xr_format,
        lesion if has_lesion else None,
        depth,
        (dz, pixel, pixel),
        size_mm,
        split,
    )


def _uid(seed: int, *parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["radretrieve-synth", str(seed), *map(str, parts)])


def _ids(seed: int, truth: StudyTruth, index: int) -> DicomIds:
    return DicomIds(
        study_uid=_uid(seed, index, "study"),
        series_uid=_uid(seed, index, "series"),
        frame_uid=_uid(seed, index, "frame"),
        patient_id=f"SYNTH-{index:05d}",
        body_part=truth.region.upper(),
        description=f"SYNTHETIC {truth.modality} {truth.region.upper()}",
    )


def write_study(out: Path, seed: int, index: int, truth: StudyTruth, opts: SynthOptions) -> tuple[str, int]:
    """Write the item of one study; returns (manifest path, files written)."""
    rng = np.random.default_rng([seed, index, 1])
    jitter = rng.uniform(-1.0, 1.0, size=3)
    pixel_seed = int(rng.integers(2**31))
    folder = out / truth.key
    if truth.modality == "XR":
        img = radiograph(truth.region, opts.image_size, truth.lesion, pixel_seed, jitter)
        if truth.xr_format == "png":
            write_png(folder / "xr.png", img)
            return f"{truth.key}/xr.png", 1
        ids = _ids(seed, truth, index)
        write_radiograph_dicom(
            folder / "xr.dcm",
            img,
            truth.spacing[1],
            ids,
            _uid(seed, index, "sop", 0),
            truth.xr_format.upper(),
            monochrome1=bool(rng.random() < 0.5),
        )
        return f"{truth.key}/xr.dcm", 1
    vol = phantom_volume(truth.region, truth.modality, truth.depth, opts.image_size, truth.lesion, pixel_seed, jitter)
    if truth.modality == "MR":
        vol = np.round(vol * rng.uniform(0.8, 1.2))  # scanner gain differs between studies
        write_nifti(folder / "mr.nii.gz", vol, truth.spacing, flip_x=bool(rng.random() < 0.5))
        return f"{truth.key}/mr.nii.gz", 1
    ids = _ids(seed, truth, index)
    names = [f"IM{n + 1:04d}.dcm" for n in rng.permutation(truth.depth)]  # shuffled: name order != slice order
    sops = [_uid(seed, index, "sop", k) for k in range(truth.depth)]
    write_ct_series(folder / "ct", vol, truth.spacing, ids, sops, names, descending_instances=bool(rng.random() < 0.5))
    return f"{truth.key}/ct", truth.depth


def synthesize(
    out: str | Path,
    studies: int,
    seed: int = 0,
    on_study: Callable[[int], None] | None = None,
    **options: object,
) -> SynthSummary:
    """Write `studies` synthetic studies under `out` (must be empty or absent) plus `manifest.csv`.

    Options: image_size, min_slices, max_slices, lesion_rate, modality_weights (see SynthOptions). `on_study(n)`:
    called after each study with the number written so far (the demo's progress lines).
    """
    out = Path(out)
    opts = SynthOptions(**options)  # type: ignore[arg-type]
    _validate(out, studies, opts)
    out.mkdir(parents=True, exist_ok=True)
    rows, files, by_modality, with_lesion = [], 0, {"CT": 0, "MR": 0, "XR": 0}, 0
    for index in range(studies):
        truth = draw_truth(seed, index, opts)
        text = report(
            np.random.default_rng([seed, index, 2]), truth.region, truth.modality, truth.lesion, truth.size_mm
        )
        path, n = write_study(out, seed, index, truth, opts)
        sidecar = {"text": text, "labels": truth.labels(), "split": truth.split, "study": truth.key}
        atomic_write_bytes(out / (_stem(path) + ".json"), json.dumps(sidecar, indent=1, sort_keys=True).encode())
        rows.append({"path": path, "text": text, "study": truth.key, "split": truth.split, **truth.labels()})
        files += n
        by_modality[truth.modality] += 1
        with_lesion += truth.lesion is not None
        if on_study is not None:
            on_study(index + 1)
    manifest = out / MANIFEST_NAME
    atomic_write_bytes(manifest, _csv(rows))
    return SynthSummary(out, manifest, studies, files, by_modality, with_lesion)


def _stem(path: str) -> str:
    for suffix in (".nii.gz", ".png", ".dcm"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def _csv(rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "text", "study", "split", *LABEL_COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _validate(out: Path, studies: int, opts: SynthOptions) -> None:
    if studies < 1:
        raise RadRetrieveError(f"studies must be >= 1, got {studies}")
    if opts.image_size < 32:
        raise RadRetrieveError(f"image_size must be >= 32 (lesions must fit), got {opts.image_size}")
    if not 15 <= opts.min_slices <= opts.max_slices:
        raise RadRetrieveError(f"need 15 <= min_slices <= max_slices, got {opts.min_slices}, {opts.max_slices}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RadRetrieveError(f"{out} exists and is not an empty folder; choose a new output folder")
