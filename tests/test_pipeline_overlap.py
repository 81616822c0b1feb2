"""The local engine's overlap machinery: parallel header scan, decode window, encoder thread."""

from __future__ import annotations

import functools
import threading
import time

import nibabel as nib
import numpy as np
import torch

from pipelines.local import SliceWindow, start_readers
from pipelines.plan import WorkItem
from pipelines.scan import pool_map
from pipelines.stages import Decoded, EncodeBatcher
from radretrieve.archive import scan
from radretrieve.synth import synthesize


def test_scan_in_reader_processes_equals_scan_in_process(tmp_path):
    root = tmp_path / "a"
    synthesize(root, studies=4, seed=3)
    (root / "s3-00000" / "junk.dcm").write_bytes(b"\x00" * 300)  # corrupt DICOM
    (root / "s3-00001" / "empty.png").write_bytes(b"")  # empty image
    (root / "s3-00002" / "README").write_text("not DICOM")  # ignored, not an error
    four_d = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 4, 2), dtype=np.float32), np.eye(4))
    nib.save(four_d, root / "s3-00003" / "fmri.nii.gz")  # scanned with a FirstVolume note
    pool = start_readers(2)
    try:
        parallel = scan(root, map_fn=pool_map(pool))
    finally:
        pool.close()
    sequential = scan(root)
    assert parallel == sequential
    assert {e.error_type for e in sequential.errors} == {"CorruptFile", "EmptyFile"}
    assert [n.error_type for n in sequential.notes] == ["FirstVolume"]


def test_window_counts_volumes_at_their_depth_and_always_allows_a_few_items():
    w = SliceWindow(slices=64, items=4, depth=32)
    vol, img = _work("volume"), _work("image")
    assert (w.cost(vol), w.cost(img)) == (32, 1)
    assert not w.full(3, 96)  # fewer than `items` in flight: never full
    assert not w.full(10, 63)
    assert w.full(4, 64)


class _SlowModel:
    """Stands in for RadCLIP.encode_mixed: sums each item's pixels, slowly, and records overlap."""

    def __init__(self) -> None:
        self.running, self.most, self.threads = 0, 0, set()
        self.lock = threading.Lock()

    def encode_mixed(self, arrays, is_volume):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.get_ident())
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return torch.stack([a.sum().reshape(1) for a in arrays])


def test_encoder_thread_keeps_order_and_one_batch_in_flight():
    model = _SlowModel()
    batcher = EncodeBatcher(model, batch_slices=5)
    items = [_decoded(i, slices=1 + i % 3) for i in range(40)]
    rows = []
    for item in items:
        rows += batcher.add(item)
        assert len(batcher._running) <= 1  # back-pressure
    rows += batcher.flush()
    batcher.close()
    assert [r.work.item_id for r in rows] == list(range(40))  # every item once, in order
    assert all(r.embedding[0] == items[r.work.item_id].pixels.sum() for r in rows)
    assert model.most == 1 and threading.get_ident() not in model.threads  # off the caller's thread
    assert batcher.slices == sum(d.pixels.shape[0] for d in items)


def _work(kind: str, item_id: int = 0) -> WorkItem:
    item = type("Item", (), {"kind": kind})()
    return WorkItem(item_id, None, item)


@functools.cache
def _pixels(slices: int) -> np.ndarray:
    return np.ones((slices, 1, 1, 1), np.float32)


def _decoded(i: int, slices: int) -> Decoded:
    return Decoded(_work("volume", i), _pixels(slices) * i)
