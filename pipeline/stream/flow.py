"""Flow-control policies, pure Python (no Ray): credit windows and an adaptive batcher.

* :class:`CreditWindow` bounds the batches in flight on one hop (credit-based flow control as
  in Flink): the upstream stage may only start a batch once the downstream hop granted a
  credit, so a slow stage throttles its upstream instead of growing a queue.
* :class:`AdaptiveBatcher` picks the next batch size: it doubles while a backlog builds and
  halves when the input runs dry, bounded by ``min_batch_size..max_batch_size``, and flushes
  a partial batch once its oldest sample waited ``max_wait_ms`` (Kafka's ``linger.ms``).
* :class:`StateTimer` accumulates how long a stage spent busy, idle or backpressured.
"""

from __future__ import annotations

import time
from collections.abc import Callable


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
