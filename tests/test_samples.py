"""`radretrieve fetch-data`: each sample rebuilt offline from packages made of the real files (as the public
sources ship them), checked by digest, written atomically; a wrong digest is one error line and writes nothing."""

from __future__ import annotations

import gzip
import io
import plistlib
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from radretrieve.datasets import samples
from radretrieve.foundation.errors import RadRetrieveError
from tests.samples import needs, sample


def _tar(members: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _deb(files: dict[str, bytes]) -> bytes:
    """A Debian package (ar archive: debian-binary, control.tar.xz, data.tar.xz) holding `files`."""
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", _tar({"./control": b"Package: x\n"}, "w:xz")),
        ("data.tar.xz", _tar({f"./{k}": v for k, v in files.items()}, "w:xz")),
    ]
    out = b"!<arch>\n"
    for name, body in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode()
        out += header + body + (b"\n" if len(body) % 2 else b"")
    return out


def _fake_download(payload: bytes):
    return lambda url: payload


@needs("mri-t1-brain", "colin27_t1.nii.gz")
def test_colin27_from_its_debian_package(tmp_path, monkeypatch):
    ch2 = sample("mri-t1-brain", "colin27_t1.nii.gz").read_bytes()
    deb = _deb({"usr/share/mricron/templates/ch2.nii.gz": ch2})
    spec = next(s for s in samples.SAMPLES if s.folder == "mri-t1-brain")
    monkeypatch.setattr(
        samples, "SAMPLES", (spec.__class__(**(spec.__dict__ | {"download_sha256": samples.sha256(deb)})),)
    )
    (folder,) = samples.fetch_samples(tmp_path, download=_fake_download(deb))
    assert (folder / "colin27_t1.nii.gz").read_bytes() == ch2
    assert "BSD-3-clause" in (folder / "SOURCE.txt").read_text()


@needs("ct-head", "head_ct.nii.gz")
def test_head_ct_from_the_invesalius_project(tmp_path):
    ref = nib.load(sample("ct-head", "head_ct.nii.gz"))
    data = np.asanyarray(ref.dataobj)
    matrix = np.ascontiguousarray(data.transpose(2, 1, 0)).tobytes()  # the project stores [slices, rows, cols]
    plist = {"matrix": {"dtype": "int16", "shape": [108, 256, 256]}, "spacing": [0.9570312, 0.9570312, 1.5]}
    inv3 = _tar({"tmpx/main.plist": plistlib.dumps(plist), "tmpx/matrix.dat": matrix}, "w:gz")
    got = nib.Nifti1Image.from_bytes(gzip.decompress(samples.ct_head_nifti(inv3)))
    assert np.array_equal(np.asanyarray(got.dataobj), data) and got.get_data_dtype() == np.int16
    np.testing.assert_allclose(got.affine, ref.affine, atol=1e-6)


@needs("vqa-rad", "vqa_rad.json")
def test_vqa_rad_from_the_osf_zip(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("VQA_RAD Dataset Public.json", sample("vqa-rad", "vqa_rad.json").read_bytes())
        for img in sorted(sample("vqa-rad", "images").iterdir()):
            zf.writestr(f"VQA_RAD Image Folder/{img.name}", img.read_bytes())
    (folder,) = samples.fetch_samples(tmp_path, only=("vqa-rad",), download=_fake_download(buf.getvalue()))
    assert len(list((folder / "images").iterdir())) == 315
    assert (folder / "vqa_rad.json").read_bytes() == sample("vqa-rad", "vqa_rad.json").read_bytes()


def test_a_wrong_digest_is_one_line_and_writes_nothing(tmp_path):
    deb = _deb({"usr/share/mricron/templates/ch2.nii.gz": b"not the template"})
    with pytest.raises(RadRetrieveError) as info:
        samples.fetch_samples(tmp_path, only=("mri-t1-brain",), download=_fake_download(deb))
    assert "SHA-256" in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_sample_data_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RADRETRIEVE_DATA", str(tmp_path))
    assert samples.sample_data_dir() == tmp_path
    monkeypatch.delenv("RADRETRIEVE_DATA")
    assert samples.sample_data_dir() == Path(samples.__file__).resolve().parents[3] / "shared" / "data"
