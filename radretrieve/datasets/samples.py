"""The real sample data that tests and benchmarks read: where it is, where it comes from, how to fetch it.

Tests look for it in one place, `sample_data_dir()`: the environment variable RADRETRIEVE_DATA, else the
`shared/data` folder beside the source checkout (`../shared/data` from the repository root). Without it they
skip with `FETCH_HINT`. `fetch_samples(DIR)` (`radretrieve fetch-data DIR`) downloads each sample from its
public source and checks SHA-256 digests before anything is written under DIR:

| folder | source | licence |
| --- | --- | --- |
| vqa-rad/ | VQA-RAD (Lau et al., Sci Data 5:180251, 2018), OSF project 89kps | CC0 1.0 |
| ct-head/ | "ProMED CT 0051", Debian package invesalius-examples 3.1.99998-4, Cranium.inv3 | GPL-2 |
| mri-t1-brain/ | Colin27 T1 template (Holmes et al. 1998), Debian mricron-data 1.2.20211006+dfsg-4 | BSD-3 |

The two Debian packages are verified by the digests of the package files (as in Debian's Packages index)
and of what is extracted; VQA-RAD by the digests of the question file and of the image set as used here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import plistlib
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_dir, atomic_write_bytes

log = logging.getLogger(__name__)

ENV_VAR = "RADRETRIEVE_DATA"
FETCH_HINT = f"set {ENV_VAR}=DIR to a copy, or run `radretrieve fetch-data DIR` (docs/development.md: Sample data)"
DEBIAN = "https://deb.debian.org/debian/pool/main"
TIMEOUT_S = 60


def sample_data_dir() -> Path:
    """RADRETRIEVE_DATA, else `shared/data` beside the source checkout (which may not exist)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass(frozen=True)
class Sample:
    """One sample folder: what it holds, where it comes from, and the digests that prove it."""

    folder: str  # folder under the sample data dir
    what: str  # one line for `fetch-data --list`
    source: str  # the public source, as cited in docs/development.md
    licence: str  # licence of the files
    url: str  # what is downloaded
    download_sha256: str | None  # digest of the download itself (None: the archive is built on the fly)
    check: str  # file under `folder` whose presence means the sample is there


SAMPLES = (
    Sample(
        "vqa-rad",
        "315 radiology JPEGs with 2,248 clinician-written questions and answers",
        "Lau, Gayen, Ben Abacha, Demner-Fushman, Scientific Data 5, 180251 (2018); OSF project 89kps",
        "CC0 1.0",
        "https://files.osf.io/v1/resources/89kps/providers/osfstorage/?zip=",
        None,  # OSF zips its storage on request, so the zip's bytes vary; its contents are checked instead
        "vqa_rad.json",
    ),
    Sample(
        "ct-head",
        "one real non-contrast head CT, 256 x 256 x 108, int16 HU, NIfTI",
        "InVesalius example project Cranium.inv3 ('ProMED CT 0051'), Debian invesalius-examples 3.1.99998-4",
        "GPL-2",
        f"{DEBIAN}/i/invesalius/invesalius-examples_3.1.99998-4_all.deb",
        "f2f14bdfef6dc3812eafc5013d133c6c18370aaab5666b78d54af2e7db432f97",
        "head_ct.nii.gz",
    ),
    Sample(
        "mri-t1-brain",
        "the Colin27 T1 MRI template, 181 x 217 x 181, 1 mm, NIfTI",
        "Colin27 ('ch2', Holmes et al., J Comput Assist Tomogr 1998), Debian mricron-data 1.2.20211006+dfsg-4",
        "BSD-3-clause",
        f"{DEBIAN}/m/mricron/mricron-data_1.2.20211006+dfsg-4_all.deb",
        "d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f",
        "colin27_t1.nii.gz",
    ),
)
# Digests of what ends up in each folder.
VQA_JSON_SHA256 = "948b7156059b864cf72344fb10669233526b175c243e5a046d20d4201d297a95"
VQA_IMAGES_SHA256 = "eb3895dd7e4c158c2262e054aa6e10c8cb232167241a3658c27db1de645cfd2d"  # see images_digest
CT_MATRIX_SHA256 = "d87fd5e6aaf2c4fdf4f3fe28ee3335192fc2464ed8e9682fc78530cb837938da"  # Cranium.inv3 matrix.dat
COLIN_SHA256 = "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309"  # templates/ch2.nii.gz


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(data: bytes, expected: str, what: str) -> bytes:
    """`data` if its SHA-256 is `expected`, else a one-line error naming `what`."""
    got = sha256(data)
    if got != expected:
        raise RadRetrieveError(f"{what}: SHA-256 {got[:16]}... differs from the expected {expected[:16]}...")
    return data


def images_digest(images: dict[str, bytes]) -> str:
    """One digest of an image set: SHA-256 over sorted 'name NUL sha256-of-file' lines."""
    h = hashlib.sha256()
    for name in sorted(images):
        h.update(name.encode() + b"\0" + sha256(images[name]).encode() + b"\n")
    return h.hexdigest()


