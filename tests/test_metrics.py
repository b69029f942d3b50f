"""Driver-side stream metrics: sketches, stage/link/receiver aggregates, the decimating timeline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.stream.metrics import LatencySketch, LinkStats, ReceiverStats, StageStats, Timeline


def test_latency_sketch_quantiles_within_one_percent_in_bounded_bins():
    rng = np.random.default_rng(0)
    values = rng.lognormal(mean=-3, sigma=1.0, size=200_000)
    sk = LatencySketch()
    for v in values:
        sk.add(v)
    for q in (0.5, 0.99):
        exact = np.quantile(values, q) * 1000
        assert sk.quantile_ms(q) == pytest.approx(exact, rel=0.02)
    assert sk.count == len(values)
    assert len(sk._sketch._store.bins) <= 1024  # bounded however many values went in
    assert math.isnan(LatencySketch().quantile_ms(0.5))
    neg = LatencySketch()
    neg.add(-0.5)  # clock skew between nodes: clamps to 0, never raises
    assert neg.quantile_ms(0.5) == 0.0


def test_receiver_goodput_counts_the_bytes_after_the_first_arrival():
    r = ReceiverStats()
    # 11 batches of 125 kB arriving every 0.1 s: 10 intervals carry 1.25 MB -> 10 Mbit/s
    for i in range(11):
        r.add(100.0 + 0.1 * i, 125_000)
    s = r.summary()
    assert s["goodput_mbps"] == pytest.approx(10.0)
    assert s["goodput_window_s"] == pytest.approx(1.0) and s["goodput_window_batches"] == 10
    assert s["arrived_bytes"] == 11 * 125_000
    one = ReceiverStats()
    one.add(1.0, 10)
    assert math.isnan(one.summary()["goodput_mbps"])


def test_link_stats_report_the_schedule_not_the_arrivals():
    lk = LinkStats(configured_mbps=8.0)
    for i in range(4):  # back to back, 1 MB each at 1 MB/s
        lk.add(
            {
                "bytes_in": 1_000_000,
                "tx_start_planned": float(i),
                "tx_done_planned": float(i + 1),
                "corrupted_frames": i % 2,
            }
        )
    s = lk.summary()
    assert s["scheduled_mbps"] == pytest.approx(8.0) and s["utilization_scheduled"] == 1.0
    assert s["busy_s"] == 4.0 and s["corrupted_frames"] == 2 and s["deliveries"] == 4


def test_stage_stats_aggregate_calls_and_placement():
    st = StageStats("encoder", 2)
    for r, (a, b, n) in enumerate([(0.0, 0.5, 4), (0.5, 1.5, 6)]):
        meta = {"t_start": a, "t_end": b, "n": n, "bytes_in": 10 * n, "bytes_out": n, "rss": 2**20}
        st.add(r, meta)
    st.place(1, {"node_id": "x", "ip": "1.2.3.4", "pid": 7, "hostname": "h"})
    s = st.summary()
    assert s["batches"] == 2 and s["samples"] == 10 and s["busy_s"] == 1.5
    assert s["throughput_sps"] == pytest.approx(10 / 1.5) and s["mean_batch_size"] == 5
    assert s["bytes_in"] == 100 and s["rss_mb"] == 2.0
    assert s["placement"][1] == {"replica": 1, "node_id": "x", "ip": "1.2.3.4", "pid": 7}


def test_timeline_stays_bounded_and_resamples_to_a_fixed_size():
    tl = Timeline(period_s=0.1, capacity=32)
    t = 0.0
    while t < 1000:
        if tl.due(t):
            tl.record(t, {"x": t * 2})
        t += 0.05
    assert len(tl.points) < 32
    out = tl.resample(40)
    assert len(out["t"]) == 40 and len(out["x"]) == 40
    assert out["x"][-1] == pytest.approx(2 * out["t"][-1], rel=1e-3)
    short = Timeline()
    short.record(0.0, {"x": 1.0})
    assert len(short.resample(40)["x"]) == 40
