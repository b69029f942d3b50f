"""Stage actors: the plain classes directly (fast), then a hop through Ray with Arrow batches."""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
import ray.cloudpickle
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from actors import Decoder, Encoder, HeadModel, Sink, Source, TailModel, Transport
from pipeline.stream.data import SourceSpec
from pipeline.stream.link import resolve_link

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def tiny_factory():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)
    )


SPEC = SourceSpec("synthetic", (3, 8, 8), seed=1)


def _feat_batch(n: int = 6, kind_seed: int = 0) -> dict:
    rng = np.random.default_rng(kind_seed)
    feat = np.maximum(rng.standard_normal((n, 4, 8, 8)).astype(np.float32), 0)
    return {
        "ids": np.arange(n, dtype=np.int64),
        "feat": feat,
        "labels": None,
        "t_src": np.full(n, time.time()),
    }


def test_source_batches_grow_and_cover_all_ids_once():
    src = Source(SPEC, samples=30, max_batch_size=8, max_wait_ms=5)
    seen, sizes, start, t0 = [], [], 0, None
    while True:
        meta, batch = src.next_batch(start, t0)
        if batch is None:
            break
        assert batch["x"].shape == (meta["n"], 3, 8, 8) and meta["start"] == start
        seen.extend(batch["ids"].tolist())
        sizes.append(meta["n"])
        start, t0 = start + meta["n"], meta["t0"]
        if meta["done"]:
            break
    assert seen == list(range(30))
    assert sizes[:4] == [1, 2, 4, 8] and max(sizes) == 8
    meta, batch = src.next_batch(30, t0)
    assert batch is None and meta["done"] and meta["n"] == 0


def test_source_rebuilds_a_batch_with_its_original_inputs_and_stamps():
    src = Source(SPEC, samples=30, max_batch_size=8, max_wait_ms=5, adaptive=False)
    meta, batch = src.next_batch(8, None)
    again_meta, again = Source(SPEC, 30, 8, 5).rebuild(8, meta["n"], meta["t0"], meta["t_created"])
    assert again["ids"].tolist() == batch["ids"].tolist()
    assert np.array_equal(again["x"], batch["x"]) and np.array_equal(again["t_src"], batch["t_src"])


def test_paced_source_lingers_at_most_max_wait():
    src = Source(
        SPEC, samples=10, max_batch_size=64, max_wait_ms=30, rate_sps=200.0, adaptive=False
    )
    t0 = time.time()
    meta, batch = src.next_batch(0, None)
    took = time.time() - t0
    # 64 samples would need 0.32 s at 200/s: the 30 ms linger flushes a partial batch first
    assert 1 <= meta["n"] < 10 and took < 0.2
    assert np.all(np.diff(batch["t_src"]) > 0)  # arrival stamps follow the pace


@pytest.mark.parametrize("kind", ["ours", "fp32", "fp16", "zstd", "int8-zstd"])
def test_encoder_decoder_roundtrip_over_arrow(kind):
    batch = _feat_batch()
    enc, dec = Encoder(kind=kind), Decoder((4, 8, 8))
    meta, rb = enc.process(batch)
    assert isinstance(rb, pa.RecordBatch) and rb.num_rows == 6
    assert meta["n"] == 6 and meta["bytes_in"] == batch["feat"].nbytes and meta["rss"] > 0
    dmeta, out = dec.process(rb)
    assert out["ids"].tolist() == list(range(6)) and out["labels"] is None
    assert dmeta["rejected_ids"] == [] and dmeta["wire_bytes"] == meta["wire_bytes"]
    err = np.abs(out["feat"] - batch["feat"]).max()
    step = (batch["feat"].max() - min(batch["feat"].min(), 0)) / 255  # one 8-bit step of the batch
    tol = {
        "fp32": 0.0,
        "fp16": 2e-3,
        "zstd": 0.0,
        "ours": step + 1e-6,
        "int8-zstd": step / 2 + 1e-6,
    }
    assert err <= tol[kind]


