"""The in-flight window (`flow.inflight`): an edge keeps only what its link needs in flight, sized
from the measured link, and the window follows the link when its rate steps down and back up."""

from __future__ import annotations

import sys

import pytest
import ray.cloudpickle
from tiny_stream import tiny_config, tiny_factory

from pipeline.stream.config import ConfigError
from pipeline.stream.link import load_trace, step_trace
from splitstream.runner import run_pipeline

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _stream(*extra: str):
    base = ("codec.kind=fp16", "fidelity.reference_samples=0")  # 4 KiB a sample, a known load
    return run_pipeline(tiny_config(*base, *extra), progress=False, factory=tiny_factory)


@pytest.mark.parametrize("setting", ["auto", "8"])
def test_the_window_bounds_what_is_in_flight_to_the_link(ray_local, setting):
    rep = _stream("samples=1200", "link.bandwidth_mbps=10", "batching.max_batch_size=64",
                  f"flow.inflight={setting}")  # fmt: skip
    assert rep["delivered"] == 1200 and rep["lost"] == 0 and rep["duplicated"] == 0
    win = rep["inflight"]["edges"][0]
    aloft = [a for a in rep["timeline"]["aloft"] if a is not None]
    if setting == "8":
        assert rep["inflight"]["setting"] == 8 and win == {"size": 8}
        assert max(aloft) > 4  # a fixed window fills: batches wait in front of the link
        return
    # 256 kB batches take 0.2 s on the link, far more than making one: two keep it busy
    assert rep["inflight"]["setting"] == "auto"
    assert win["rate_mbps"] == pytest.approx(10.0, rel=0.1)
    assert 2 <= win["size"] <= 3 and win["max"] == win["cap"] == 8  # the cap only at the start
    # the cap's batches drain first (a loaded machine takes a while): then the window holds
    assert max(aloft[len(aloft) // 2 :]) <= 3


@pytest.mark.long
@pytest.mark.slow
def test_the_window_follows_the_link_from_10_to_2_mbit_and_back(ray_local, tmp_path):
    trace = tmp_path / "steps.trace"
    trace.write_text(step_trace([(10, 5), (2, 5), (10, 5)]))
    # 32 kB batches and a 100 ms delay: the bandwidth-delay product spans several batches at
    # 10 Mbit/s, about one at 2 Mbit/s
    rep = _stream("samples=2600", f"link.trace={trace}", "link.delay_ms=100",
                  "batching.max_batch_size=8")  # fmt: skip
    assert rep["delivered"] == 2600 and rep["lost"] == 0
    sizes = [s for s in rep["timeline"]["inflight"] if s is not None]
    warm = sizes[2:]  # the first points hold the cap, before the link is measured
    high = max(warm[: len(warm) // 3])
    i_low = next(i for i, s in enumerate(warm) if s <= high - 3)  # down with the link ...
    low = min(s for s in warm[i_low:] if s > 1)  # (1: a round-trip probe)
    assert high >= 5 and low <= 3
    assert max(warm[i_low:]) >= high - 1  # ... and back up when the link is fast again


def test_a_bad_inflight_setting_is_a_config_error_naming_the_key():
    for bad in ("0", "many", "2.5"):
        with pytest.raises(ConfigError, match="flow.inflight"):
            tiny_config(f"flow.inflight={bad}")


def test_a_step_trace_carries_each_segments_rate(tmp_path):
    path = tmp_path / "two.trace"
    path.write_text(step_trace([(10, 2), (2, 1)]))
    times = load_trace(path)
    first, second = (times <= 2000).sum(), ((times > 2000) & (times <= 3000)).sum()
    assert first * 1500 * 8 / 2 / 1e6 == pytest.approx(10, rel=0.01)
    assert second * 1500 * 8 / 1e6 == pytest.approx(2, rel=0.01)
    with pytest.raises(ValueError, match="positive"):
        step_trace([(0, 1)])
