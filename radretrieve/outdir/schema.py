"""The Arrow schemas of an out dir's Parquet files, and the check that a file's footer matches one.

A shard or predictions file can pass its size and SHA-256 checks and still be the wrong file for this out dir
(written by another version or by hand, with a column missing or embeddings of another dimension). duckdb
would then fail deep inside a query with a message naming neither the file nor the fix; `schema_problem`
says which column is wrong in one line, from the footer alone (no row is read).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping

import pyarrow as pa

OPTIONAL_SHARD_FIELDS = frozenset({"burned_in"})  # shards written before these columns existed lack them


def shard_schema(dim: int, metadata: Mapping[str, str] | None = None, float16: bool = False) -> pa.Schema:
    """The shard schema for embeddings of dimension `dim` (float32 unless `float16`)."""
    value = pa.float16() if float16 else pa.float32()
    fields = [
        pa.field("item_id", pa.int64(), nullable=False),  # stable id (radretrieve.foundation.ids.item_id); FAISS id
        pa.field("kind", pa.string(), nullable=False),  # image | volume | report
        pa.field("study_key", pa.string()),  # StudyInstanceUID or manifest `study` or folder key
        pa.field("series_key", pa.string()),  # SeriesInstanceUID or source key
        pa.field("source", pa.string()),  # path relative to the archive root (';'-joined for multi-file)
        pa.field("modality", pa.string()),  # CT, MR, CR, DX, ... ("" if unknown)
        pa.field("body_part", pa.string()),  # BodyPartExamined or label ("" if unknown)
        pa.field("description", pa.string()),  # series/study description (allow-listed, non-identifying)
        pa.field("slice_count", pa.int32()),  # slices encoded (1 for 2D images, 0 for reports)
        pa.field("shape", pa.list_(pa.int32())),  # source voxel/pixel array shape
        pa.field("spacing", pa.list_(pa.float32())),  # voxel spacing in mm, same order as shape
        pa.field("text", pa.string()),  # report text paired with the item (reports: the report itself)
        pa.field("labels", pa.string()),  # JSON object of string labels from the manifest / synth ground truth
        pa.field("burned_in", pa.bool_()),  # the image may carry burned-in text (patient data): never thumbnailed
        pa.field("embedding", pa.list_(value, dim)),  # L2-normalised embedding
    ]
    meta = {k.encode(): v.encode() for k, v in (metadata or {}).items()}
    return pa.schema(fields, metadata=meta)


def schema_problem(
    actual: pa.Schema,
    expected: pa.Schema,
    optional: Collection[str] = (),
    alternatives: Mapping[str, Collection[pa.DataType]] | None = None,
) -> str | None:
    """Why a file with schema `actual` is not a file of schema `expected`, or None.

    Every field of `expected` must be present (those in `optional` may be absent) with the same type, or one
    of `alternatives[name]`; extra fields are allowed. The first problem found, in one line."""
    for want in expected:
        index = actual.get_field_index(want.name)
        if index < 0:
            if want.name in optional:
                continue
            return f"column {want.name!r} is missing"
        got = actual.field(index).type
        allowed = [want.type, *(alternatives or {}).get(want.name, ())]
        if not any(got.equals(t) for t in allowed):
            return f"column {want.name!r} is {got}, expected {want.type}"
    return None


@functools.lru_cache(maxsize=8)
def _expected_shard(dim: int) -> tuple[pa.Schema, pa.Schema, dict[str, list[pa.DataType]]]:
    return shard_schema(dim), shard_schema(dim, float16=True), {"embedding": [pa.list_(pa.float16(), dim)]}


def shard_schema_problem(actual: pa.Schema, dim: int) -> str | None:
    """`schema_problem` for a shard of an out dir whose embeddings have `dim` dimensions (float16 or float32)."""
    expected, expected16, f16 = _expected_shard(dim)
    if actual.equals(expected, check_metadata=False) or actual.equals(expected16, check_metadata=False):
        return None  # what `index` writes: one comparison in C++ (every catalog open checks every shard)
    index = actual.get_field_index("embedding")
    if index >= 0:
        got = actual.field(index).type
        if pa.types.is_fixed_size_list(got) and got.list_size != dim:
            return f"embeddings have {got.list_size} dimensions, the out dir's have {dim}"
    return schema_problem(actual, expected, OPTIONAL_SHARD_FIELDS, f16)
