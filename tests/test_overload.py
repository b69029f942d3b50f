"""A live source faster than its link (`flow.overflow`): with ``latest`` the source drops the frames
the stream cannot carry, latency stays bounded and every frame is delivered or dropped exactly once;
with ``block`` (the files' default) the same run queues, and latency grows with it."""

from __future__ import annotations

import sys

import pytest
import ray.cloudpickle
from tiny_stream import tiny_config, tiny_factory

from pipeline.stream.config import ConfigError
from pipeline.stream.output import read_results
from splitstream.runner import run_pipeline

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow

RATE = 90  # samples/s from the camera: about 3x what the 1 Mbit/s link carries of fp16 features


def _camera(seconds: float, overflow: str, *extra: str):
    return tiny_config(
        f"samples={int(RATE * seconds)}",
        f"data.rate_sps={RATE}",
        "codec.kind=fp16",  # 4 KiB per sample, whatever the content: a known load
        "link.bandwidth_mbps=1",
        "fidelity.reference_samples=0",
        f"flow.overflow={overflow}",
        *extra,
    )


@pytest.mark.long
def test_latest_keeps_latency_bounded_and_accounts_for_every_frame(ray_local, tmp_path):
    out = tmp_path / "frames.parquet"
    rep = run_pipeline(_camera(60, "latest", f"output.path={out}"), progress=False,
                       factory=tiny_factory)  # fmt: skip
    read = int(RATE * 60)
    assert rep["delivered"] + rep["dropped"] + rep["rejected"] == read
    assert rep["lost"] == 0 and rep["duplicated"] == 0
    assert rep["dropped"] > read / 2, "the link carries about a third of the frames"
    assert rep["latency_p99_ms"] < 2000, rep["latency_p99_ms"]
    assert rep["memory"]["driver_growth_after_warmup"] < 0.10, rep["memory"]
    rows = read_results(out).to_pylist()
    assert sorted(r["id"] for r in rows) == list(range(read))
    dropped = [r for r in rows if r["status"] == "dropped"]
    assert len(dropped) == rep["dropped"] and all(
        "flow.overflow=latest" in r["reason"] for r in dropped
    )
    assert rep["dropped_ids"] == sorted(r["id"] for r in dropped)[:100]


@pytest.mark.long
def test_block_queues_instead_and_latency_grows(ray_local):
    # 4 s at 3x the link: the last frames wait about 8 s, twice the bound below
    rep = run_pipeline(_camera(4, "block"), progress=False, factory=tiny_factory)
    assert rep["dropped"] == 0 and rep["delivered"] == int(RATE * 4)
    assert rep["latency_p99_ms"] > 4000, rep["latency_p99_ms"]


def _adaptive_camera(rate: int, seconds: int, *extra: str):
    """Our codec over 1 Mbit/s: about 1.2 kB a sample at 8 bits (~100 samples/s), 0.45 kB at 2."""
    return tiny_config(
        f"samples={rate * seconds}", f"data.rate_sps={rate}", "codec.kind=ours",
        "link.bandwidth_mbps=1", "fidelity.reference_samples=0", "flow.overflow=drop_oldest",
        *extra,
    )  # fmt: skip


ADAPTIVE = ("rate.mode=adaptive", "rate.latency_slo_ms=1000", "rate.profile_samples=32")
TWICE_S, BEYOND_S = 15, 8  # seconds of camera at twice what 8 bits carry, and beyond 2 bits


@pytest.mark.long
def test_rate_control_and_shedding_first_fewer_bits_then_fewer_frames(ray_local):
    """At twice what 8 bits carry, the controller codes most samples below 8 bits and the source
    hardly sheds;
    fixed at 8 bits, the same camera loses about half its frames. Beyond what even 2 bits carry,
    the controller is at its lowest settings and the source sheds the rest."""
    read = 200 * TWICE_S
    fixed = run_pipeline(_adaptive_camera(200, TWICE_S, "codec.bits=8"), progress=False,
                         factory=tiny_factory)  # fmt: skip
    adaptive = run_pipeline(_adaptive_camera(200, TWICE_S, *ADAPTIVE), progress=False,
                            factory=tiny_factory)  # fmt: skip
    for rep in (fixed, adaptive):
        assert rep["delivered"] + rep["dropped"] + rep["rejected"] == read
        assert rep["lost"] == 0 and rep["duplicated"] == 0
    assert fixed["dropped"] > 0.3 * read  # 8 bits: the link carries about half
    assert adaptive["dropped"] < fixed["dropped"] / 4  # fewer bits first ...
    below_8 = sum(n for k, n in adaptive["settings_histogram"].items() if int(k.split("b")[0]) < 8)
    assert below_8 > 2 / 3 * adaptive["delivered"], adaptive["settings_histogram"]
    over = run_pipeline(_adaptive_camera(600, BEYOND_S, *ADAPTIVE), progress=False,
                        factory=tiny_factory)  # fmt: skip
    read = 600 * BEYOND_S
    assert over["delivered"] + over["dropped"] + over["rejected"] == read
    assert over["dropped"] > 0.15 * read  # ... then fewer frames, once the bits are at the bottom
    two = sum(n for k, n in over["settings_histogram"].items() if k.startswith("2b"))
    assert two > 0.8 * over["delivered"], over["settings_histogram"]


def test_shedding_needs_a_paced_source():
    with pytest.raises(ConfigError, match="flow.overflow"):
        tiny_config("flow.overflow=latest")
    with pytest.raises(ConfigError, match="flow.overflow_samples"):
        tiny_config("data.rate_sps=10", "flow.overflow=latest", "flow.overflow_samples=4")