def deb_member(deb: bytes, path: str) -> bytes:
    """The file `path` (e.g. 'usr/share/x') inside a Debian package: an ar archive holding data.tar.*."""
    if not deb.startswith(b"!<arch>\n"):
        raise RadRetrieveError("not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(deb):
        name = deb[pos : pos + 16].decode().strip().rstrip("/")
        size = int(deb[pos + 48 : pos + 58].decode().strip())
        body = deb[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)  # members are padded to an even offset
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                member = tar.extractfile("./" + path) or tar.extractfile(path)
                if member is None:
                    raise RadRetrieveError(f"{path}: not a file in the package")
                return member.read()
    raise RadRetrieveError("Debian package without data.tar")


def ct_head_nifti(inv3: bytes) -> bytes:
    """head_ct.nii.gz from an InVesalius project: its matrix.dat unchanged (int16 HU) with the project's spacing.

    The project stores the volume as [slices, rows, cols]; the NIfTI holds it as [x, y, slices] with a
    diagonal affine of the spacing (rounded to 1 um), which does not claim the true patient orientation."""
    import nibabel as nib
    import numpy as np

    with tarfile.open(fileobj=io.BytesIO(inv3), mode="r:gz") as tar:
        files = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        meta = plistlib.loads(tar.extractfile(files["main.plist"]).read())  # type: ignore[union-attr]
        matrix = tar.extractfile(files["matrix.dat"]).read()  # type: ignore[union-attr]
    raw = verify(matrix, CT_MATRIX_SHA256, "Cranium.inv3 matrix.dat")
    shape = tuple(int(n) for n in meta["matrix"]["shape"])  # [slices, rows, cols]
    data = np.frombuffer(raw, dtype=meta["matrix"]["dtype"])[: int(np.prod(shape))].reshape(shape)
    spacing = [round(float(s), 3) for s in meta["spacing"]]
    img = nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)), np.diag([*spacing, 1.0]))
    img.header.set_data_dtype(np.int16)
    return gzip.compress(img.to_bytes(), mtime=0)  # mtime 0: the same bytes on every fetch


def vqa_rad_files(osf_zip: bytes) -> dict[str, bytes]:
    """{relative path: bytes} of the VQA-RAD folder from OSF's storage zip, both digests checked."""
    with zipfile.ZipFile(io.BytesIO(osf_zip)) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        questions = [n for n in names if Path(n).name == "VQA_RAD Dataset Public.json"]
        if not questions:
            raise RadRetrieveError("VQA-RAD zip without 'VQA_RAD Dataset Public.json'")
        images = {Path(n).name: zf.read(n) for n in names if n.lower().endswith(".jpg")}
        text = verify(zf.read(questions[0]), VQA_JSON_SHA256, "VQA-RAD questions")
    got = images_digest(images)
    if got != VQA_IMAGES_SHA256:
        raise RadRetrieveError(f"VQA-RAD images: set digest {got[:16]}... differs ({len(images)} images)")
    return {"vqa_rad.json": text} | {f"images/{name}": data for name, data in images.items()}


def _files_of(sample: Sample, download: bytes) -> dict[str, bytes]:
    if sample.folder == "vqa-rad":
        return vqa_rad_files(download)
    if sample.folder == "ct-head":
        inv3 = deb_member(download, "usr/share/doc/invesalius-examples/examples/Cranium.inv3")
        return {"head_ct.nii.gz": ct_head_nifti(inv3)}
    colin = verify(deb_member(download, "usr/share/mricron/templates/ch2.nii.gz"), COLIN_SHA256, "ch2.nii.gz")
    return {"colin27_t1.nii.gz": colin}


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # fixed https URLs from SAMPLES only
            return response.read()
    except OSError as exc:
        raise RadRetrieveError(f"could not download {url}: {exc}") from exc


def fetch_sample(sample: Sample, dest: Path, download: Callable[[str], bytes] = _download) -> Path:
    """Download, verify and write one sample folder under `dest` (atomically: all files or none)."""
    folder = Path(dest) / sample.folder
    if (folder / sample.check).is_file():
        log.info("%s: already there", folder)
        return folder
    log.info("%s: downloading %s", sample.folder, sample.url)
    data = download(sample.url)
    if sample.download_sha256 is not None:
        verify(data, sample.download_sha256, sample.url)
    files = _files_of(sample, data)
    with atomic_dir(folder) as tmp:
        for rel, body in files.items():
            atomic_write_bytes(tmp / rel, body)
        (tmp / "SOURCE.txt").write_text(f"{sample.what}\nsource: {sample.source}\nlicence: {sample.licence}\n")
    return folder


def fetch_samples(dest: Path, only: tuple[str, ...] = (), download: Callable[[str], bytes] = _download) -> list[Path]:
    """Fetch every sample (or those in `only`) into `dest`; returns the folders."""
    known = {s.folder: s for s in SAMPLES}
    unknown = sorted(set(only) - set(known))
    if unknown:
        raise RadRetrieveError(f"unknown sample {', '.join(unknown)} (choose from {', '.join(known)})")
    Path(dest).mkdir(parents=True, exist_ok=True)
    return [fetch_sample(s, Path(dest), download) for s in SAMPLES if not only or s.folder in only]
