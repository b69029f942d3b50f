"""Stage actors: the plain classes directly (fast), then a hop through Ray with Arrow batches."""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
import ray.cloudpickle

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


@pytest.mark.parametrize("kind", ["ours", "fp32", "fp16", "zstd"])
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
    tol = {"fp32": 0.0, "fp16": 2e-3, "zstd": 0.0, "ours": batch["feat"].max() / 255 + 1e-6}[kind]
    assert err <= tol


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
