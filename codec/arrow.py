"""Batches of frames as Arrow record batches: one row per sample (id, shape, frame bytes).

A RecordBatch crosses Ray's object store as Arrow buffers (zero-copy on read), not as pickled tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from .errors import CodecError

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("shape", pa.list_(pa.int64()), nullable=False),
        pa.field("frame", pa.large_binary(), nullable=False),
    ],
    metadata={b"splitstream": b"frames/v1"},
)


def frames_to_batch(
    ids: Sequence[int], frames: Sequence[bytes], shapes: Sequence[Sequence[int]] | None = None
) -> pa.RecordBatch:
    """Wrap frames (and their sample ids / tensor shapes) in one RecordBatch."""
    if len(ids) != len(frames) or (shapes is not None and len(shapes) != len(frames)):
        raise CodecError("ids, frames and shapes must have the same length")
    if shapes is None:
        shapes = [[] for _ in frames]
    return pa.RecordBatch.from_arrays(
        [
            pa.array(ids, type=pa.int64()),
            pa.array([list(s) for s in shapes], type=pa.list_(pa.int64())),
            pa.array(frames, type=pa.large_binary()),
        ],
        schema=SCHEMA,
    )


def batch_to_frames(batch: pa.RecordBatch) -> tuple[list[int], list[memoryview]]:
    """Sample ids and frame buffers (zero-copy views into the batch) of a RecordBatch."""
    if batch.schema.names[:3] != ["id", "shape", "frame"]:
        raise CodecError(f"not a frame batch: columns {batch.schema.names}")
    ids = batch.column(0).to_pylist()
    col = batch.column(2)
    frames = [memoryview(col[i].as_buffer()) for i in range(len(col))]
    return ids, frames


def payload_bytes(batch: pa.RecordBatch) -> int:
    """Bytes of frame payload in a batch (what a link is charged for)."""
    import pyarrow.compute as pc

    col = batch.column(2)
    return int(pc.sum(pc.binary_length(col)).as_py() or 0) if len(col) else 0
