"""Link goodput from per-batch transmit records."""

import math

from pipeline.stream.metrics import link_goodput


def test_goodput_uses_the_links_schedule_when_present():
    # 10 batches of 125 kB on a 10 Mbit/s link: 0.1 s each, back to back after the first
    recs = []
    for i in range(10):
        planned = 0.1 * (i + 1)
        # observed ends bunch up (several awaits resumed together): they must not shrink the window
        recs.append(
            {
                "bytes": 125_000,
                "tx_done_planned": planned,
                "tx_done": 1.0 + 0.001 * i,
                "queued": float(i > 0),
            }
        )
    g = link_goodput(recs)
    assert math.isclose(g["goodput_mbps"], 10.0, rel_tol=1e-9)
    assert g["window_batches"] == 9


def test_goodput_falls_back_to_observed_times_and_handles_too_few():
    recs = [{"bytes": 1000, "tx_done": t} for t in (0.0, 0.5, 1.0)]
    g = link_goodput(recs)
    assert math.isclose(g["goodput_mbps"], 2000 * 8 / 1.0 / 1e6)
    assert math.isnan(link_goodput(recs[:1])["goodput_mbps"])