@pytest.mark.parametrize(
    "x",
    [
        np.linspace(-3.0, 5.0, 1000, dtype=np.float32).reshape(10, 100),  # both signs
        np.linspace(0.5, 2.0, 64, dtype=np.float32),  # all positive: the range widens to 0
        -np.linspace(0.5, 2.0, 64, dtype=np.float32).reshape(2, 4, 8),  # all negative
        np.full((3, 5), 7.25, np.float32),  # constant
        np.zeros((4, 0), np.float32),  # empty
        np.array([1e-44, 3e-45, 0.0], np.float32),  # a range of subnormals
        np.array([3.4e38, -3.4e38, 1.0], np.float32),  # a range near float32's limits
    ],
)
def test_int8_zstd_round_trip_is_within_half_a_step(x):
    from pipeline.stream.wire import affine_uint8, decode_tensor, encode_tensor

    _, scale, zero = affine_uint8(x)
    lo, hi = min(float(x.min(initial=0.0)), 0.0), max(float(x.max(initial=0.0)), 0.0)
    assert 0 <= zero <= 255 and (hi == lo or np.isclose(scale, (hi - lo) / 255, rtol=1e-6))
    blob = encode_tensor(x, "int8-zstd")
    y = decode_tensor(blob, max_elements=x.size)
    assert y.dtype == np.float32 and y.shape == x.shape
    if x.size:
        err = np.abs(y.astype(np.float64) - x).max()
        assert err <= scale / 2 * (1 + 1e-5) + 1e-6 * float(np.abs(x).max())
    if np.abs(x).max(initial=0.0) > 6e4:
        return  # not a float16 tensor
    # a torch fp16 tensor comes back as fp16; the level is zstd's and changes only the bytes
    import torch

    h = decode_tensor(encode_tensor(torch.from_numpy(x).half(), "int8-zstd", zstd_level=19))
    assert h.dtype == np.float16 and h.shape == x.shape


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=9),
        elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
    )
)
def test_int8_zstd_round_trip_of_any_finite_tensor(x):
    from pipeline.stream.wire import affine_uint8, decode_tensor, encode_tensor

    _, scale, _ = affine_uint8(x)
    y = decode_tensor(encode_tensor(x, "int8-zstd"))
    err = np.abs(y.astype(np.float64) - x.astype(np.float64)).max()
    assert err <= scale / 2 * (1 + 1e-5) + 1e-6 * float(np.abs(x).max())


def test_int8_zstd_is_smaller_than_zstd_of_fp32():
    from pipeline.stream.wire import encode_tensor

    x = np.maximum(np.random.default_rng(0).normal(size=(8, 16, 14, 14)), 0).astype(np.float32)
    assert len(encode_tensor(x, "int8-zstd")) < len(encode_tensor(x, "zstd")) / 3


def test_int8_zstd_rejects_bad_payloads():
    import struct

    import zstandard

    from pipeline.stream.wire import WireError, decode_tensor, encode_tensor

    x = np.linspace(-1.0, 1.0, 96, dtype=np.float32).reshape(2, 48)
    good = encode_tensor(x, "int8-zstd")
    head = 6 + 8 * 2  # magic, kind, ndim, then the shape
    qh = struct.Struct("<BfB")

    def frame(code=0, scale=0.01, zero=128, body=None):
        values = zstandard.ZstdCompressor().compress(bytes(96)) if body is None else body
        return good[:head] + qh.pack(code, scale, zero) + values

    assert np.array_equal(decode_tensor(frame()), np.full((2, 48), -1.28, np.float32))
    bad = {
        "truncated quantization header": good[: head + 3],
        "bad quantization header": frame(code=7),
        "scale": frame(scale=0.0),
        "scale nan": frame(scale=float("nan")),
        "scale inf": frame(scale=float("inf")),
        "not zstd": frame(body=b"\x00" * 40),
        "too few values": frame(body=zstandard.ZstdCompressor().compress(bytes(95))),
        "too many values": frame(body=zstandard.ZstdCompressor().compress(bytes(97))),
        "truncated zstd": good[:-3],
    }
    for what, blob in bad.items():
        with pytest.raises(WireError):
            decode_tensor(blob)
            pytest.fail(f"accepted: {what}")
    # a zstd body without its content size cannot decompress past the frame's declared shape
    stream = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(10_000))
    with pytest.raises(WireError):
        decode_tensor(frame(body=stream))
    with pytest.raises(WireError, match="more than"):
        decode_tensor(good, max_elements=95)
    # a body that declares more bytes than the shape holds is refused before it is decompressed
    big = zstandard.ZstdCompressor().compress(bytes(1 << 20))
    with pytest.raises(WireError, match="declares 1048576 bytes"):
        decode_tensor(frame(body=big))
    fp32_frame = encode_tensor(x, "zstd")
    with pytest.raises(WireError, match="declares 1048576 bytes"):
        decode_tensor(fp32_frame[:head] + big)  # the zstd kind checks it the same way
    with pytest.raises(WireError, match="non-finite"):
        encode_tensor(np.array([1.0, np.inf], np.float32), "int8-zstd")


