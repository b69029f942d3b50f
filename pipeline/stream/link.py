"""Emulated edge-to-cloud link: bandwidth, propagation delay, jitter, loss and Mahimahi traces.

The model is pure bookkeeping (no sleeping, no Ray): :meth:`EmulatedLink.reserve` books the
serialization of ``nbytes`` of real payload after all earlier reservations (FIFO) and returns
when the last byte leaves the sender (``tx_done``) and when it reaches the receiver
(``arrival``). :meth:`EmulatedLink.transmit` is the asyncio wrapper that waits until
``tx_done``.

Timing model
------------
* **Bandwidth** -- a token bucket on the payload bytes: tokens accrue at ``bandwidth_mbps``
  up to a depth of one MTU; a reservation finishes when its last byte has a token, so a
  saturated link delivers exactly the configured rate.
* **Trace** -- a Mahimahi trace (one line per 1500-byte delivery opportunity, in ms since the
  start, looping with a period equal to the last timestamp) replaces the bandwidth. The trace
  clock starts when the link is created.
* **Loss** -- the payload is cut into ``mtu``-sized packets; each transmission of a packet is
  lost with probability ``loss`` and retransmitted. A retransmission costs its bytes on the
  link again and delays the arrival by one extra ``delay_ms`` per retransmission round.
* **Delay and jitter** -- ``arrival = tx_done + max(0, delay_ms + N(0, jitter_ms))``, never
  earlier than the previous arrival (deliveries stay FIFO).
* **Outages** -- ``outages`` lists ``(start_s, duration_s)`` windows, in seconds after the link's
  *origin*: the ``now`` of its first reservation (when the first batch is handed to it), on the
  link's clock. A window is down over ``[start, start + duration)``: nothing is serialized, no
  trace opportunity is used, nothing arrives. A payload being serialized pauses and resumes after
  the window with the bytes already sent kept (as a TCP connection does: the connection and its
  acknowledged bytes survive, only the unacknowledged ones are sent again), new payloads wait, and
  a payload whose propagation spans a window's start arrives one delay after its end (its packets in
  flight are sent again; their bytes are not counted twice). Nothing is lost. Not modelled: TCP's
  retransmission back-off (a real sender notices the link is back at its next, doubled, timeout:
  up to a few seconds late after a 20 s outage) and slow start.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.stream.outages import (  # outage_overlap: re-exported, as before
    OutageSchedule,
    check_outages,
    outage_overlap,  # noqa: F401
)

TRACE_PACKET_BYTES = 1500
"""Bytes one Mahimahi delivery opportunity carries."""

TRACE_DIR = Path(__file__).resolve().parent / "traces"
"""Directory of the sample traces that ship with the project."""


@dataclass(frozen=True)
class LinkSpec:
    """Parameters of an emulated link (all validated on construction)."""

    bandwidth_mbps: float | None = None  # None = unconstrained (ignored when trace is set)
    delay_ms: float = 0.0  # one-way propagation delay
    jitter_ms: float = 0.0  # std-dev of extra delay; total delay is clipped at 0
    loss: float = 0.0  # per-packet loss probability (0 <= loss < 1)
    mtu: int = 1500  # packet size used for loss accounting
    trace: str | None = (
        None  # Mahimahi trace path (absolute, or relative to pipeline/stream/traces/)
    )
    seed: int = 0  # seed of the jitter and loss random numbers
    corrupt: float = 0.0  # fault knob: probability per frame that one bit is flipped in transit
    # (start_s, duration_s) down windows, seconds after the first reservation (see the module doc)
    outages: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "outages", check_outages(self.outages))
        _check_number("bandwidth_mbps", self.bandwidth_mbps, allow_none=True, positive=True)
        _check_number("delay_ms", self.delay_ms)
        _check_number("jitter_ms", self.jitter_ms)
        _check_number("loss", self.loss)
        if not self.loss < 1.0:
            raise ValueError(f"link.loss must be in [0, 1), got {self.loss!r}")
        _check_number("corrupt", self.corrupt)
        if not self.corrupt < 1.0:
            raise ValueError(f"link.corrupt must be in [0, 1), got {self.corrupt!r}")
        if (
            isinstance(self.mtu, bool)
            or not isinstance(self.mtu, int)
            or not 64 <= self.mtu <= 65535
        ):
            raise ValueError(f"link.mtu must be an integer in [64, 65535], got {self.mtu!r}")
        if self.trace is not None and (not isinstance(self.trace, str) or not self.trace):
            raise ValueError(f"link.trace must be a path string or None, got {self.trace!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"link.seed must be an integer, got {self.seed!r}")

    @property
    def constrained(self) -> bool:
        """True when either a bandwidth or a trace limits the rate."""
        return self.bandwidth_mbps is not None or self.trace is not None


def _check_number(
    key: str, value: object, allow_none: bool = False, positive: bool = False
) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"link.{key} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"link.{key} must be > 0 (use None for unconstrained), got {value!r}")
    if value < 0:
        raise ValueError(f"link.{key} must be >= 0, got {value!r}")


# Named profiles. The numbers are the *uplink* (edge -> cloud) direction, which is the one that
# carries the features. Sources are documented in docs/readme_cluster.md:
#   3g    ~ Chrome DevTools / Lighthouse "Fast 3G" class: ~1.6 Mbit/s, ~150 ms RTT
#   lte   ~ typical measured LTE uplink (Ookla/OpenSignal medians 5-15 Mbit/s, 40-60 ms RTT)
#   wifi  ~ 802.11n/ac WLAN to a nearby access point: tens of Mbit/s, a few ms
PROFILES: dict[str, LinkSpec] = {
    "3g": LinkSpec(bandwidth_mbps=1.6, delay_ms=75.0, jitter_ms=10.0, loss=0.0),
    "lte": LinkSpec(bandwidth_mbps=10.0, delay_ms=25.0, jitter_ms=5.0, loss=0.0),
    "wifi": LinkSpec(bandwidth_mbps=50.0, delay_ms=2.0, jitter_ms=1.0, loss=0.0),
    "1mbit": LinkSpec(bandwidth_mbps=1.0),
    "10mbit": LinkSpec(bandwidth_mbps=10.0),
    "100mbit": LinkSpec(bandwidth_mbps=100.0),
    "unlimited": LinkSpec(bandwidth_mbps=None),
    # Synthetic variable-rate uplink (pipeline/stream/traces/lte_uplink.trace, mean ~7 Mbit/s).
    "lte-trace": LinkSpec(trace="lte_uplink.trace", delay_ms=25.0, jitter_ms=5.0),
    # Step changes every 3 s: 10, 3, 6, 1.5, 12 Mbit/s (pipeline/stream/traces/steps_uplink.trace).
    "steps-trace": LinkSpec(trace="steps_uplink.trace", delay_ms=25.0, jitter_ms=5.0),
}

_SPEC_KEYS = tuple(f.name for f in dataclasses.fields(LinkSpec))


def resolve_link(profile: str | None = None, **overrides: object) -> LinkSpec:
    """Build a :class:`LinkSpec` from a named profile plus explicit overrides.

    Overrides whose value is ``None`` keep the profile's value (use the ``unlimited`` profile for
    an unconstrained link). Raises ``ValueError`` naming an unknown profile, key or bad value.
    """
    if profile is None:
        base = LinkSpec()
    elif profile in PROFILES:
        base = PROFILES[profile]
    else:
        raise ValueError(f"unknown link.profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    unknown = sorted(set(overrides) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"unknown link key(s) {unknown}; valid keys: {', '.join(_SPEC_KEYS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "mtu" in changes and isinstance(changes["mtu"], float) and changes["mtu"].is_integer():
        changes["mtu"] = int(changes["mtu"])
    return dataclasses.replace(base, **changes)


def trace_path(trace: str) -> Path:
    """Resolve a trace name: an existing path, else a file in :data:`TRACE_DIR`."""
    path = Path(trace).expanduser()
    if path.exists() or path.is_absolute():
        return path
    return TRACE_DIR / trace


def step_trace(segments: Sequence[tuple[float, float]]) -> str:
    """A Mahimahi trace of constant-rate ``(mbit/s, seconds)`` segments in turn: one line per
    1500-byte delivery opportunity, evenly spread over each millisecond's share."""
    lines: list[str] = []
    t0, carry = 0, 0.0
    for mbps, seconds in segments:
        if mbps <= 0 or seconds <= 0:
            raise ValueError(f"a step needs a positive rate and duration, got {(mbps, seconds)}")
        per_ms = mbps * 1e6 / 8 / 1500 / 1000
        for ms in range(t0, t0 + round(seconds * 1000)):
            carry += per_ms
            while carry >= 1:
                lines.append(str(ms + 1))
                carry -= 1
        t0 += round(seconds * 1000)
    return "\n".join(lines) + "\n"


