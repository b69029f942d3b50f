"""The rate controller as a pure policy (no Ray): it steps down within one batch of a measured rate
drop, steps up only after the hysteresis, and never leaves the allowed bit widths."""

from __future__ import annotations

import random

import pytest

from codec import CodecSettings
from pipeline.stream.rate import (
    ProfileEntry,
    RateController,
    RateProfile,
    load_profile,
    save_profiles,
)

# bytes per sample and agreement of the demo split, in the spirit of a real profile
LADDER = {8: (8000, 1.0), 6: (5000, 0.999), 4: (3700, 0.99), 3: (2700, 0.97), 2: (1500, 0.87)}
SAMPLES = 4  # per batch: 100 samples/s with a 40 ms linger


def profile(ladder: dict[int, tuple[int, float]] = LADDER) -> RateProfile:
    entries = [ProfileEntry(CodecSettings(b), float(n), f) for b, (n, f) in ladder.items()]
    return RateProfile("demo", "layer1", "agreement", 64, "test", entries)


class Clock:
    """Decisions 40 ms apart: 100 samples/s in batches of 4."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.04
        return self.t


def feed(ctl: RateController, mbps: float, batches: int = 1) -> None:
    """Arrivals of back-to-back batches at ``mbps``."""
    for _ in range(batches):
        nbytes = SAMPLES * 8000
        ctl.observe_rate(nbytes, nbytes * 8 / (mbps * 1e6))


def decide(ctl: RateController, clock: Clock, backlog: float = 0.0, times: int = 1) -> list[int]:
    return [ctl.choose(SAMPLES, backlog, clock()).bits for _ in range(times)]


def test_a_fast_link_gets_the_best_fidelity():
    ctl, clock = RateController(profile(), slo_s=1.0), Clock()
    assert decide(ctl, clock) == [8]  # nothing measured yet: start at the top
    feed(ctl, 50.0, 5)
    assert decide(ctl, clock, times=5) == [8] * 5


def test_a_rate_drop_moves_it_down_within_one_batch_of_the_measurement():
    ctl, clock = RateController(profile(), slo_s=1.0), Clock()
    feed(ctl, 50.0, 5)
    assert decide(ctl, clock, times=3) == [8, 8, 8]
    # one slow arrival: the harmonic mean lets it weigh, the estimate falls to a fraction ...
    feed(ctl, 0.5, 1)
    assert ctl.rate_bps < 0.1 * 50e6 / 8
    # ... where 8 bits at 100 samples/s (0.8 MB/s) no longer fits even with an empty queue
    assert ctl.rate_bps * (1 + ctl.gain) < 100 * 8000
    assert decide(ctl, clock)[0] < 8


def test_a_backlog_beyond_the_budget_lowers_the_setting_before_latency_shows_it():
    ctl, clock = RateController(profile(), slo_s=1.0), Clock()
    feed(ctl, 8.0, 5)  # 1 MB/s: 8 bits at 0.8 MB/s fits when the link is clear ...
    assert decide(ctl, clock, times=3) == [8, 8, 8]
    assert decide(ctl, clock, backlog=900_000)[0] < 8  # ... not with 0.9 s of bytes waiting


def test_a_rate_rise_moves_it_up_only_after_the_hysteresis():
    ctl, clock = RateController(profile(), slo_s=1.0, hysteresis=3), Clock()
    decide(ctl, clock, times=2)
    feed(ctl, 0.1, 5)  # a very slow link: down to the bottom
    assert decide(ctl, clock, backlog=10_000) == [2]
    feed(ctl, 50.0, 5)  # the link is fast again
    assert decide(ctl, clock, times=3) == [2, 2, 3]  # two decisions wait; then up one step only
    assert decide(ctl, clock, times=3) == [3, 3, 4]
    assert ctl.changes == 3


def test_latency_near_the_slo_steps_down_even_when_the_rate_looks_fine():
    ctl, clock = RateController(profile(), slo_s=1.0), Clock()
    feed(ctl, 50.0, 5)
    for _ in range(5):
        ctl.observe_latency(0.1, link_s=0.01)  # the usual: well within the SLO
    assert decide(ctl, clock, times=2) == [8, 8]
    ctl.observe_latency(0.95, link_s=0.01)  # a queue somewhere the rate does not show
    assert decide(ctl, clock) == [6]
    assert decide(ctl, clock) == [6]  # fresh measurements are awaited before another step


@pytest.mark.parametrize("allowed", [(6, 3), (8,), (4, 2)])
def test_it_never_picks_a_setting_outside_the_allowed_bits(allowed):
    rng = random.Random(1)
    ctl = RateController(profile(), slo_s=0.5, allowed_bits=allowed, hysteresis=2)
    t = 0.0
    for _ in range(500):
        feed(ctl, rng.choice([0.05, 0.5, 2, 10, 80]), rng.randint(0, 2))
        if rng.random() < 0.3:
            ctl.observe_latency(rng.uniform(0, 1))
        t += rng.uniform(0.001, 0.2)
        setting = ctl.choose(rng.randint(1, 8), rng.choice([0, 5e3, 5e4, 5e5]), t)
        assert setting.bits in allowed
    with pytest.raises(ValueError, match="no setting"):
        RateController(profile(), slo_s=1.0, allowed_bits=(5,))


def test_a_setting_that_costs_more_for_less_fidelity_is_never_on_the_ladder():
    ladder = {**LADDER, 3: (6000, 0.95)}  # 3 bits here is worse than 6 bits in both respects
    ctl = RateController(profile(ladder), slo_s=1.0)
    assert [e.setting.bits for e in ctl.ladder] == [8, 6, 4, 2]
    ctl = RateController(profile(), slo_s=1.0)
    assert [e.setting.bits for e in ctl.ladder] == [8, 6, 4, 3, 2]


def test_settings_below_the_fidelity_floor_are_never_on_the_ladder():
    ctl = RateController(profile(), slo_s=1.0, min_fidelity=0.9)
    assert [e.setting.bits for e in ctl.ladder] == [8, 6, 4, 3]  # 2 bits keeps 0.87
    clock = Clock()
    decide(ctl, clock)  # the first decision, before any rate is known, stays at the top
    feed(ctl, 0.05, 5)  # far too slow for anything: the floor still holds
    assert decide(ctl, clock, backlog=1e6, times=3) == [3, 3, 3]
    # a floor above every setting keeps the best one
    assert [e.setting.bits for e in RateController(profile(), 1.0, min_fidelity=1.1).ladder] == [8]


def test_profiles_round_trip_through_json(tmp_path):
    p = profile()
    path = save_profiles(
        [p, RateProfile("demo", "layer2", "agreement", 8, "x", p.entries)], tmp_path / "p.json"
    )
    back = load_profile(path, "demo", "layer1")
    assert back == p
    with pytest.raises(ValueError, match="no profile for demo@layer9"):
        load_profile(path, "demo", "layer9")


def test_the_per_batch_overhead_is_learned_from_what_batches_really_cost():
    ctl = RateController(profile(), slo_s=1.0, overhead_bytes=0.0)
    for _ in range(30):  # two 8-bit samples and 1,500 bytes of columns, headers and tables
        ctl.observe_batch(CodecSettings(8), 2, 2 * 8000 + 1500)
    assert ctl.overhead_bytes == pytest.approx(1500, rel=0.01)
    ctl.observe_batch(CodecSettings(5), 2, 10**6)  # not on the ladder: ignored
    assert ctl.overhead_bytes == pytest.approx(1500, rel=0.01)


# ------------------------------------------------------------------ arrivals (no Ray)
def test_arrival_patterns_keep_the_mean_rate():
    from pipeline.stream.data import arrival_offsets

    steady = arrival_offsets(400, 100.0)
    assert steady[0] == 0.0 and steady[-1] == pytest.approx(3.99)
    poisson = arrival_offsets(4000, 100.0, "poisson", seed=1)
    assert (poisson[1:] >= poisson[:-1]).all() and poisson[-1] == pytest.approx(40.0, rel=0.1)
    bursty = arrival_offsets(400, 100.0, "bursty", period_s=1.0, duty=0.25)
    gaps = bursty[1:] - bursty[:-1]
    # 100 samples per 1 s period, all within its first 0.25 s (at 400/s), then 0.75 s of silence
    assert gaps.min() == pytest.approx(0.0025) and gaps.max() == pytest.approx(0.7525)
    assert bursty[100] == pytest.approx(1.0) and bursty[99] == pytest.approx(0.2475)
    with pytest.raises(ValueError, match="data.arrival"):
        arrival_offsets(3, 1.0, "nosuch")


# ------------------------------------------------------------------ evaluate --profile (no Ray)
def test_evaluate_writes_a_profile_the_stream_loads(tmp_path, torch_one_thread):
    from pipeline.evaluation.evaluate import main

    out = tmp_path / "profile.json"
    argv = ["--model", "digits-resnet", "--split", "layer1", "--bits", "8,4,2", "--samples", "32"]
    assert main([*argv, "--quiet", "--profile", str(out)]) == 0
    prof = load_profile(out, "digits-resnet", "layer1")
    assert prof.samples == 32 and prof.metric == "agreement" and prof.source.startswith("offline")
    assert {(e.setting.bits, e.setting.axis, e.setting.clip) for e in prof.entries} == {
        (b, a, c) for b in (8, 4, 2) for a in (None, 0) for c in (None, "mse") if b < 8 or c is None
    }
    per_tensor = {
        e.setting.bits: e for e in prof.entries if e.setting.axis is None and e.setting.clip is None
    }
    clipped = {e.setting.bits: e for e in prof.entries if e.setting.clip and e.setting.axis is None}
    assert clipped[2].error < per_tensor[2].error  # at 2 bits the clipped range keeps more
    assert per_tensor[8].bytes_per_sample > per_tensor[4].bytes_per_sample
    assert per_tensor[4].bytes_per_sample > per_tensor[2].bytes_per_sample
    assert per_tensor[8].fidelity >= per_tensor[2].fidelity and per_tensor[8].error < 0.01
    with pytest.raises(ValueError, match="no profile for digits-resnet@layer2"):
        load_profile(out, "digits-resnet", "layer2")


# ------------------------------------------------------------------ the stream (shared local Ray)
def _inputs_and_features(cfg, ids):
    """The stream's inputs for ``ids`` and the tiny head's features, computed in-process."""
    import torch
    from tiny_stream import tiny_factory

    from pipeline.stream.data import SampleSource, resolve_source

    spec = resolve_source(cfg.data.source, cfg.model.name, cfg.data.shape, None, cfg.seed)
    x, _ = SampleSource(spec).get(list(ids))
    head, tail = tiny_factory()
    with torch.inference_mode():
        return x, head(torch.from_numpy(x)).numpy(), tail


@pytest.mark.parametrize("clip", [None, "mse"])
def test_fixed_mode_codes_exactly_as_before(ray_local, clip):
    """rate.mode=fixed (the default): every batch is coded with codec.* as the stream always did:
    the same payload bytes and agreement as coding the same batches in-process."""
    import torch
    from tiny_stream import tiny_config, tiny_factory

    from pipeline.stream.wire import decode_tensor, encode_tensor
    from splitstream.runner import run_pipeline

    cfg = tiny_config(
        "samples=96", "codec.kind=ours", "codec.bits=4", "link.profile=100mbit",
        "batching.min_batch_size=16", "batching.max_batch_size=16",
        "fidelity.reference_samples=96", f"codec.clip={'null' if clip is None else clip}",
    )  # fmt: skip
    assert cfg.rate.mode == "fixed"
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    label = "4b/L3/tensor" + ("" if clip is None else "/mse")
    assert rep["delivered"] == 96 and rep["settings_histogram"] == {label: 96}
    assert rep["slo_met_ratio"] is None and rep["rate"]["mode"] == "fixed"
    _, feats, tail = _inputs_and_features(cfg, range(96))
    payload, same = 0, 0
    with torch.inference_mode():
        for k in range(0, 96, 16):
            frame = encode_tensor(feats[k : k + 16], "ours", CodecSettings(4, clip=clip))
            payload += len(frame)
            ref = tail(torch.from_numpy(feats[k : k + 16])).argmax(-1)
            out = tail(torch.from_numpy(decode_tensor(frame))).argmax(-1)
            same += int((ref == out).sum())
    assert rep["payload_bytes"] == payload
    assert rep["fidelity"]["agreement"] == pytest.approx(same / 96)


def test_adaptive_stream_on_a_stepping_link(ray_local):
    """An adaptive stream of a paced, bursty source on the step trace: it builds its profile at
    start-up, changes settings within rate.bits, and reports the SLO and its timeline."""
    from tiny_stream import tiny_config, tiny_factory

    from splitstream.runner import run_pipeline

    cfg = tiny_config(
        "samples=600", "codec.kind=ours", "link.profile=steps-trace", "data.rate_sps=150",
        "data.arrival=bursty", "data.burst_period_s=1.0", "data.burst_duty=0.5",
        "rate.mode=adaptive", "rate.latency_slo_ms=1000", "rate.bits=[8,4,2]",
        "rate.profile_samples=32", "fidelity.reference_samples=64",
    )  # fmt: skip
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    assert rep["status"] == "completed" and rep["delivered"] == 600 and rep["lost"] == 0
    hist = rep["settings_histogram"]
    assert sum(hist.values()) == 600 and {k.split("b/")[0] for k in hist} <= {"8", "4", "2"}
    r = rep["rate"]
    assert r["mode"] == "adaptive" and r["profile_source"].startswith("start-up")
    assert r["latency_slo_ms"] == 1000 and 0.0 <= rep["slo_met_ratio"] <= 1.0
    assert len(rep["timeline"]["bits"]) == len(rep["timeline"]["t"]) > 10
    assert set(rep["timeline"]["bits"]) - {None} <= {8, 4, 2}
    # a burst of 300 samples/s for 0.5 s: the source really paced its samples that way
    assert rep["elapsed_s"] >= 3.5
