"""Golden values: item ids and the radclip-tiny fingerprint are part of the on-disk contract.

Out dirs built by one version must be searchable and extendable by the next, so these literals may only
change together with a format version bump (and a migration note in docs/reference/formats.md).
"""

from __future__ import annotations

import numpy as np

from radretrieve.archive import scan
from radretrieve.foundation.ids import item_id
from radretrieve.testing.dicom import write_ct_slice

SERIES_UID = "1.2.826.0.1.3680043.8.498.12345678901234567890"
STUDY_UID = "1.2.826.0.1.3680043.8.498.98765432109876543210"


def test_item_id_of_a_series_uid_and_a_relative_path():
    assert item_id(f"dicom-series:{SERIES_UID}") == 7301201917115619795
    assert item_id("file:study-1/ct.nii.gz") == 8359839479120984986
    assert item_id("report:s0-00003") == 804268832531578641


def test_the_scanner_keys_items_as_documented(tmp_path):
    for k in range(3):
        write_ct_slice(tmp_path / "any" / "name" / f"x{k}.dcm", np.full((8, 8), 1000), float(k), SERIES_UID, STUDY_UID)
    (tmp_path / "study-1").mkdir()
    import nibabel as nib

    nib.save(
        nib.Nifti1Image(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), np.eye(4)),
        tmp_path / "study-1" / "ct.nii.gz",
    )
    ids = {it.source: it.item_id for it in scan(tmp_path).items}
    assert ids == {"any/name": 7301201917115619795, "study-1/ct.nii.gz": 8359839479120984986}


def test_radclip_tiny_fingerprint(tiny_model):
    assert tiny_model.fingerprint == "21d191d0b72f15e46719f7bcb35788ee"
