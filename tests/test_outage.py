"""A link outage on the emulated link (``link.outages``), end to end on the tiny model: the stream
pauses and resumes with every sample exactly once, the timeline shows the gap, the stall watchdog
does not mistake it for a dead stage, and the rate controller steps down and back up."""

from __future__ import annotations

import inspect
import re

import pytest

OUTAGE = (10.0, 20.0)  # start, duration: seconds after the link's first transmission
SAMPLES, RATE_SPS = 700, 20  # a paced source: 35 s, so the outage falls mid-run


def _outage_on_timeline(rep: dict) -> tuple[float, float]:
    """The outage on the timeline's clock: as the report places it, else the longest spell in which
    nothing arrived (the executor reports no transport windows)."""
    spans = [w for o in rep["link"]["outages"] for w in o["t"] or []]
    if spans:
        return spans[0][0], spans[0][1]
    tl = rep["timeline"]
    t, mb = tl["t"], tl["arrived_mb"]
    best, i = (0.0, 0.0), 0
    while i < len(t):
        j = i
        while j + 1 < len(t) and mb[j + 1] == mb[i]:
            j += 1
        if j + 1 < len(t) and t[j + 1] - t[i] > best[1] - best[0]:
            best = (t[i], t[j + 1])
        i = j + 1
    return best


def _executor_reads_outages() -> bool:
    from pipeline.stream.driver import delivery

    return "outages_wall" in inspect.getsource(delivery)


def test_the_report_places_each_edges_configured_outages_and_the_plots_shade_them(tmp_path):
    from tiny_stream import tiny_config

    from pipeline.stream.report import format_report, link_outages, outage_spans, plot_rate_timeline

    cfg = tiny_config(
        "fleet.edges=3", "link.bandwidth_mbps=4", "link.outages=[[5, 2]]",
        "fleet.links=[{}, {outages: [[1, 1], [4, 0.5]]}, {profile: lte}]",
    )  # fmt: skip
    walls = {0: [[1005.0, 1007.0]], 1: [[1001.5, 1002.5], [1004.5, 1005.0]]}
    got = link_outages(cfg, t0_wall=1000.0, outages_wall=walls)
    assert [o["configured"] for o in got] == [[[5.0, 2.0]], [[1.0, 1.0], [4.0, 0.5]], []]
    assert got[0]["t"] == [[5.0, 7.0]] and got[1]["t"] == [[1.5, 2.5], [4.5, 5.0]]
    assert link_outages(cfg)[0]["t"] is None  # not placed without the transports' windows
    assert link_outages(tiny_config("link.bandwidth_mbps=4")) is None
    rep = {
        "link": {"outages": got},
        "timeline": {
            "t": [0.0, 5.0, 10.0],
            "bits": [8, 4, 8],
            "arrived_mb": [0, 1, 1],
            "rate_estimate_mbps": [4, 0, 4],
            "backlog_kb": [0, 9, 0],
            "latency_ms": [9, 0, 9],
        },  # fmt: skip
    }
    assert outage_spans(rep) == [(5.0, 7.0), (1.5, 2.5), (4.5, 5.0)]
    text = format_report(rep)
    assert re.search(r"edge 1 link outages \(emulator\) +1 s for 1 s, 4 s for 0.5 s\n", text)
    assert "edge 2 link outages" not in text
    fig = tmp_path / "rate.png"
    assert plot_rate_timeline(rep, str(fig)) == str(fig) and fig.stat().st_size > 0


@pytest.mark.long
def test_a_20_s_outage_mid_run_pauses_an_adaptive_stream_and_loses_nothing(ray_local, tmp_path):
    from tiny_stream import tiny_config, tiny_factory

    from pipeline.stream.output import read_results
    from splitstream.runner import run_pipeline

    out = tmp_path / "results.jsonl"
    cfg = tiny_config(
        f"samples={SAMPLES}", f"data.rate_sps={RATE_SPS}", "codec.kind=ours",
        "link.bandwidth_mbps=4", f"link.outages=[[{OUTAGE[0]:g}, {OUTAGE[1]:g}]]",
        "rate.mode=adaptive", "rate.latency_slo_ms=1000", "rate.profile_samples=32",
        "fidelity.reference_samples=64", f"output.path={out}",
    )  # fmt: skip
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)  # no StreamError: no stall

    assert rep["status"] == "completed" and rep["error"] is None
    assert rep["delivered"] == SAMPLES and rep["lost"] == 0 and rep["duplicated"] == 0
    ids = read_results(out)["id"].to_pylist()
    assert sorted(ids) == list(range(SAMPLES))  # every sample once in the output
    assert rep["link"]["outages"][0]["configured"] == [list(OUTAGE)]
    assert rep["edges"][0]["outages"] == [list(OUTAGE)]

    tl = rep["timeline"]
    a, b = _outage_on_timeline(rep)
    assert OUTAGE[1] - 1.0 <= b - a <= OUTAGE[1] + 2.0  # the gap is the outage, no longer
    inside = [i for i, t in enumerate(tl["t"]) if a + 0.5 <= t <= b - 0.5]
    assert len(inside) > 10 and len({tl["arrived_mb"][i] for i in inside}) == 1  # no arrivals
    assert len({tl["settled"][i] for i in inside}) == 1
    assert all(tl["latency_ms"][i] == 0.0 for i in inside)  # nothing delivered

    bits = dict(zip(tl["t"], tl["bits"], strict=True))
    before = {v for t, v in bits.items() if a - 5.0 <= t <= a - 0.5}
    assert before == {8.0}  # the pre-outage setting: the link carries 8 bits easily
    during = [v for t, v in bits.items() if a + 1.0 <= t <= b - 0.5]
    assert max(during) < 8.0  # stepped down: the batch stuck on the link bounds the rate
    back = min(t for t, v in bits.items() if t >= b and v == 8.0)
    assert back - b <= 10.0  # and back up within 10 s of the outage's end
    assert bits[max(bits)] == 8.0


@pytest.mark.long
@pytest.mark.skipif(
    not _executor_reads_outages(),
    reason="the executor does not read the transport's outage windows (outages_wall) yet",
)
def test_an_outage_longer_than_the_stall_timeout_is_not_a_stall(ray_local):
    from tiny_stream import tiny_config, tiny_factory

    from splitstream.runner import run_pipeline

    cfg = tiny_config(
        "samples=240", "data.rate_sps=30", "link.bandwidth_mbps=4", "link.outages=[[3, 6]]",
        "flow.stall_timeout_s=2",
    )  # fmt: skip
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    assert rep["status"] == "completed" and rep["delivered"] == 240 and rep["lost"] == 0
    (a, b), *_ = rep["link"]["outages"][0]["t"]
    assert b - a == pytest.approx(6.0)
    assert rep["elapsed_s"] > 6.0
