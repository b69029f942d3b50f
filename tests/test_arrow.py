"""Frames travel as Arrow record batches: one row per sample, one frame per group of rows; ids and
bytes survive, without copies on read, and a malformed layout is a CodecError."""

import numpy as np
import pyarrow as pa
import pytest

import codec
from codec import arrow


def _ipc(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Through Arrow IPC, as the object store would carry it."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return next(iter(pa.ipc.open_stream(sink.getvalue())))


def test_one_frame_per_sample_roundtrip():
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(3, 4 + i)).astype(np.float32) for i in range(5)]
    frames = [codec.encode(x) for x in xs]
    batch = arrow.frames_to_batch(list(range(10, 15)), frames)
    assert batch.num_rows == 5 and batch.schema.equals(arrow.SCHEMA)
    ids, groups = arrow.batch_to_frames(_ipc(batch))
    assert ids.tolist() == list(range(10, 15))
    assert [(g.row, g.samples) for g in groups] == [(i, 1) for i in range(5)]
    for x, g in zip(xs, groups, strict=True):
        assert codec.decode(g.frame).shape == x.shape
    assert arrow.payload_bytes(batch) == sum(len(f) for f in frames)


def test_batch_frames_span_their_samples_rows():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 2, 4)).astype(np.float32), rng.normal(size=(2, 2, 4))
    frames = [codec.encode(a), codec.encode(b.astype(np.float32))]
    batch = arrow.frames_to_batch([5, 6, 7, 8, 9], frames, [3, 2])
    assert batch.column(1).null_count == 3
    ids, groups = arrow.batch_to_frames(_ipc(batch))
    assert ids.tolist() == [5, 6, 7, 8, 9]
    assert [(g.row, g.samples) for g in groups] == [(0, 3), (3, 2)]
    assert codec.decode(groups[0].frame).shape == (3, 2, 4)


def test_mismatched_lengths_and_foreign_batches():
    with pytest.raises(codec.CodecError):
        arrow.frames_to_batch([1, 2], [b"x"])
    with pytest.raises(codec.CodecError):
        arrow.frames_to_batch([1, 2, 3], [b"x", b"y"], [2, 2])
    other = pa.RecordBatch.from_pydict({"a": [1]})
    with pytest.raises(codec.CodecError):
        arrow.batch_to_frames(other)
    empty = arrow.frames_to_batch([], [])
    assert arrow.payload_bytes(empty) == 0 and arrow.batch_to_frames(empty)[1] == []


@pytest.mark.parametrize(
    ("frames", "counts"),
    [
        ([b"x", None, b"y"], [3, 0, 1]),  # a group runs past the end
        ([None, b"x"], [0, 1]),  # the first row starts no group
        ([b"x", b"y"], [2, 0]),  # a group's follower holds a frame
        ([b"x", None], [1, 1]),  # a group starts on a row without a frame
    ],
)
def test_forged_groups_are_codec_errors(frames, counts):
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(range(len(frames)), type=pa.int64()),
            pa.array(frames, type=pa.large_binary()),
            pa.array(counts, type=pa.int32()),
        ],
        schema=arrow.SCHEMA,
    )
    with pytest.raises(codec.CodecError):
        arrow.batch_to_frames(batch)