def load_trace(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse a Mahimahi trace into a sorted int64 array of delivery times in ms.

    Each non-blank line holds one non-negative integer timestamp; timestamps must not decrease
    and the last one (the loop period) must be positive. Raises ``ValueError`` naming the file
    and line on any violation.
    """
    p = trace_path(str(path))
    try:
        text = p.read_text()
    except OSError as exc:
        raise ValueError(f"link.trace {str(path)!r}: cannot read ({exc.strerror or exc})") from exc
    times: list[int] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if not line.isdigit():
            raise ValueError(
                f"link.trace {str(p)!r} line {lineno}: expected a non-negative integer ms "
                f"timestamp, got {line[:40]!r}"
            )
        value = int(line)
        if times and value < times[-1]:
            raise ValueError(
                f"link.trace {str(p)!r} line {lineno}: timestamp {value} is earlier than the "
                f"previous one ({times[-1]})"
            )
        times.append(value)
    if not times:
        raise ValueError(f"link.trace {str(p)!r}: no delivery opportunities (empty trace)")
    if times[-1] <= 0:
        raise ValueError(f"link.trace {str(p)!r}: last timestamp (the loop period) must be > 0 ms")
    return np.asarray(times, dtype=np.int64)


def trace_mean_mbps(times: np.ndarray) -> float:
    """Average rate of a looping trace in Mbit/s."""
    return len(times) * TRACE_PACKET_BYTES * 8 / (float(times[-1]) / 1e3) / 1e6


class _TraceSchedule:
    """Delivery opportunities of a looping Mahimahi trace, in seconds since the link origin."""

    def __init__(self, times_ms: np.ndarray):
        self._times = [int(t) for t in times_ms]
        self._n = len(self._times)
        self._period = self._times[-1]

    def first_at_or_after(self, rel_s: float) -> int:
        """Global index of the first opportunity at or after ``rel_s`` seconds."""
        rel_ms = max(0.0, rel_s * 1e3)
        # start one cycle early: an opportunity at exactly the period end belongs to it
        cycle = max(0, int(rel_ms // self._period) - 1)
        while True:
            i = bisect.bisect_left(self._times, rel_ms - cycle * self._period - 1e-9)
            if i < self._n:
                return cycle * self._n + i
            cycle += 1

    def time_of(self, index: int) -> float:
        """Time (s since origin) of the opportunity with this global index."""
        cycle, i = divmod(index, self._n)
        return (cycle * self._period + self._times[i]) / 1e3


@dataclass
class Delivery:
    """Outcome of one reservation. Times are on the link's clock (seconds)."""

    tx_start: float  # first byte starts serializing
    tx_done: float  # last byte (incl. retransmissions) has left the sender
    arrival: float  # the whole payload is at the receiver
    wire_bytes: int  # bytes serialized on the link: payload + retransmitted_bytes
    retransmitted_bytes: int  # bytes sent again because packets were lost
    outage_s: float = 0.0  # down time of the link between when it could start and its arrival


class EmulatedLink:
    """A FIFO emulated link; see the module docstring for the timing model."""

    def __init__(self, spec: LinkSpec, clock: Callable[[], float] = time.monotonic):
        if not isinstance(spec, LinkSpec):
            raise TypeError(f"spec must be a LinkSpec, got {type(spec).__name__}")
        self.spec = spec
        self._clock = clock
        self._origin = clock()
        self._rng = np.random.default_rng(spec.seed)
        self._rate_bps: float | None = None  # bytes per second
        self._schedule: _TraceSchedule | None = None
        if spec.trace is not None:
            times = load_trace(spec.trace)
            self._schedule = _TraceSchedule(times)
            self.configured_mbps: float | None = trace_mean_mbps(times)
        elif spec.bandwidth_mbps is not None:
            self._rate_bps = spec.bandwidth_mbps * 1e6 / 8
            self.configured_mbps = float(spec.bandwidth_mbps)
        else:
            self.configured_mbps = None
        self._burst = float(spec.mtu)
        self._tokens = self._burst
        self._free_at = -math.inf  # when the sender finishes its current reservation
        self._last_arrival = -math.inf
        self._trace_next = 0  # next unused trace opportunity (global index)
        self._trace_credit = 0  # bytes left in the opportunity at _free_at
        self._stats = {
            "deliveries": 0,
            "payload_bytes": 0,
            "wire_bytes": 0,
            "retransmitted_bytes": 0,
            "packets": 0,
            "retransmissions": 0,
            "busy_s": 0.0,
        }
        self._first_start: float | None = None
        self._last_done: float | None = None
        self.outage_origin: float | None = None  # the first reservation's ``now``
        self.outages = OutageSchedule()  # absolute windows, set at the first reservation

    def outage_windows(self) -> list[tuple[float, float]]:
        """The configured outages as absolute ``(start, end)`` on the link's clock (empty before
        the first reservation fixes the origin)."""
        return list(self.outages.windows)

    # ----------------------------------------------------------------- serialization
    def _serialize_rate(self, start: float, nbytes: int) -> float:
        """Token-bucket finish time for ``nbytes`` starting at ``start``."""
        assert self._rate_bps is not None
        if start > self._free_at:
            idle = start - self._free_at if math.isfinite(self._free_at) else math.inf
            idle -= self.outages.down_between(self._free_at, start)  # no tokens while down
            self._tokens = min(self._burst, self._tokens + idle * self._rate_bps)
        deficit = nbytes - self._tokens
        if deficit <= 0:
            self._tokens -= nbytes
            return start
        self._tokens = 0.0
        return self.outages.advance(start, deficit / self._rate_bps)

    def _serialize_trace(self, start: float, nbytes: int) -> float:
        """Finish time for ``nbytes`` using the trace's 1500-byte delivery opportunities."""
        assert self._schedule is not None
        if start <= self._free_at and self._trace_credit > 0:
            # back-to-back: the rest of the opportunity at _free_at is still usable
            used = min(self._trace_credit, nbytes)
            self._trace_credit -= used
            nbytes -= used
            if nbytes == 0:
                return self._free_at
        if nbytes == 0:
            return start
        sched = self._schedule
        first = max(self._trace_next, sched.first_at_or_after(start - self._origin))
        needed = -(-nbytes // TRACE_PACKET_BYTES)
        left = needed
        for a, b in self.outages.windows:  # opportunities inside a window are not there
            if b <= self._origin + sched.time_of(first):
                continue
            usable = max(0, sched.first_at_or_after(a - self._origin) - first)
            if left <= usable:
                break
            left -= usable
            first = sched.first_at_or_after(b - self._origin)
        last = first + left - 1
        self._trace_next = last + 1
        self._trace_credit = needed * TRACE_PACKET_BYTES - nbytes
        return self._origin + self._schedule.time_of(last)

    def _losses(self, nbytes: int) -> tuple[int, int, int, int]:
        """(packets, retransmissions, retransmitted bytes, worst rounds) for one payload."""
        if nbytes <= 0:
            return 0, 0, 0, 0
        mtu = self.spec.mtu
        packets = -(-nbytes // mtu)
        if self.spec.loss <= 0:
            return packets, 0, 0, 0
        lost = self._rng.geometric(1.0 - self.spec.loss, size=packets) - 1
        sizes = np.full(packets, mtu, dtype=np.int64)
        sizes[-1] = nbytes - (packets - 1) * mtu
        return packets, int(lost.sum()), int((lost * sizes).sum()), int(lost.max())

    # ----------------------------------------------------------------- public API
    def reserve(self, nbytes: int, now: float | None = None) -> Delivery:
        """Book ``nbytes`` of payload after earlier reservations; never sleeps."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int | np.integer) or nbytes < 0:
            raise ValueError(f"nbytes must be a non-negative integer, got {nbytes!r}")
        nbytes = int(nbytes)
        now = self._clock() if now is None else float(now)
        if self.outage_origin is None:
            self.outage_origin = now
            self.outages = OutageSchedule.relative(self.spec.outages, now)
        ready = max(now, self._free_at)
        start = self.outages.up_at(ready)
        packets, retx, retx_bytes, rounds = self._losses(nbytes)
        wire = nbytes + retx_bytes
        if self._schedule is not None:
            done = self._serialize_trace(start, wire)
        elif self._rate_bps is not None:
            done = self._serialize_rate(start, wire)
        else:
            done = start
        self._free_at = max(self._free_at, done)
        spec = self.spec
        delay = spec.delay_ms
        if spec.jitter_ms > 0:
            delay += float(self._rng.normal(0.0, spec.jitter_ms))
        delay = max(0.0, delay) + rounds * spec.delay_ms
        arrival = max(self.outages.arrival(done, done + delay / 1e3), self._last_arrival)
        self._last_arrival = arrival
        st = self._stats
        st["deliveries"] += 1
        st["payload_bytes"] += nbytes
        st["wire_bytes"] += wire
        st["retransmitted_bytes"] += retx_bytes
        st["packets"] += packets
        st["retransmissions"] += retx
        st["busy_s"] += done - start - self.outages.down_between(start, done)
        if self._first_start is None:
            self._first_start = start
        self._last_done = done
        outage = self.outages.down_between(ready, arrival)
        return Delivery(start, done, arrival, wire, retx_bytes, outage)

    async def transmit(self, nbytes: int) -> Delivery:
        """Reserve ``nbytes`` now and wait (asyncio) until the sender is free again."""
        delivery = self.reserve(nbytes)
        wait = delivery.tx_done - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        return delivery

    def stats(self) -> dict:
        """Counters plus achieved goodput and utilization (achieved / configured rate).

        The achieved rate is payload bits over the span from the first transmission start to
        the last transmission end; ``utilization`` is None for an unconstrained link.
        ``outages`` are the configured windows, ``outage_down_s`` the down time within that span
        (the span keeps it: a saturated link with an outage shows a utilization below 1).
        """
        out: dict = dict(self._stats)
        out["bytes"] = out["payload_bytes"]
        span = 0.0
        if self._first_start is not None and self._last_done is not None:
            span = self._last_done - self._first_start
        out["span_s"] = span
        out["configured_mbps"] = self.configured_mbps
        achieved = out["payload_bytes"] * 8 / span / 1e6 if span > 0 else None
        out["achieved_mbps"] = achieved
        if achieved is not None and self.configured_mbps:
            out["utilization"] = achieved / self.configured_mbps
        else:
            out["utilization"] = None
        out["busy_fraction"] = out["busy_s"] / span if span > 0 else None
        out["outages"] = [list(w) for w in self.spec.outages]
        out["outage_down_s"] = (
            self.outages.down_between(self._first_start, self._last_done) if span > 0 else 0.0
        )
        return out
