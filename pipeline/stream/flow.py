"""Flow-control policies, pure Python (no Ray): credit windows and an adaptive batcher.

* :class:`CreditWindow` bounds the batches in flight on one hop (credit-based flow control as
  in Flink): the upstream stage may only start a batch once the downstream hop granted a
  credit, so a slow stage throttles its upstream instead of growing a queue.
* :class:`AdaptiveBatcher` picks the next batch size: it doubles while a backlog builds and
  halves when the input runs dry, bounded by ``min_batch_size..max_batch_size``, and flushes
  a partial batch once its oldest sample waited ``max_wait_ms`` (Kafka's ``linger.ms``).
* :class:`LinkWindow` sizes how many batches one edge keeps in flight to its link: the measured
  bandwidth-delay product plus the batch on the wire, as BBR sizes its congestion window.
* :class:`StateTimer` accumulates how long a stage spent busy, idle or backpressured.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class CreditWindow:
    """A bounded pool of credits for one hop; ``peak`` records the most ever held at once."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window size must be >= 1, got {size}")
        self.size = size
        self.in_flight = 0
        self.peak = 0
        self.granted = 0
        self.refused = 0

    @property
    def available(self) -> int:
        """Credits that can still be granted."""
        return self.size - self.in_flight

    def try_acquire(self) -> bool:
        """Take one credit if any is free; False (and count a refusal) otherwise."""
        if self.in_flight >= self.size:
            self.refused += 1
            return False
        self.in_flight += 1
        self.granted += 1
        self.peak = max(self.peak, self.in_flight)
        return True

    def force_acquire(self) -> None:
        """Take a credit even when none is free: a replayed batch that lost its place must not wait
        behind new work. The window is exceeded by one until that batch moves on."""
        self.in_flight += 1
        self.granted += 1
        self.peak = max(self.peak, self.in_flight)

    def release(self) -> None:
        """Return one credit; releasing more than were taken is a bug and raises."""
        if self.in_flight <= 0:
            raise RuntimeError("release() without a matching acquire()")
        self.in_flight -= 1


