"""Concurrent text queries share one encoder call.

Request threads hand their text to `TextBatcher.encode` and wait; one encoder thread takes whatever has
queued up (at most `max_batch` texts) and encodes it in one call. Nothing waits on a timer: a lone query
is encoded at once, and queries that arrive while the encoder is busy form the next batch, so batches grow
exactly when the encoder is the bottleneck. Only the encoder thread runs the model, so the text tower is
never used from two threads at once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

EncodeFn = Callable[[Sequence[str]], np.ndarray]  # texts -> float32[N, D]


@dataclass
class BatchStats:
    """Counters for /api/health and the load benchmark (updated by the encoder thread only)."""

    texts: int = 0  # texts encoded
    calls: int = 0  # encoder calls made
    largest: int = 0  # most texts in one call


class TextBatcher:
    """Thread-safe front of an encoder: `encode(text)` from any thread, one encoder call per batch."""

    def __init__(self, encode: EncodeFn, max_batch: int = 64) -> None:
        self._encode = encode
        self.max_batch = max(1, int(max_batch))
        self._queue: queue.SimpleQueue[tuple[str, Future] | None] = queue.SimpleQueue()
        self.stats = BatchStats()
        self._thread = threading.Thread(target=self._loop, name="text-encoder", daemon=True)
        self._thread.start()

    def encode(self, text: str) -> np.ndarray:
        """One text -> float32[D]; raises what the encoder raised."""
        fut: Future = Future()
        self._queue.put((text, fut))
        return fut.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = [first], False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[tuple[str, Future]]) -> None:
        texts = list(dict.fromkeys(text for text, _ in batch))  # the same text asked twice is encoded once
        try:
            vectors = self._encode(texts)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the encoder's error
            for _, fut in batch:
                fut.set_exception(exc)
            return
        row = {text: i for i, text in enumerate(texts)}
        for text, fut in batch:
            fut.set_result(vectors[row[text]])
        self.stats.texts += len(texts)
        self.stats.calls += 1
        self.stats.largest = max(self.stats.largest, len(texts))
