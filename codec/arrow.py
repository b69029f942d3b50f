"""Batches of frames as Arrow record batches: one row per sample, one frame per group of rows.

A frame may hold one sample or several (a batch frame, whose tensor's first axis runs over its
samples). Its bytes sit in the ``frame`` column of the first row of its group, ``frame_samples`` says
how many rows the group spans, and the other rows of the group hold null there. Per-sample columns (the
``id`` here, labels and timestamps added by a stream) stay one value per sample. A RecordBatch crosses
Ray's object store as Arrow buffers (zero-copy on read), not as pickled tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import CodecError

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("frame", pa.large_binary(), nullable=True),
        pa.field("frame_samples", pa.int32(), nullable=False),
    ],
    metadata={b"splitstream": b"frames/v2"},
)


@dataclass(frozen=True)
class FrameGroup:
    """One frame of a batch: the rows ``row .. row+samples-1`` it holds, and its bytes (a view)."""

    row: int
    samples: int
    frame: memoryview


def frames_to_batch(
    ids: Sequence[int], frames: Sequence[bytes], samples: Sequence[int] | None = None
) -> pa.RecordBatch:
    """Wrap frames in one RecordBatch; ``samples[i]`` is how many consecutive ids frame ``i`` holds
    (1 each by default)."""
    samples = [1] * len(frames) if samples is None else list(samples)
    if len(samples) != len(frames) or sum(samples) != len(ids) or any(k < 1 for k in samples):
        raise CodecError("frames must tile the ids: one group of >= 1 samples per frame")
    column: list[bytes | None] = []
    counts: list[int] = []
    for frame, k in zip(frames, samples, strict=True):
        column += [frame] + [None] * (k - 1)
        counts += [k] + [0] * (k - 1)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(ids, type=pa.int64()),
            pa.array(column, type=pa.large_binary()),
            pa.array(counts, type=pa.int32()),
        ],
        schema=SCHEMA,
    )


def batch_to_frames(batch: pa.RecordBatch) -> tuple[np.ndarray, list[FrameGroup]]:
    """Sample ids and frame groups (zero-copy views into the batch) of a RecordBatch.

    Raises CodecError when the columns are missing or the groups do not tile the rows."""
    names = batch.schema.names
    if names[:3] != ["id", "frame", "frame_samples"]:
        raise CodecError(f"not a frame batch: columns {names}")
    ids = batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    counts = batch.column(2).to_numpy(zero_copy_only=False)
    col = batch.column(1)
    groups: list[FrameGroup] = []
    row, n = 0, batch.num_rows
    while row < n:
        k = int(counts[row])
        if k < 1 or row + k > n or not col[row].is_valid:
            raise CodecError(f"frame batch: row {row} does not start a group of frames")
        if k > 1 and (counts[row + 1 : row + k].any() or col.slice(row + 1, k - 1).null_count != k - 1):
            raise CodecError(f"frame batch: the group at row {row} overlaps the next one")
        groups.append(FrameGroup(row, k, memoryview(col[row].as_buffer())))
        row += k
    return ids, groups


def payload_bytes(batch: pa.RecordBatch) -> int:
    """Bytes of frame payload in a batch (what a link is charged for)."""
    import pyarrow.compute as pc

    col = batch.column(1)
    return int(pc.sum(pc.binary_length(col)).as_py() or 0) if len(col) else 0