class AdaptiveBatcher:
    """Batch-size policy: grow under backlog, shrink when idle, flush on ``max_wait_ms``.

    ``pending`` is the number of samples waiting when a decision is made. With
    ``adaptive=False`` the target stays at ``max_batch_size``.
    """

    def __init__(
        self,
        max_batch_size: int,
        max_wait_ms: float,
        min_batch_size: int = 1,
        adaptive: bool = True,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not 1 <= min_batch_size <= max_batch_size:
            raise ValueError(
                f"min_batch_size must be in 1..max_batch_size ({max_batch_size}), got {min_batch_size}"
            )
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.max_batch_size = max_batch_size
        self.min_batch_size = min_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.adaptive = adaptive
        self.target = min_batch_size if adaptive else max_batch_size
        self.emitted = 0  # batches taken so far
        self.emitted_samples = 0

    def should_emit(self, pending: int, oldest_wait_s: float) -> bool:
        """Emit now if a full target batch is waiting or the oldest sample lingered too long."""
        if pending <= 0:
            return False
        return pending >= self.target or oldest_wait_s >= self.max_wait_s

    def time_to_deadline(self, oldest_wait_s: float) -> float:
        """Seconds until the oldest pending sample must be flushed (0 if overdue)."""
        return max(0.0, self.max_wait_s - oldest_wait_s)

    def take(self, pending: int) -> int:
        """Size of the batch to emit now from ``pending`` samples; adapts the target afterwards."""
        n = min(pending, self.target)
        self.emitted += 1
        self.emitted_samples += n
        if self.adaptive:
            left = pending - n
            if left >= self.target:  # a queue is building: amortise overheads with bigger batches
                self.target = min(self.max_batch_size, self.target * 2)
            elif left == 0 and n < self.target:  # ran dry before filling: favour latency
                self.target = max(self.min_batch_size, self.target // 2)
        return n

    @property
    def mean_batch_size(self) -> float:
        """Mean of the batch sizes emitted so far (0 if none)."""
        return self.emitted_samples / self.emitted if self.emitted else 0.0


class LinkWindow:
    """How many batches one edge may have in flight to its link, from what the driver measures.

    A batch is in flight from the source call that makes it until the link delivers it. That round
    is a fixed part (making and encoding it, handing it over, the link's delay) plus its
    serialization, ``bytes / rate``. The link stays busy with ``1 + rate * fixed / batch_bytes``
    batches in flight (the bandwidth-delay product in batches, counting the one on the wire); more
    only queue in front of the link and add their wait to every sample's latency. The window is
    that number with ``headroom`` on the fixed part, rounded up, between ``floor`` and ``cap``.

    * **rate**: the median of the last few busy-run samples (:meth:`observe_rate`: deliveries of a
      link that had the next batch queued, so no idle time is in them). Without a sample for
      ``stale_s`` the link is not the bottleneck, and the window opens to ``cap``.
    * **probing up**: a batch that found the link idle while the window held the edge back means
      the link could take more than the window lets through (it got faster, and an unsaturated
      link gives no rate samples): the window opens by one batch each time, until the link queues
      again and a fresh rate sample sizes it (BBR probes its bandwidth the same way).
    * **fixed part**: the least ``delivered - launched - bytes / rate`` over the recent *clear*
      batches, those launched while nothing else of the edge was in flight, so a queue never
      inflates it. When the last clear batch is ``probe_s`` old, the window closes to 1 until the
      next one is delivered (BBR's ProbeRTT): one batch's wait every ``probe_s`` seconds buys an
      estimate that follows the link.
    """

    def __init__(
        self,
        cap: int,
        *,
        floor: int = 2,
        headroom: float = 1.25,
        stale_s: float = 10.0,
        probe_s: float = 10.0,
        samples: int = 5,
    ) -> None:
        if cap < 1 or floor < 1:
            raise ValueError(f"need cap >= 1 and floor >= 1, got cap={cap}, floor={floor}")
        self.cap, self.floor = cap, min(floor, cap)
        self.headroom, self.stale_s, self.probe_s = headroom, stale_s, probe_s
        self.rates: deque[tuple[float, float]] = deque(maxlen=samples)  # (when, bytes/s)
        self.clear: deque[tuple[float, float, int]] = deque(maxlen=16)  # (delivered, seconds, bytes)
        self.batch_bytes: float | None = None  # moving average of delivered batches' sizes
        self.size = cap
        self.low = self.high = cap
        self.probes = 0
        self.probing = False
        self.extra = 0  # batches opened by probing up since the last rate sample

    def observe_rate(self, bytes_per_s: float, now: float) -> None:
        """One sample of the link's rate, from deliveries while it was busy throughout."""
        if bytes_per_s > 0:
            self.rates.append((now, bytes_per_s))
            self.extra = 0
            self._resize(now)

    def observe_delivery(
        self,
        launched: float,
        delivered: float,
        nbytes: int,
        clear: bool,
        *,
        idle_link: bool = False,
        limited: bool = False,
    ) -> None:
        """A batch launched at ``launched`` (its source call) was delivered at ``delivered``;
        ``clear``: nothing else of the edge was in flight when it was launched; ``idle_link``: it
        found the link idle; ``limited``: the window held the edge back since the last delivery."""
        if idle_link and limited and not self.probing:
            self.extra = min(self.cap, self.extra + 1)
        if nbytes > 0:
            b = float(nbytes)
            self.batch_bytes = b if self.batch_bytes is None else 0.8 * self.batch_bytes + 0.2 * b
        if clear and delivered > launched:
            self.clear.append((delivered, delivered - launched, nbytes))
            self.probing = False
        self._resize(delivered)

    def tick(self, now: float) -> None:
        """Re-decide at ``now`` (rate samples expire, a probe falls due)."""
        self._resize(now)

    @property
    def rate_bps(self) -> float | None:
        """The link's rate in bytes/s (None: not measured, or stale)."""
        return statistics.median(r for _, r in self.rates) if self.rates else None

    def fixed_s(self, rate: float) -> float | None:
        """The round's fixed part at ``rate`` (None before any clear batch)."""
        if not self.clear:
            return None
        return max(0.0, min(d - b / rate for _, d, b in self.clear))

    def _resize(self, now: float) -> None:
        while self.rates and self.rates[0][0] < now - self.stale_s:
            self.rates.popleft()
        rate = self.rate_bps
        fixed = None if rate is None else self.fixed_s(rate)
        if rate is None or fixed is None or not self.batch_bytes:
            size = self.cap  # not the bottleneck, or not measured yet: as a plain credit window
        elif self.probing or now - self.clear[-1][0] > self.probe_s:
            if not self.probing:
                self.probing, self.probes = True, self.probes + 1
            size = 1
        else:
            bdp = 1.0 + rate * fixed * self.headroom / self.batch_bytes
            size = min(self.cap, max(self.floor, math.ceil(bdp)) + self.extra)
        self.size = size
        if not self.probing:
            self.low, self.high = min(self.low, size), max(self.high, size)

    def summary(self) -> dict[str, Any]:
        """The window now and its range, with the estimates it came from."""
        rate = self.rate_bps
        fixed = None if rate is None else self.fixed_s(rate)
        return {
            "size": self.size,
            "min": self.low,
            "max": self.high,
            "cap": self.cap,
            "rate_mbps": None if rate is None else rate * 8 / 1e6,
            "fixed_ms": None if fixed is None else fixed * 1000.0,
            "batch_kb": None if self.batch_bytes is None else self.batch_bytes / 1e3,
            "probes": self.probes,
        }


class StateTimer:
    """Accumulates seconds spent in named states (e.g. busy / idle / backpressured)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._state: str | None = None
        self._since = clock()
        self.totals: dict[str, float] = {}

    def set(self, state: str) -> None:
        """Switch to ``state``, charging the elapsed time to the previous state."""
        now = self._clock()
        if self._state is not None:
            self.totals[self._state] = self.totals.get(self._state, 0.0) + (now - self._since)
        self._state, self._since = state, now

    def stop(self) -> dict[str, float]:
        """Close the current interval and return the totals."""
        self.set("_stopped")
        self.totals.pop("_stopped", None)
        self._state = None
        return dict(self.totals)
