"""End-to-end stream runs on the shared local Ray (`ray_local`) with a tiny CNN split."""

from __future__ import annotations

import sys

import pytest
import ray.cloudpickle
from tiny_stream import tiny_config, tiny_factory

from pipeline.stream.executor import StreamError
from splitstream.runner import run_pipeline

# Ray workers cannot import this test module: ship its functions (the model factory) by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

REPORT_KEYS = {
    "status",
    "samples",
    "delivered",
    "rejected",
    "restarts",
    "replayed_batches",
    "duplicates_dropped",
    "goodput_window_s",
    "payload_rate_mbps",
    "link",
    "timeline",
    "throughput_sps",
    "latency_p50_ms",
    "latency_p99_ms",
    "raw_bytes",
    "wire_bytes",
    "compression_ratio",
    "link_utilization",
    "peak_inflight_batches",
    "lost",
    "duplicated",
    "stages",
    "fidelity",
    "goodput_mbps",
    "memory",
}
STAGE_KEYS = {
    "throughput_sps",
    "latency_p50_ms",
    "latency_p99_ms",
    "queue_depth_mean",
    "queue_depth_max",
    "busy_s",
    "backpressured_s",
    "mean_batch_size",
    "placement",
    "restarts",
    "replayed_batches",
}


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "separate"])
def test_every_sample_arrives_exactly_once_with_report(ray_local, fuse):
    cfg = tiny_config(
        f"placement.fuse={fuse}",
        "samples=150",
        "codec.kind=ours",
        "link.profile=100mbit",
        "flow.window=3",
        "batching.max_batch_size=16",
        "fidelity.reference_samples=48",
    )
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    assert rep.keys() >= REPORT_KEYS and rep["status"] == "completed" and rep["error"] is None
    assert rep["delivered"] == 150 and rep["lost"] == 0 and rep["duplicated"] == 0
    assert rep["unexpected"] == 0 and rep["rejected"] == 0 and rep["restarts"] == 0
    for name in ("head", "encoder", "transport", "decoder", "tail", "sink"):
        st = rep["stages"][name]
        assert st.keys() >= STAGE_KEYS, name
        assert st["samples"] == 150, name
        assert st["queue_depth_max"] <= 3, name
    assert rep["peak_inflight_batches"] <= 3
    sizes = rep["batch_sizes"]
    assert sizes["max"] <= 16 and sum(int(k) * c for k, c in sizes["histogram"].items()) == 150
    assert rep["raw_bytes"] == 150 * 8 * 16 * 16 * 4
    assert rep["compression_ratio"] > 2  # 8-bit codec on ReLU features
    assert rep["fidelity"]["reference_samples"] == 48
    assert rep["fidelity"]["agreement"] >= 0.8
    assert rep["latency_p99_ms"] >= rep["latency_p50_ms"] > 0
    assert len(rep["timeline"]["t"]) == 40 and rep["timeline"]["settled"][-1] == 150
    # RSS per node side; fused, each side is one process with torch, separate it is several
    mem = rep["memory"]
    assert mem["edge_rss_mb"] > 100 and mem["cloud_rss_mb"] > 100
    assert mem["edge_rss_mb"] == mem["edge_rss_mb_max"]


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "separate"])
def test_slow_link_backpressures_head_with_flat_memory(ray_local, fuse):
    # head: thousands of samples/s; link: 1 Mbit/s = ~15 samples/s of 8 KiB fp32 features.
    # 64 samples in batches of 2 = 32 batches, far more than the 6 hops x 2 credits in flight.
    window = 2
    cfg = tiny_config(
        f"placement.fuse={fuse}",
        "samples=64",
        "codec.kind=fp32",
        "link.bandwidth_mbps=1",
        f"flow.window={window}",
        "flow.inflight=64",  # the hops' credits alone (the link's window: test_inflight.py)
        "batching.max_batch_size=2",
        "fidelity.reference_samples=0",
    )
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    assert rep["lost"] == 0 and rep["duplicated"] == 0 and rep["delivered"] == 64
    hops = rep["hops"]
    assert all(h["peak"] <= window for h in hops.values()), hops
    assert rep["peak_inflight_batches"] <= window
    assert rep["peak_inflight_total"] <= window * len(hops)
    # the link is the bottleneck ...
    head, link = rep["stages"]["head"], rep["stages"]["transport"]
    assert link["busy_s"] > 10 * head["busy_s"]
    # ... so the head was held back to the link's pace rather than allowed to run ahead
    # (unthrottled, the head would finish ~100x sooner than the link)
    assert head["throughput_sps"] < 3 * link["throughput_sps"]
    assert head["samples"] / head["busy_s"] > 5 * link["throughput_sps"]
    # the edge waited on credits for much of the run (which of its stages held the backlog depends
    # on the machine's timing, so the most backpressured one is checked)
    edge = [rep["stages"][s] for s in ("source", "head", "encoder")]
    assert max(st["backpressured_s"] for st in edge) > 0.3 * rep["elapsed_s"]
    assert sum(h["refused"] for h in hops.values()) > 0  # the edge was refused credits
    # memory stays flat: objects in the store stay bounded by the windows, RSS does not climb
    mem, tl = rep["memory"], rep["timeline"]
    assert mem["object_store_mb_max"] < 16
    sides = zip(tl["driver_rss_mb"], tl["edge_rss_mb"], tl["cloud_rss_mb"], strict=True)
    rss = [a + b + c for a, b, c in sides]
    later = rss[len(rss) // 3 :]
    assert max(later) - min(later) < 100


def big_factory():
    """Like tiny_factory on 3x32x32 inputs: 32 KiB of fp32 features per sample, so a few Mbit/s
    is the bottleneck even on two shared cores."""
    return tiny_factory()


@pytest.mark.parametrize(("mbps", "samples"), [(5.0, 192), (20.0, 768)])
def test_goodput_is_measured_at_the_receiver(ray_local, mbps, samples):
    # about 10 s of link-bound streaming: 32 KiB fp32 features per sample
    cfg = tiny_config(
        f"samples={samples}",
        "data.shape=[3,32,32]",
        "codec.kind=fp32",
        f"link.bandwidth_mbps={mbps}",
        "flow.window=4",
        "batching.max_batch_size=16",
        "batching.adaptive=false",
        "fidelity.reference_samples=0",
    )
    rep = run_pipeline(cfg, progress=False, factory=big_factory)
    assert rep["lost"] == 0 and rep["duplicated"] == 0 and rep["goodput_scope"] == "receiver"
    assert rep["goodput_window_s"] > 5.0 and rep["goodput_window_batches"] >= samples // 16 - 1
    ratio = rep["goodput_mbps"] / mbps
    assert 0.90 <= ratio <= 1.02, (rep["goodput_mbps"], rep["link"])
    # the same figure as the end-to-end payload rate: delivered samples/s x wire bytes per sample
    assert rep["goodput_mbps"] == pytest.approx(rep["payload_rate_mbps"], rel=0.10)
    # the emulator's own books stay apart, under their own keys
    assert rep["link"]["scheduled_mbps"] == pytest.approx(mbps, rel=0.1)
    assert rep["link_utilization"] == pytest.approx(ratio)


def slow_tail_factory():
    """tiny_factory whose tail takes 0.25 s per batch: a receiver slower than the link."""
    import time

    from torch import nn

    class Slow(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            time.sleep(0.25)
            return self.inner(x)

    head, tail = tiny_factory()
    return head, Slow(tail)


def test_goodput_follows_a_receiver_slower_than_the_link(ray_local):
    # 16 samples x 32 KiB = 4.2 Mbit per batch; the tail takes 0.25 s a batch, so the cloud side
    # absorbs about 17 Mbit/s of a 50 Mbit/s link
    mbps = 50.0
    cfg = tiny_config(
        "samples=400",
        "data.shape=[3,32,32]",
        "codec.kind=fp32",
        f"link.bandwidth_mbps={mbps}",
        "flow.window=2",
        "flow.per_replica_inflight=1",
        "batching.max_batch_size=16",
        "batching.adaptive=false",
        "fidelity.reference_samples=0",
    )
    rep = run_pipeline(cfg, progress=False, factory=slow_tail_factory)
    assert rep["lost"] == 0 and rep["delivered"] == 400
    capacity = 16 * rep["wire_bytes_per_sample"] * 8 / 0.25 / 1e6
    # measured where data arrives: the receiver's pace, not the link's configured rate
    assert rep["goodput_mbps"] < 0.5 * mbps and rep["link_utilization"] < 0.5
    assert 0.7 * capacity <= rep["goodput_mbps"] <= 1.25 * capacity, (rep["goodput_mbps"], capacity)
    # the link waits on the receiver: the edge is held back by backpressure
    assert rep["stages"]["transport"]["backpressured_s"] > 0.3 * rep["elapsed_s"]


def broken_tail_factory():
    """Like tiny_factory, but the tail fails on every batch."""
    from torch import nn

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("tail exploded on purpose")

    head, _ = tiny_factory()
    return head, Boom()


def test_a_stage_that_keeps_raising_fails_the_run_naming_it(ray_local):
    cfg = tiny_config(
        "samples=20",
        "codec.kind=fp16",
        "link.profile=unlimited",
        "fidelity.reference_samples=0",
        "flow.max_batch_retries=1",
    )
    with pytest.raises(StreamError, match="tail exploded on purpose") as ei:
        run_pipeline(cfg, progress=False, factory=broken_tail_factory)
    err = ei.value
    assert err.stage == "tail" and err.kind == "stage_failed" and "stage 'tail'" in str(err)
    rep = err.report
    assert rep["status"] == "failed" and rep["error"]["stage"] == "tail"
    assert rep["stages"]["tail"]["retries"] >= 1 and rep["delivered"] == 0
    # the failed run's actors were torn down: the shared Ray instance is still usable
    assert ray_local.get(ray_local.put(7)) == 7
