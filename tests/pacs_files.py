"""What the PACS tests (tests/test_dicomweb.py, test_dimse.py, test_listen.py) share: the archive a PACS serves or
pushes, as a folder (its folder index is their reference, built once per session in tests/conftest.py), the rows
of an out dir, their comparison, and the Orthanc check."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

CT1_SLICES = 40  # more than radclip-tiny's 32: a sampled read fetches 32 of them
INSTANCES = CT1_SLICES + 6 + 2  # two CT series, pydicom's CT and RLE MR


def write_ct_archive(root: Path) -> Path:
    """Two CT series, pydicom's CT and RLE MR (compressed: served and pushed as stored, decoded like a folder's
    file)."""
    from pydicom.data import get_testdata_file

    from radretrieve.testing.dicom import write_ct_series

    write_ct_series(root / "ct1", CT1_SLICES, seed=1, attrs={"SeriesDescription": "CT series 1"})
    write_ct_series(root / "ct2", 6, seed=2, attrs={"SeriesDescription": "CT series 2"})
    for name in ("CT_small.dcm", "MR_small_RLE.dcm"):
        shutil.copy(get_testdata_file(name), root / name)
    return root


def needs_orthanc() -> None:
    """Skip with one line without Orthanc; fail instead where RADRETRIEVE_REQUIRE_ORTHANC=1 (CI)."""
    from radretrieve.testing.orthanc import orthanc_missing

    missing = orthanc_missing()
    if missing:
        if os.environ.get("RADRETRIEVE_REQUIRE_ORTHANC") == "1":
            pytest.fail(missing)
        pytest.skip(missing)


def folder_rows(archive: Path, model, out: Path) -> pa.Table:
    """The rows of the folder index of `archive` (the local engine, in this process)."""
    from pipelines.job import IndexOptions, index_archive

    index_archive(archive, out, model, IndexOptions(workers=0, progress=False))
    return rows(out)


def rows(out: Path) -> pa.Table:
    tables = [pq.read_table(p) for p in sorted((out / "shards").glob("*.parquet"))]
    return pa.concat_tables(tables).sort_by("item_id") if tables else pa.table({"item_id": pa.array([], pa.int64())})


def same_rows(a: pa.Table, b: pa.Table) -> None:
    assert a.column("item_id").to_pylist() == b.column("item_id").to_pylist()
    assert a.column("kind").to_pylist() == b.column("kind").to_pylist()
    for col in ("series_key", "study_key", "modality", "description", "shape", "spacing", "slice_count"):
        assert a.column(col).to_pylist() == b.column(col).to_pylist(), col
    ea, eb = (np.array(t.column("embedding").to_pylist(), np.float32) for t in (a, b))
    np.testing.assert_allclose(ea, eb, rtol=0, atol=1e-6)  # float32 rounding of other batch compositions
