"""Every name under an out dir, in one place (docs/reference/formats.md).

OUT/manifest.json              finished shards; readers trust only this file (radretrieve.outdir.manifest)
OUT/shards/part-<task>.parquet one per task, written atomically (radretrieve.outdir.shards)
OUT/errors/<task>.jsonl        failed inputs of that task; errors/scan.jsonl for the scan
OUT/archive.json               where the archive root is, for thumbnails (radretrieve.outdir.archive_root)
OUT/text_tower.safetensors     the model's text tower, for a fast text-search start (radretrieve.outdir.text_tower)
OUT/model/                     a copy of a locally trained model directory (radretrieve.outdir.model_ref)
OUT/index/                     FAISS indexes, index.json, re-rank stores (the `indexers` package)
OUT/job.json                   the summary of the last indexing job, for `radretrieve info`
OUT/predictions.parquet        zero-shot predictions of `radretrieve classify` (radretrieve.outdir.predictions)
OUT/predictions.json           the size and SHA-256 of predictions.parquet as committed
OUT/anonymise.key              the key of the path and study-key hashes (private: radretrieve.outdir.anonymise)
OUT/sources/                   anonymised paths (the default): the map to real paths and the real archive root
                               (sources/root.json); private, never shown
OUT/receive/                   `radretrieve listen`: received instances not yet indexed (private, mode 0700;
                               removed once their rows are in a committed shard: pipelines.receive.spool)
OUT/listen.json                `radretrieve listen`: the listener's totals (counts only), for `radretrieve info`
OUT/errors/received.jsonl      `radretrieve listen`: scan-level failures and skipped series of every batch
OUT/.lock                      the writer lock (radretrieve.foundation.lock)
"""

from __future__ import annotations

MANIFEST = "manifest.json"
SHARD_DIR = "shards"
ERROR_DIR = "errors"
SCAN_ERRORS = "scan.jsonl"  # under ERROR_DIR: scan-level failures, rewritten on every run
ARCHIVE_FILE = "archive.json"
TEXT_TOWER_FILE = "text_tower.safetensors"
MODEL_DIR = "model"
INDEX_DIR = "index"
INDEX_JSON = "index.json"  # under INDEX_DIR
JOB_FILE = "job.json"  # the summary of the last indexing job (engine, nodes, encoders, counts), for `info`
ANON_KEY_FILE = "anonymise.key"  # the key of the path and study-key hashes (radretrieve.outdir.anonymise)
SOURCE_MAP_DIR = "sources"  # anonymised paths: item id -> real source, one file per task
PRIVATE_ROOT_FILE = "root.json"  # under SOURCE_MAP_DIR: the real archive root of an anonymised out dir
PREDICTIONS_FILE = "predictions.parquet"  # zero-shot predictions (radretrieve classify --index)
PREDICTIONS_RECORD = "predictions.json"  # size and SHA-256 of the predictions file as committed
RECEIVE_DIR = "receive"  # `listen`: the spool of received instances (private; never in OWNED: --overwrite keeps it)
LISTEN_FILE = "listen.json"  # `listen`: the listener's totals, for `radretrieve info`
RECEIVED_ERRORS = "received.jsonl"  # under ERROR_DIR: `listen`'s scan-level records of every batch, kept
# Names a command may create or replace in an out dir; anything else found there is left alone.
OWNED = (
    MANIFEST,
    SHARD_DIR,
    ERROR_DIR,
    ARCHIVE_FILE,
    TEXT_TOWER_FILE,
    MODEL_DIR,
    INDEX_DIR,
    JOB_FILE,
    ANON_KEY_FILE,
    SOURCE_MAP_DIR,
    PREDICTIONS_FILE,  # made by one model: a rebuild with another (--overwrite) drops them
    PREDICTIONS_RECORD,
)
