"""The simulated accelerator (`model.head_device_ms`, `model.tail_device_ms`): fake clocks for the
wrapper, one short stream for the wiring and the report's label."""

from __future__ import annotations

import sys

import pytest
import ray.cloudpickle
import torch
from tiny_stream import tiny_config, tiny_factory
from torch import nn

from pipeline.models.device_time import DeviceTime, batch_size, simulated_halves
from pipeline.stream.config import ConfigError
from pipeline.stream.report import format_report, run_title
from splitstream.runner import run_pipeline

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class FakeClock:
    def __init__(self, cpu_s: float) -> None:
        self.now, self.cpu_s, self.slept = 0.0, cpu_s, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


class Costly(nn.Module):
    """Identity that advances a fake clock as if computing took ``cpu_s``."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def forward(self, x):
        self.clock.now += self.clock.cpu_s
        return x


class TestDeviceTime:
    def _wrapped(self, ms: float, cpu_s: float) -> tuple[DeviceTime, FakeClock]:
        clock = FakeClock(cpu_s)
        m = DeviceTime(Costly(clock), ms)
        m.clock, m.sleep = clock, clock.sleep
        return m, clock

    def test_a_batch_takes_the_device_time_of_its_samples(self):
        m, clock = self._wrapped(3.0, cpu_s=0.010)
        x = torch.zeros(32, 4)
        assert m(x) is x  # the module's own output
        assert clock.now == pytest.approx(0.096)  # 32 x 3 ms, the CPU's 10 ms inside it
        assert clock.slept == [pytest.approx(0.086)]

    def test_a_slower_cpu_part_is_not_padded(self):
        m, clock = self._wrapped(1.0, cpu_s=0.5)
        m(torch.zeros(8, 2))
        assert clock.slept == [] and clock.now == pytest.approx(0.5)

    def test_batch_size_of_tensors_and_text_inputs(self):
        assert batch_size((torch.zeros(5, 3),), {}) == 5
        assert batch_size((), {"input_ids": torch.zeros(7, 9)}) == 7
        assert batch_size(({"input_ids": torch.zeros(4, 2)},), {}) == 4

    def test_only_the_sides_set_are_wrapped(self):
        head, tail = simulated_halves(tiny_factory, None, 2.0)
        assert not isinstance(head, DeviceTime) and isinstance(tail, DeviceTime)
        assert tail.ms_per_sample == 2.0

    def test_bad_values_are_refused(self):
        with pytest.raises(ValueError, match="ms_per_sample"):
            DeviceTime(nn.Identity(), -1)
        with pytest.raises(ConfigError, match="model.tail_device_ms"):
            tiny_config("model.tail_device_ms=-3")


def test_a_stream_with_a_simulated_tail_is_bound_by_it_and_says_so(ray_local):
    cfg = tiny_config("samples=96", "model.tail_device_ms=5", "batching.max_batch_size=16",
                      "link.profile=unlimited", "fidelity.reference_samples=0")  # fmt: skip
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    assert rep["delivered"] == 96 and rep["lost"] == 0
    assert rep["model"]["simulated_device_ms"] == {"head": None, "tail": 5.0}
    assert rep["stages"]["tail"]["busy_s"] >= 96 * 0.005  # every batch held for its device time
    assert "SIMULATED accelerator: tail 5 ms/sample" in run_title(rep)
    assert "SIMULATED accelerator" in format_report(rep)