def test_a_bad_int8_zstd_frame_rejects_its_samples():
    enc = Encoder(kind="int8-zstd")  # one frame per batch
    _, good = enc.process(_feat_batch(5, 1))
    frame = good.column(1)[0].as_py()
    # cut the zstd body short: a malformed payload, whatever bit a random flip would hit
    frames = [frame[:-4], *good.column(1).to_pylist()[1:]]
    bad = good.set_column(1, good.schema.field(1), pa.array(frames, good.schema.field(1).type))
    meta, out = Decoder((4, 8, 8)).process(bad)
    assert meta["rejected_ids"] == [0, 1, 2, 3, 4] and len(out["ids"]) == 0
    assert "int8-zstd" in meta["errors"][0]


def test_decoder_rejects_bad_frames_by_id_and_keeps_the_rest():
    from pipeline.stream.wire import corrupt_frames, encode_tensor, pack_batch

    batch = _feat_batch(6)
    _, rb = Encoder(kind="ours", frame="sample").process(batch)
    rb, hit = corrupt_frames(rb, 0.5, np.random.default_rng(3))
    assert 0 < hit < 6
    meta, out = Decoder((4, 8, 8)).process(rb)
    assert len(meta["rejected_ids"]) == hit and meta["n"] == 6
    assert sorted(out["ids"].tolist() + meta["rejected_ids"]) == list(range(6))
    assert out["feat"].shape == (6 - hit, 4, 8, 8)
    assert all("CodecError" in e for e in meta["errors"])
    # well-formed frames of the wrong shape, and one declaring more values than its samples hold
    frames = [
        encode_tensor(np.zeros((1, 4, 8, 7), np.float32)),
        encode_tensor(np.zeros((2, 4, 8, 9))),
    ]
    rb = pack_batch(np.arange(3), frames, None, np.zeros(3), [1, 2])
    meta, out = Decoder((4, 8, 8)).process(rb)
    assert meta["rejected_ids"] == [0, 1, 2] and len(out["ids"]) == 0
    assert "shape" in meta["errors"][0] and "more than" in meta["errors"][1]


def test_a_bad_batch_frame_rejects_all_its_samples():
    from pipeline.stream.wire import corrupt_frames

    enc = Encoder(kind="ours")  # one frame per batch
    _, good = enc.process(_feat_batch(5, 1))
    assert good.column(1).null_count == 4  # one frame, four followers
    bad, hit = corrupt_frames(good, 1.0, np.random.default_rng(0))
    meta, out = Decoder((4, 8, 8)).process(bad)
    assert hit == 1 and meta["rejected_ids"] == [0, 1, 2, 3, 4] and len(out["ids"]) == 0
    assert meta["errors"][0].startswith("samples 0..4:")


def test_batch_frames_are_smaller_and_decode_like_sample_frames():
    batch = _feat_batch(16, 2)
    metas = {f: Encoder(kind="ours", frame=f).process(batch) for f in ("batch", "sample")}
    assert metas["batch"][0]["bytes_out"] < metas["sample"][0]["bytes_out"]
    for _, rb in metas.values():
        _, out = Decoder((4, 8, 8)).process(rb)
        assert out["ids"].tolist() == list(range(16))
        assert np.abs(out["feat"] - batch["feat"]).max() <= batch["feat"].max() / 255 + 1e-6


def test_head_tail_match_the_unsplit_model():
    import torch

    head, tail = HeadModel(tiny_factory), TailModel(tiny_factory)
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    _, h = head.process({"ids": np.arange(5), "x": x, "labels": None, "t_src": np.zeros(5)})
    meta, t = tail.process(h)
    h_ref, t_ref = tiny_factory()
    with torch.no_grad():
        want = t_ref(h_ref(torch.from_numpy(x))).argmax(1).numpy()
    assert t["preds"].tolist() == want.tolist() and meta["n"] == 5
    empty = {"ids": np.zeros(0, np.int64), "feat": np.zeros((0, 4, 8, 8), np.float32)}
    meta, t = tail.process({**empty, "labels": None, "t_src": np.zeros(0)})
    assert meta["n"] == 0 and len(t["preds"]) == 0


