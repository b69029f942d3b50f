"""Regenerate the small sample Mahimahi traces in this directory (deterministic).

Usage: ``python pipeline/stream/traces/make_traces.py``. Each trace line is the time in ms (since the
start) of one 1500-byte delivery opportunity; the trace loops with the last timestamp as period.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PACKET_BITS = 1500 * 8


def constant(mbps: float, duration_ms: int) -> list[int]:
    """Evenly spaced opportunities for a fixed rate."""
    count = round(mbps * 1e6 * duration_ms / 1e3 / PACKET_BITS)
    return [max(1, round((i + 1) * duration_ms / count)) for i in range(count)]


def random_walk(
    mean_mbps: float, low: float, high: float, duration_ms: int, step_ms: int, seed: int
) -> list[int]:
    """Rate that changes every ``step_ms`` by a bounded random walk around ``mean_mbps``."""
    rng = np.random.default_rng(seed)
    times: list[int] = []
    rate = mean_mbps
    carry = 0.0
    for start in range(0, duration_ms, step_ms):
        rate = float(np.clip(rate + rng.normal(0.0, 0.25 * mean_mbps), low, high))
        rate += 0.2 * (mean_mbps - rate)  # pull back toward the mean
        per_ms = rate * 1e3 / PACKET_BITS  # opportunities per millisecond
        for ms in range(start + 1, start + step_ms + 1):
            carry += per_ms
            whole = int(carry)
            carry -= whole
            times.extend([ms] * whole)
    if not times or times[-1] != duration_ms:
        times.append(duration_ms)
    return times


def steps(levels_mbps: list[float], step_ms: int) -> list[int]:
    """A rate that holds each of ``levels_mbps`` for ``step_ms``, one after the other."""
    times: list[int] = []
    for k, mbps in enumerate(levels_mbps):
        times += [k * step_ms + t for t in constant(mbps, step_ms)]
    return times


def write(name: str, times: list[int]) -> None:
    (HERE / name).write_text("".join(f"{t}\n" for t in times))
    mbps = len(times) * PACKET_BITS / (times[-1] / 1e3) / 1e6
    print(f"{name}: {len(times)} opportunities over {times[-1]} ms, mean {mbps:.2f} Mbit/s")


def main() -> None:
    write("constant_12mbps.trace", constant(12.0, 1000))
    write("constant_1200kbps.trace", constant(1.2, 1000))
    write("lte_uplink.trace", random_walk(8.0, 1.5, 16.0, 10_000, 100, seed=7))
    write("steps_uplink.trace", steps([10.0, 3.0, 6.0, 1.5, 12.0], 3_000))


if __name__ == "__main__":
    main()
