"""The autoscaling cloud pool (`replicas.tail: {min, max}`): its policy on a fake clock, its config, and
streams whose load steps up and down, with replicas that start, drain and leave, delivering every
sample exactly once."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pytest
import ray.cloudpickle
from tiny_stream import tiny_config, tiny_factory

from pipeline.stream.autoscale import PoolAutoscaler, PoolScaler
from pipeline.stream.config import ConfigError
from pipeline.stream.data import arrival_offsets
from splitstream.runner import run_pipeline

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass
class FakeReplica:
    state: str = "up"
    load: int = 0
    since: float = 0.0


class TestPoolScaler:
    def test_grows_only_when_the_demand_persists(self):
        sc = PoolScaler(1, 4, target_calls=2.0, up_after_s=1.0, down_after_s=8.0)
        assert sc.decide(0.0, 9, 1) == 1  # no history yet
        assert sc.decide(0.5, 9, 1) == 1
        assert sc.decide(0.9, 0, 1) == 1  # a lull inside the window: no evidence yet
        assert sc.decide(1.5, 9, 1) == 1  # the lull at 0.9 s is still in the last second
        assert sc.decide(2.0, 9, 1) == 4  # a full second of wishes of 4 (9 calls / 2, capped)

    def test_grows_to_the_latest_wish_once_every_wish_of_the_window_exceeds_it(self):
        sc = PoolScaler(1, 8, target_calls=2.0, up_after_s=1.0)
        for t, demand in [(0.0, 6), (0.5, 3), (1.0, 12)]:
            size = sc.decide(t, demand, 1)
        assert size == 6  # wishes 3, 2, 6 over the last second: all above 1, and 6 now
        assert sc.decide(1.0, 3, 2) == 2  # a wish of 2 at this size is no evidence

    def test_shrinks_slowly_to_what_the_average_demand_asks_for(self):
        sc = PoolScaler(1, 4, target_calls=2.0, up_after_s=1.0, down_after_s=8.0)
        # a burst of 8 calls for one second at 3 s: the average over 8 s is 15/8 calls, one replica
        sizes = [sc.decide(float(t), 8 if t == 3 else 1, 4) for t in range(14)]
        assert sizes[:8] == [4] * 8  # the first 8 s are not yet evidence
        assert sizes[8:] == [1] * 6

    def test_peaks_that_the_average_absorbs_do_not_hold_replicas(self):
        # four edges, one replica's worth of work: a call from each now and then (demand 4 for a
        # tenth of the time, 1 otherwise) averages 1.3 calls, so the pool goes down to 1
        sc = PoolScaler(1, 4, target_calls=2.0, up_after_s=1.0, down_after_s=8.0)
        sizes = [sc.decide(t / 10, 4 if t % 10 == 0 else 1, 3) for t in range(0, 90)]
        assert sizes[:80] == [3] * 80 and sizes[-1] == 1

    def test_a_busy_average_holds_the_pool(self):
        sc = PoolScaler(1, 4, target_calls=2.0, up_after_s=1.0, down_after_s=8.0)
        # 5 calls on average (wish 3) for a pool of 3: no shrink however long it lasts
        assert {sc.decide(t / 2, 4 if t % 2 else 6, 3) for t in range(60)} == {3}

    def test_the_average_weighs_each_sample_by_how_long_it_held(self):
        sc = PoolScaler(1, 4, down_after_s=4.0)
        for t, d in [(0.0, 8), (1.0, 0), (4.0, 0)]:
            sc.decide(t, d, 4)
        assert sc.mean_demand(4.0) == pytest.approx((8 * 1.0 / 4.0, 0.0))
        assert sc.mean_demand(5.0) == (0.0, 0.0)  # the 8 held from 0 to 1 s, outside [1, 5]

    def test_busy_replicas_hold_the_pool_though_few_calls_wait(self):
        # 4 replicas, 2.8 of them busy on average and little waiting: 3 calls on average would ask
        # for 2 replicas at 2 calls each, but 2.8 busy over 0.75 needs 4
        sc = PoolScaler(1, 4, target_calls=2.0, up_after_s=1.0, down_after_s=8.0)
        sizes = [sc.decide(t / 10, 3, 4, running=2.8) for t in range(120)]
        assert set(sizes) == {4}
        sc = PoolScaler(1, 4, target_calls=2.0, up_after_s=1.0, down_after_s=8.0)
        sizes = [sc.decide(t / 10, 1, 4, running=0.6) for t in range(90)]
        assert sizes[-1] == 1  # one replica busy 60 % of the time: the pool goes down to 1

    def test_keeps_within_its_bounds(self):
        sc = PoolScaler(2, 3, up_after_s=0.1, down_after_s=0.1)
        assert sc.decide(0.0, 0, 1) == 2  # below min: up at once
        assert sc.decide(0.0, 0, 5) == 3  # above max: down at once
        assert sc.wish(1000) == 3 and sc.wish(0) == 2

    def test_restart_forgets_the_evidence(self):
        sc = PoolScaler(1, 4, up_after_s=1.0)
        sc.decide(0.0, 9, 1)
        sc.decide(1.0, 9, 1)
        sc.restart(1.0)
        assert sc.decide(1.5, 9, 2) == 2  # half a second of new evidence is not enough
        assert sc.decide(2.0, 9, 2) == 4

    def test_bad_bounds_are_refused(self):
        with pytest.raises(ValueError, match="min 3, max 2"):
            PoolScaler(3, 2)


class TestPoolAutoscaler:
    def _pool(self, **kw) -> PoolAutoscaler:
        sc = PoolScaler(1, 4, target_calls=1.0, up_after_s=1.0, down_after_s=1.0)
        return PoolAutoscaler("tail", sc, **kw)

    def test_grow_is_the_missing_replicas(self):
        pool, reps = self._pool(), [FakeReplica(load=2)]
        assert pool.tick(0.0, 0.0, 3, reps).grow == 0
        moves = pool.tick(1.0, 1.0, 3, reps)
        assert moves.grow == 2 and not moves.drain
        assert pool.events[-1] == {"t": 1.0, "event": "grow", "size": 1, "to": 3, "demand": 3}

    def test_starting_replicas_leave_first_then_the_least_loaded_newest(self):
        pool = self._pool()
        reps = [FakeReplica(load=1), FakeReplica(load=0), FakeReplica(load=0),
                FakeReplica("starting")]  # fmt: skip
        pool.tick(0.0, 0.0, 1, reps)
        moves = pool.tick(1.0, 1.0, 1, reps)
        assert moves.drain == [3, 2, 1]  # down to the wish of 1: the loaded replica stays

    def test_a_drained_replica_retires_when_idle_or_after_drain_s(self):
        pool = self._pool(drain_s=5.0)
        reps = [FakeReplica(), FakeReplica("draining", load=0, since=0.0),
                FakeReplica("draining", load=2, since=0.0)]  # fmt: skip
        assert pool.tick(1.0, 1.0, 1, reps).retire == [1]
        reps[1].state = "retired"
        moves = pool.tick(5.0, 5.0, 1, reps)
        assert moves.retire == [2]
        assert pool.events[-1]["event"] == "killed while draining" and pool.events[-1]["calls"] == 2

    def test_a_replica_that_never_starts_retires_and_growth_backs_off(self):
        pool = self._pool(start_timeout_s=10.0)
        reps = [FakeReplica(load=5), FakeReplica("starting", since=0.0)]
        assert pool.tick(10.0, 10.0, 5, reps).retire == [1]
        reps[1].state = "retired"
        assert pool.tick(11.0, 11.0, 5, reps).grow == 0  # no room: not again before 20 s
        assert pool.tick(20.5, 20.5, 5, reps).grow == 3
        assert [e["event"] for e in pool.events] == ["did not start", "grow"]

    def test_summary_counts_the_pool(self):
        pool = self._pool()
        reps = [FakeReplica(), FakeReplica("retired"), FakeReplica("starting")]
        pool.tick(0.0, 0.0, 1, reps)
        s = pool.summary(reps)
        assert (s["min"], s["max"], s["final"], s["started"], s["peak"]) == (1, 4, 2, 3, 2)


class TestConfig:
    def test_a_pool_size_is_a_count_or_min_max(self):
        cfg = tiny_config("replicas.tail={min: 2, max: 5}", "replicas.decoder=3")
        assert cfg.replicas.bounds("tail") == (2, 5) and cfg.replicas.bounds("decoder") == (3, 3)
        assert cfg.replicas.autoscaling and not tiny_config().replicas.autoscaling

    @pytest.mark.parametrize(
        "override, match",
        [
            ("replicas.tail={min: 5, max: 4}", r"replicas.tail.*min \(5\) is larger than max \(4\)"),
            ("replicas.tail={min: 1, max: 65}", r"replicas.tail.*max: .*less than or equal to 64"),
            ("replicas.tail={min: 1, most: 3}", r"replicas.tail.*most: Extra inputs"),
            ("replicas.decoder=0", r"replicas.decoder.*a replica count \(1 to 64\) or \{min, max\}"),
            ("replicas.autoscale.up_after_s=0", r"replicas.autoscale.up_after_s"),
            ("data.arrival=steps", r"data.load_steps"),
            ("data.load_steps=[[0, 1]]", r"data.load_steps"),
            ("data.load_steps=[[1, 1]]", r"data.load_steps.*first step starts at 0"),
            ("data.load_steps=[[0, 1], [0, 2]]", r"data.load_steps.*must increase"),
            ("data.load_steps=[[0, 0]]", r"data.load_steps.*positive"),
        ],
    )
    def test_bad_settings_name_the_key(self, override, match):
        with pytest.raises(ConfigError, match=match):
            tiny_config(override)

    def test_steps_need_a_paced_rate(self):
        with pytest.raises(ConfigError, match="data.rate_sps"):
            tiny_config("data.arrival=steps", "data.load_steps=[[0, 1], [2, 4]]")

    def test_step_arrivals_follow_the_schedule(self):
        t = arrival_offsets(100, 10.0, "steps", steps=[(0.0, 1.0), (2.0, 4.0), (4.0, 1.0)])
        gaps = np.diff(t)
        assert gaps[:19] == pytest.approx(0.1) and gaps[20:99] == pytest.approx(0.025)
        assert t[20] == pytest.approx(2.0) and t[-1] == pytest.approx(3.975)
        more = arrival_offsets(110, 10.0, "steps", steps=[(0.0, 1.0), (2.0, 4.0), (4.0, 1.0)])
        assert np.diff(more)[-5:] == pytest.approx(0.1)  # back to 1x after 4 s


# ------------------------------------------------------------------ streams on Ray
STEP_UP_S, STEP_DOWN_S = 6.0, 14.0


def _stepped(*extra: str) -> dict:
    """One edge whose paced load steps from 50 to 200 samples/s and back, into a tail bound by a
    simulated accelerator of 10 ms a sample (about 100 samples/s a replica)."""
    cfg = tiny_config(
        "samples=2900", "codec.kind=fp16", "fidelity.reference_samples=0",
        "model.tail_device_ms=10", "batching.max_batch_size=8", "data.rate_sps=50",
        "data.arrival=steps", f"data.load_steps=[[0, 1], [{STEP_UP_S}, 4], [{STEP_DOWN_S}, 1]]",
        "link.profile=unlimited", *extra,
    )  # fmt: skip
    return run_pipeline(cfg, progress=False, factory=tiny_factory)


def _first(times: list, values: list, pred, after: float) -> float | None:
    return next((t for t, v in zip(times, values, strict=True) if t >= after and pred(v)), None)


@pytest.mark.long
def test_the_pool_grows_with_the_load_and_shrinks_after_it(ray_local):
    rep = _stepped("replicas.tail={min: 1, max: 4}")
    assert rep["delivered"] == 2900 and rep["lost"] == 0 and rep["duplicated"] == 0
    pool = rep["pools"]["decoder+tail+sink"]
    assert pool["min"] == 1 and pool["max"] == 4 and pool["peak"] >= 3 and pool["final"] == 1
    tl = rep["timeline"]
    up = _first(tl["t"], tl["replicas"], lambda n: n is not None and n >= 3, STEP_UP_S)
    assert up is not None and up - STEP_UP_S <= 10.0  # serving within 10 s of the step up
    down = _first(tl["t"], tl["replicas"], lambda n: n == 1, up)
    assert down is not None and down - STEP_DOWN_S <= 30.0
    assert tl["replicas"][0] == 1 and max(v for v in tl["replicas"] if v) == pool["peak"]
    kinds = [e["event"] for e in pool["events"]]
    assert "grow" in kinds and "shrink" in kinds and "killed while draining" not in kinds
    assert rep["stages"]["tail"]["replicas"] == pool["started"] >= 3
    ready = [e for e in pool["events"] if e["event"] == "ready"]
    assert len(ready) == pool["started"] - 1 and all(e["after_s"] > 0 for e in ready)


@pytest.mark.long
def test_replicas_removed_while_holding_batches_cost_a_replay_not_a_sample(ray_local, monkeypatch):
    """The policy drains the least loaded replica, so it rarely leaves with calls: here it is made to
    drain a busy one, once, with no time to finish (drain_s=0): the executor kills it holding them."""
    chosen: list[int] = []
    tick = PoolAutoscaler.tick

    def drain_a_busy_one(self, now, t, demand, replicas, running=None):
        moves = tick(self, now, t, demand, replicas, running)
        busy = [i for i, r in enumerate(replicas) if r.state == "up" and r.load >= 2]
        up = sum(r.state == "up" for r in replicas)
        if not chosen and busy and up >= 2 and not moves.drain:
            chosen.append(busy[0])
            moves.drain = [busy[0]]
        return moves

    monkeypatch.setattr(PoolAutoscaler, "tick", drain_a_busy_one)
    rep = _stepped("replicas.tail={min: 1, max: 4}", "replicas.autoscale.drain_s=0",
                   "flow.per_replica_inflight=4")  # fmt: skip
    assert chosen and rep["delivered"] == 2900 and rep["lost"] == 0 and rep["duplicated"] == 0
    events = rep["pools"]["decoder+tail+sink"]["events"]
    killed = [e for e in events if e["event"] == "killed while draining"]
    assert len(killed) == 1 and killed[0]["calls"] >= 2
    assert rep["replayed_batches"] >= killed[0]["calls"]
    assert rep["restarts"] == 0  # it left the pool for good: not restarted
