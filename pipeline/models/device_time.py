"""A simulated accelerator for scale-out tests: a head or tail whose every batch takes a set time per
sample, spent waiting rather than computing, as a host waits on a GPU kernel.

``model.head_device_ms`` / ``model.tail_device_ms`` wrap the split's halves in :class:`DeviceTime`:
the module still runs (on the CPU, so its outputs are real), and the call then sleeps until
``ms x batch size`` has passed since it began. Where the CPU part is small next to that time, the
stage is bound by the simulated device, not by this machine's cores, so adding replicas on other
(simulated) nodes adds throughput as real accelerators would. Reports say when figures were measured
this way (``model.simulated_device_ms``).
"""

from __future__ import annotations

import time
from typing import Any

from torch import nn


def batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Samples in a call: the length of its first argument with one (a tensor, or a dict's first
    tensor, as text models take)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, dict):
            value = next(iter(value.values()), None)
        if hasattr(value, "shape") and len(value.shape) > 0:
            return int(value.shape[0])
    return 1


class DeviceTime(nn.Module):
    """``inner`` whose forward takes at least ``ms_per_sample`` per sample of the batch."""

    def __init__(self, inner: nn.Module, ms_per_sample: float) -> None:
        super().__init__()
        if ms_per_sample < 0:
            raise ValueError(f"ms_per_sample must be >= 0, got {ms_per_sample}")
        self.inner = inner
        self.ms_per_sample = float(ms_per_sample)
        self.clock = time.perf_counter
        self.sleep = time.sleep

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        t0 = self.clock()
        out = self.inner(*args, **kwargs)
        wait = self.ms_per_sample * batch_size(args, kwargs) / 1000.0 - (self.clock() - t0)
        if wait > 0:
            self.sleep(wait)
        return out


def simulated_halves(
    factory: Any, head_ms: float | None, tail_ms: float | None
) -> tuple[nn.Module, nn.Module]:
    """``factory()``'s ``(head, tail)``, each wrapped in :class:`DeviceTime` where its time is set
    (use with ``functools.partial`` to keep the factory picklable)."""
    head, tail = factory()
    if head_ms is not None:
        head = DeviceTime(head, head_ms)
    if tail_ms is not None:
        tail = DeviceTime(tail, tail_ms)
    return head, tail
