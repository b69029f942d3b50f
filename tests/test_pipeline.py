"""End-to-end stream runs on the shared local Ray (`ray_local`) with a tiny CNN split."""

from __future__ import annotations

import sys

import pytest
import ray.cloudpickle

from pipeline.stream.config import load_config
from splitstream.runner import run_pipeline

# Ray workers cannot import this test module: ship its functions (the model factory) by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

REPORT_KEYS = {
    "samples",
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
}


def tiny_factory():
    """Head: conv+ReLU (8x16x16 fp32 features = 8 KiB/sample); tail: pool+linear. Seeded."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    tail = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    return head, tail


def _cfg(*overrides: str):
    base = ["model.name=tiny", "data.source=synthetic", "data.shape=[3,16,16]"]
    return load_config(None, [*base, *overrides], check_model=False)


def test_every_sample_arrives_exactly_once_with_report(ray_local):
    cfg = _cfg(
        "samples=150",
        "codec.kind=ours",
        "link.profile=100mbit",
        "flow.window=3",
        "batching.max_batch_size=16",
        "fidelity.reference_samples=48",
    )
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    assert rep.keys() >= REPORT_KEYS
    assert rep["delivered"] == 150 and rep["lost"] == 0 and rep["duplicated"] == 0
    assert rep["unexpected"] == 0
    for name in ("head", "encoder", "transport", "decoder", "tail", "sink"):
        st = rep["stages"][name]
        assert st.keys() >= STAGE_KEYS, name
        assert st["samples"] == 150, name
        assert st["queue_depth_max"] <= 3, name
    assert rep["peak_inflight_batches"] <= 3
    assert max(rep["batch_sizes"]) <= 16 and sum(rep["batch_sizes"]) == 150
    assert rep["raw_bytes"] == 150 * 8 * 16 * 16 * 4
    assert rep["compression_ratio"] > 2  # 8-bit codec on ReLU features
    assert rep["fidelity"]["reference_samples"] == 48
    assert rep["fidelity"]["agreement"] >= 0.8
    assert rep["latency_p99_ms"] >= rep["latency_p50_ms"] > 0
    assert len(rep["memory"]["samples"]) >= 2


def test_slow_link_backpressures_head_with_flat_memory(ray_local):
    # head: thousands of samples/s; link: 1 Mbit/s = ~15 samples/s of 8 KiB fp32 features.
    # 64 samples in batches of 2 = 32 batches, far more than the 6 hops x 2 credits in flight.
    window = 2
    cfg = _cfg(
        "samples=64",
        "codec.kind=fp32",
        "link.bandwidth_mbps=1",
        f"flow.window={window}",
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
    assert head["samples"] / head["busy_s"] > 20 * link["throughput_sps"]
    assert head["backpressured_s"] > 0.3 * rep["elapsed_s"]
    assert hops["encoder"]["refused"] > 0
    # memory stays flat: objects in the store stay bounded by the windows, RSS does not climb
    mem = rep["memory"]["samples"]
    assert len(mem) >= 6
    store = [m.get("object_store_used_mb", 0.0) for m in mem]
    assert max(store) < 16
    later = [m["rss_mb"] for m in mem[len(mem) // 3 :]]
    assert max(later) - min(later) < 100


@pytest.mark.parametrize(("mbps", "samples", "batch"), [(1.0, 48, 8), (10.0, 400, 16)])
def test_link_bound_goodput_matches_configured_bandwidth(ray_local, mbps, samples, batch):
    cfg = _cfg(
        f"samples={samples}",
        "codec.kind=fp32",
        f"link.bandwidth_mbps={mbps}",
        "flow.window=4",
        f"batching.max_batch_size={batch}",
        "batching.adaptive=false",
        "fidelity.reference_samples=0",
    )
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    assert rep["lost"] == 0 and rep["duplicated"] == 0
    assert rep["goodput_window_s"] > 2.0  # a few seconds of link-bound streaming were measured
    # link-bound: every measured batch found the link still busy with the previous one
    assert rep["goodput_window_batches"] >= rep["link_batches"] - 2
    ratio = rep["goodput_mbps"] / mbps
    assert 0.95 <= ratio <= 1.02, (rep["goodput_mbps"], rep["link"])
    assert 0.9 <= rep["link_utilization"] <= 1.02


def broken_tail_factory():
    """Like tiny_factory, but the tail fails on every batch."""
    from torch import nn

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("tail exploded on purpose")

    head, _ = tiny_factory()
    return head, Boom()


def test_stage_failure_surfaces_as_pipeline_error(ray_local):
    from splitstream.runner import PipelineError

    cfg = _cfg(
        "samples=20", "codec.kind=fp16", "link.profile=unlimited", "fidelity.reference_samples=0"
    )
    with pytest.raises(PipelineError, match="tail exploded on purpose"):
        run_pipeline(cfg, progress=False, factory=broken_tail_factory)
    # the failed run's actors were torn down: the shared Ray instance is still usable
    assert ray_local.get(ray_local.put(7)) == 7


def test_text_models_are_rejected_before_ray_starts():
    from splitstream.runner import PipelineError

    cfg = load_config(None, ["model.name=llama-tiny", "model.split=layers.0"])
    with pytest.raises(PipelineError, match="model.name"):
        run_pipeline(cfg, progress=False)