def test_transport_is_ordered_by_ticket_and_paced_by_the_link():
    spec = resolve_link(None, bandwidth_mbps=8.0, delay_ms=20.0)  # 1 MB/s
    tr = Transport(spec)
    rbs = [Encoder(kind="fp32").process(_feat_batch(4, s))[1] for s in range(3)]

    async def go():
        # submitted out of order: tickets 2 and 1 must wait for ticket 0
        tasks = [asyncio.ensure_future(tr.send(rbs[s], s, 0)) for s in (2, 1, 0)]
        return await asyncio.gather(*tasks)

    t0 = time.time()
    results = asyncio.run(go())
    assert all(d is None and m["passthrough"] for m, d in results)  # unchanged: not copied again
    metas = [m for m, _ in results]
    elapsed = time.time() - t0
    order = sorted(metas, key=lambda m: m["tx_start_planned"])
    assert [m["ticket"] for m in order] == [0, 1, 2]
    total = sum(m["bytes_in"] for m in metas)
    assert elapsed >= total / 1e6 + 0.02 - 0.005  # serialization of all bytes plus one delay
    assert all(m["reorder_gaps"] == 0 for m in metas)


def test_transport_skips_a_ticket_that_never_comes():
    tr = Transport(resolve_link(None), reorder_timeout_s=0.2)
    rb = Encoder(kind="fp32").process(_feat_batch(2))[1]

    async def go():
        # ticket 0 died with an earlier incarnation; 1 must not wait for it forever
        return await tr.send(rb, 1, 0)

    t0 = time.time()
    meta, _ = asyncio.run(go())
    assert meta["reorder_gaps"] == 1 and 0.2 <= time.time() - t0 < 2.0
    # a restarted transport is told the smallest outstanding ticket and starts there at once
    fresh = Transport(resolve_link(None), reorder_timeout_s=5.0)
    t0 = time.time()
    meta, _ = asyncio.run(fresh.send(rb, 7, 7))
    assert meta["reorder_gaps"] == 0 and time.time() - t0 < 1.0


def test_sink_reports_per_sample_results_and_reference_agreement():
    sink = Sink(source_spec=SPEC, factory=tiny_factory, reference_samples=3)
    batch = {
        "ids": np.asarray([1, 2, 3, 4]),
        "preds": np.asarray([3, 4, 0, 1]),
        "labels": np.asarray([3, 0, 0, 2]),
        "t_src": np.full(4, time.time() - 0.01),
    }
    meta, nothing = sink.receive(batch)
    assert nothing is None
    assert meta["ids"] == [1, 2, 3, 4] and meta["correct"] == [True, False, True, False]
    assert min(meta["latency_s"]) >= 0.01
    # ids 1 and 2 are reference samples (< 3): checked against the uncompressed model
    assert meta["agree"][2:] == [-1, -1] and set(meta["agree"][:2]) <= {0, 1}


def test_arrow_batches_cross_ray_between_actors(ray_local):
    enc = ray_local.remote(Encoder).options(num_cpus=0.1, resources={"edge": 0.01}).remote("ours")
    dec = (
        ray_local.remote(Decoder).options(num_cpus=0.1, resources={"cloud": 0.01}).remote((4, 8, 8))
    )
    batch = _feat_batch(5)
    _, rb_ref = enc.process.options(num_returns=2).remote(batch)
    assert isinstance(ray_local.get(rb_ref), pa.RecordBatch)
    meta_ref, out_ref = dec.process.options(num_returns=2).remote(rb_ref)
    out = ray_local.get(out_ref)
    assert out["ids"].tolist() == list(range(5)) and ray_local.get(meta_ref)["n"] == 5
    assert np.abs(out["feat"] - batch["feat"]).max() <= batch["feat"].max() / 255 + 1e-6
    place = ray_local.get(dec.ready.remote())
    assert place["node_id"] and place["pid"] > 0
    for a in (enc, dec):
        ray_local.kill(a)


def test_transport_returns_a_corrupted_batch_as_a_new_object():
    from codec.arrow import batch_to_frames

    spec = resolve_link(None, corrupt=0.999, seed=3)
    rb = Encoder(kind="ours", frame="sample").process(_feat_batch(4))[1]
    meta, out = asyncio.run(Transport(spec).send(rb, 0, 0))
    assert "passthrough" not in meta and meta["corrupted_frames"] == 4
    sent = [bytes(g.frame) for g in batch_to_frames(rb)[1]]
    got = [bytes(g.frame) for g in batch_to_frames(out)[1]]
    assert all(a != b for a, b in zip(sent, got, strict=True))  # one bit differs in each
