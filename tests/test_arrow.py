"""Frames travel as Arrow record batches: ids, shapes and bytes survive, without copies on read."""

import numpy as np
import pyarrow as pa
import pytest

import codec
from codec import arrow


def test_batch_roundtrip():
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(3, 4 + i)).astype(np.float32) for i in range(5)]
    frames = [codec.encode(x) for x in xs]
    batch = arrow.frames_to_batch(list(range(10, 15)), frames, [x.shape for x in xs])
    assert batch.num_rows == 5 and batch.schema.equals(arrow.SCHEMA)
    # through Arrow IPC, as the object store would carry it
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    back = next(iter(pa.ipc.open_stream(sink.getvalue())))
    ids, views = arrow.batch_to_frames(back)
    assert ids == list(range(10, 15))
    for x, v in zip(xs, views, strict=True):
        assert codec.decode(v).shape == x.shape
    assert arrow.payload_bytes(batch) == sum(len(f) for f in frames)
    assert back.column(1).to_pylist()[2] == [3, 6]


def test_mismatched_lengths_and_foreign_batches():
    with pytest.raises(codec.CodecError):
        arrow.frames_to_batch([1, 2], [b"x"])
    other = pa.RecordBatch.from_pydict({"a": [1]})
    with pytest.raises(codec.CodecError):
        arrow.batch_to_frames(other)
    empty = arrow.frames_to_batch([], [])
    assert arrow.payload_bytes(empty) == 0
