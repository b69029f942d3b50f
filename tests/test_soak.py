"""Soak: a paced stream while a chaos monkey SIGKILLs a random stage actor every 8-12 s. Every
sample is delivered exactly once (report and output file) and the driver's memory stays flat.
This is the short version (``SPLITSTREAM_SOAK_S``, default 40 s: at least two kills);
``python -m benchmarks.soak`` runs the long one (5 minutes, a kill every 30-60 s) and records it."""

from __future__ import annotations

import os
import sys

import pytest
import ray.cloudpickle
from tiny_stream import tiny_config, tiny_factory

from pipeline.stream.output import read_results
from splitstream.chaos import ChaosMonkey, stage_processes
from splitstream.runner import run_pipeline

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

SOAK_S = float(os.environ.get("SPLITSTREAM_SOAK_S", "40"))
KILL_EVERY_S = (8.0, 12.0)  # the benchmark's 30-60 s, scaled to the short run
RATE = 100  # samples/s, a live source well within what the link carries


def test_a_paced_stream_survives_a_kill_every_8_to_12_s_exactly_once(ray_local, tmp_path):
    samples = int(RATE * SOAK_S)
    out = tmp_path / "soak.parquet"
    cfg = tiny_config(
        f"samples={samples}",
        f"data.rate_sps={RATE}",
        "link.bandwidth_mbps=20",
        "batching.max_batch_size=16",
        "fidelity.reference_samples=0",
        "flow.max_restarts=50",
        f"output.path={out}",
    )
    with ChaosMonkey(every_s=KILL_EVERY_S, seed=7) as monkey:
        rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    kills = len(monkey.kills)
    # at least two kills, and one per 20 s of a longer soak (a kill due while the actors start up is
    # a miss, so 40 s leaves room for one)
    assert kills >= max(2, int(SOAK_S // 20)), monkey.kills
    assert rep["status"] == "completed" and rep["error"] is None
    assert rep["delivered"] == samples and rep["lost"] == 0 and rep["duplicated"] == 0
    assert rep["restarts"] >= kills - monkey.misses
    ids = read_results(out).column("id").to_pylist()
    assert sorted(ids) == list(range(samples)), "every sample exactly once in the output"
    assert rep["memory"]["driver_growth_after_warmup"] < 0.10, rep["memory"]


class TestChaosMonkey:
    def test_finds_and_kills_only_stage_actors(self, ray_local):
        import ray

        @ray.remote
        class Sink:  # a stand-in whose process title names a stage class
            def pid(self) -> int:
                return os.getpid()

        actor = Sink.options(max_restarts=1, max_task_retries=5).remote()
        pid = ray.get(actor.pid.remote())
        assert pid in [p.pid for _, p in stage_processes()]
        with ChaosMonkey(every_s=(0.05, 0.05), classes=("Sink",)) as monkey:
            while not monkey.kills:
                monkey.join(0.05)
        assert monkey.kills[0][1:] == ("Sink", pid)
        assert ray.get(actor.pid.remote()) != pid  # Ray restarted it in a new process

    def test_rejects_a_bad_period(self):
        with pytest.raises(ValueError, match="every_s"):
            ChaosMonkey(every_s=(0, 1))
        with pytest.raises(ValueError, match="every_s"):
            ChaosMonkey(every_s=(5, 1))
