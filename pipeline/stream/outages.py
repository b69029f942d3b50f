"""Outages of the emulated link: the configured ``(start_s, duration_s)`` down windows checked
(:func:`check_outages`), placed on the link's clock (:class:`OutageSchedule`, which the link's
timing model in :mod:`pipeline.stream.link` consults), and their overlap with an idle spell
(:func:`outage_overlap`)."""

from __future__ import annotations

import math


def check_outages(value: object, key: str = "link.outages") -> tuple[tuple[float, float], ...]:
    """``value`` as a tuple of ``(start_s, duration_s)`` pairs: ``start >= 0``, ``duration > 0``,
    sorted by start and not overlapping (a window may begin where the one before ends). Raises
    ``ValueError`` naming ``key`` and the bad entry."""
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ValueError(f"{key} must be a list of [start_s, duration_s] pairs, got {value!r}")
    out: list[tuple[float, float]] = []
    for i, pair in enumerate(value):
        if isinstance(pair, str | bytes) or not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"{key}[{i}] must be a [start_s, duration_s] pair, got {pair!r}")
        for x in pair:
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
                raise ValueError(f"{key}[{i}] must hold finite numbers, got {pair!r}")
        start, dur = float(pair[0]), float(pair[1])
        if start < 0:
            raise ValueError(f"{key}[{i}]: start_s must be >= 0, got {pair[0]!r}")
        if dur <= 0:
            raise ValueError(f"{key}[{i}]: duration_s must be > 0, got {pair[1]!r}")
        if out and start < out[-1][0] + out[-1][1]:
            a, d = out[-1]
            raise ValueError(
                f"{key}[{i}] starts at {start:g} s, before {key}[{i - 1}] ({a:g} s + {d:g} s) "
                "ends: outages must be sorted and must not overlap"
            )
        out.append((start, dur))
    return tuple(out)


class OutageSchedule:
    """Down windows ``[a, b)`` on the link's clock (absolute seconds), in order. Pure functions of
    time; an empty schedule is never down."""

    def __init__(self, windows: list[tuple[float, float]] | tuple[tuple[float, float], ...] = ()):
        self.windows = [(float(a), float(b)) for a, b in windows]

    @classmethod
    def relative(cls, outages: tuple[tuple[float, float], ...], origin: float) -> OutageSchedule:
        """The windows of ``(start_s, duration_s)`` pairs counted from ``origin``."""
        return cls([(origin + s, origin + s + d) for s, d in outages])

    def up_at(self, t: float) -> float:
        """The first time at or after ``t`` when the link is up."""
        for a, b in self.windows:
            if a <= t < b:
                return b
        return t

    def down_between(self, t0: float, t1: float) -> float:
        """Seconds of ``[t0, t1]`` the link is down."""
        return sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in self.windows)

    def advance(self, t: float, up_s: float) -> float:
        """The time at which the link has been up for ``up_s`` seconds since ``t`` (the windows
        in between are skipped: a transmission pauses over them)."""
        t = self.up_at(t)
        for a, b in self.windows:
            if b <= t:
                continue
            if t + up_s <= a:
                break
            up_s -= a - t
            t = b
        return t + up_s

    def arrival(self, done: float, arrival: float) -> float:
        """The arrival of a payload whose last byte left at ``done`` and would arrive at
        ``arrival``: a window that starts while it propagates makes it arrive that much after the
        window's end (its packets in flight are sent again)."""
        delay = arrival - done
        for a, b in self.windows:
            if done <= a < arrival:
                done, arrival = b, b + delay
        return arrival


def outage_overlap(
    windows: list[list[float]] | list[tuple[float, float]], t0: float, t1: float
) -> float:
    """Seconds of ``[t0, t1]`` covered by any of ``windows`` (``[start, end]`` pairs on one clock,
    which may overlap one another, e.g. several edges' outages): the part of an idle spell that a
    configured outage explains."""
    spans = sorted((max(float(a), t0), min(float(b), t1)) for a, b in windows)
    total, reach = 0.0, t0
    for a, b in spans:
        a = max(a, reach)
        if b > a:
            total += b - a
            reach = b
    return total
