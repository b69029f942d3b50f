"""The autoscaling policy of a cloud pool (``replicas.decoder`` / ``replicas.tail`` as ``{min, max}``).

A pool's *demand* is the calls waiting for it or running on it. The size it wants is that demand over
``target_calls`` per replica, rounded up, within ``[min, max]``, as Ray Serve sizes a deployment from
its ongoing requests. The pool moves only when the wish persists (hysteresis): it grows once every
wish over the last ``up_after_s`` was larger than its size, to the latest wish, and shrinks once the
demand *averaged over time* across the last ``down_after_s`` asks for fewer replicas, to that many.
It never shrinks below the replicas its *running* calls keep busy, averaged the same way, over
``SHRINK_UTILIZATION``: a pool whose replicas are busy with few calls waiting must not halve.
Growing is quick and shrinking slow, so a short lull does not cost replicas a burst needs again;
shrinking reads the average, not the peaks, because a pool fed by several edges sees a call from
each of them now and then even when one replica has room for all (the largest wish of a window
held a 4-edge pool at 2-3 replicas long after its load had fallen to what one serves).

Pure policy: no Ray and no clock of its own (the executor passes ``now``), so it is tested with a
fake clock. Which replica leaves, how it drains and where a new one lands are the executor's and
Ray's business.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

SHRINK_UTILIZATION = 0.75
"""The busy share of each replica a shrunk pool may reach, on average (the rest absorbs bursts)."""


@dataclass
class PoolScaler:
    """Decides a pool's size from its demand over time (see the module docstring)."""

    min_size: int
    max_size: int
    target_calls: float = 2.0
    up_after_s: float = 1.0
    down_after_s: float = 8.0
    wishes: deque[tuple[float, int]] = field(default_factory=deque)  # (time, wished size)
    demands: deque[tuple[float, float, float]] = field(default_factory=deque)  # (t, demand, running)
    since: float | None = None  # when observation started (a wish needs this much history)

    def __post_init__(self) -> None:
        if not 1 <= self.min_size <= self.max_size:
            raise ValueError(f"a pool of min {self.min_size}, max {self.max_size}")

    def wish(self, demand: float) -> int:
        """The size that serves ``demand`` calls at ``target_calls`` each, within bounds."""
        return min(self.max_size, max(self.min_size, math.ceil(demand / self.target_calls)))

    def decide(self, now: float, demand: float, size: int, running: float | None = None) -> int:
        """The size the pool should have now, given its current ``size`` (replicas up, starting or
        recovering; not those draining), its ``demand`` and, of it, the calls ``running`` (when
        given, the pool keeps the replicas they keep busy)."""
        if self.since is None:
            self.since = now
        self.wishes.append((now, self.wish(demand)))
        self.demands.append((now, float(demand), float(running or 0.0)))
        while self.wishes and self.wishes[0][0] < now - self.up_after_s:
            self.wishes.popleft()
        # keep the sample that was current when the down window opened: it holds until the next
        while len(self.demands) > 1 and self.demands[1][0] <= now - self.down_after_s:
            self.demands.popleft()
        if size < self.min_size:
            return self.min_size
        if size > self.max_size:
            return self.max_size
        up = self._window(now, self.up_after_s)
        if up and min(up) > size:
            return up[-1]
        if now - self.since >= self.down_after_s:
            demand_avg, running_avg = self.mean_demand(now)
            busy = math.ceil(running_avg / SHRINK_UTILIZATION - 1e-9)
            settled = max(self.wish(demand_avg), min(self.max_size, busy))
            if settled < size:
                return settled
        return size

    def mean_demand(self, now: float) -> tuple[float, float]:
        """The demand and the running calls, each averaged over time across the last
        ``down_after_s`` (each sample holds until the next one)."""
        if not self.demands:
            return 0.0, 0.0
        points = list(self.demands)
        begin = max(now - self.down_after_s, points[0][0])
        if now <= begin:
            return points[-1][1], points[-1][2]
        demand = running = 0.0
        for (t0, d, r), (t1, *_) in zip(points, [*points[1:], (now,)], strict=True):
            held = max(0.0, min(t1, now) - max(t0, begin))
            demand, running = demand + d * held, running + r * held
        return demand / (now - begin), running / (now - begin)

    def _window(self, now: float, span: float) -> list[int]:
        """The wishes of the last ``span`` seconds; empty until that much has been observed."""
        assert self.since is not None
        if now - self.since < span:
            return []
        return [w for t, w in self.wishes if t >= now - span]

    def restart(self, now: float) -> None:
        """Forget the wishes: after the pool moved, the next move needs fresh evidence."""
        self.wishes.clear()
        self.demands.clear()
        self.since = now


class Replica(Protocol):
    """What the pool reads of a replica (the executor's own record)."""

    state: str  # "up", "starting", "recovering", "draining", "retired" or "lost"
    load: int  # calls in flight on it
    since: float  # when it entered its state


SIZED = ("up", "starting", "recovering")
"""The states that count in a pool's size (a recovering replica is coming back)."""


@dataclass
class Moves:
    """What the executor does to a pool now: start ``grow`` replicas, stop giving work to those at
    ``drain``, and kill those at ``retire`` (indices into the pool's replicas)."""

    grow: int = 0
    drain: list[int] = field(default_factory=list)
    retire: list[int] = field(default_factory=list)


@dataclass
class PoolAutoscaler:
    """One cloud step's pool: turns :class:`PoolScaler`'s sizes into moves on its replicas.

    A replica chosen to leave first drains: it gets no new call, and is retired (killed) once its
    calls have finished, or after ``drain_s`` with the calls it still holds, which the executor then
    replays elsewhere. A replica that has not started within ``start_timeout_s`` (no node has room
    for it) is retired too, and the pool does not try to grow again for that long."""

    name: str
    scaler: PoolScaler
    drain_s: float = 30.0
    start_timeout_s: float = 60.0
    events: list[dict[str, Any]] = field(default_factory=list)
    grow_after: float = 0.0
    peak: int = 0

    def tick(
        self,
        now: float,
        t: float,
        demand: float,
        replicas: Sequence[Replica],
        running: float | None = None,
    ) -> Moves:
        """The moves at ``now`` (monotonic; ``t``: seconds since the start, for the events), given
        the pool's ``demand`` and, of it, the calls ``running``."""
        moves = Moves()
        for i, r in enumerate(replicas):
            if r.state == "draining" and (r.load == 0 or now - r.since >= self.drain_s):
                moves.retire.append(i)
                if r.load:
                    self._event(t, "killed while draining", calls=r.load)
            elif r.state == "starting" and now - r.since >= self.start_timeout_s:
                moves.retire.append(i)
                self.grow_after = now + self.start_timeout_s
                self._event(t, "did not start", after_s=round(now - r.since, 1))
        sized = [i for i, r in enumerate(replicas) if r.state in SIZED and i not in moves.retire]
        size = len(sized)
        self.peak = max(self.peak, size)
        target = self.scaler.decide(now, demand, size, running)
        if target > size and now >= self.grow_after:
            moves.grow = target - size
        elif target < size:
            # starting replicas leave first, then the least loaded, the newest among equals
            order = sorted(
                sized, key=lambda i: (replicas[i].state != "starting", replicas[i].load, -i)
            )
            moves.drain = order[: size - target]
        else:
            return moves
        self.scaler.restart(now)
        self._event(t, "grow" if moves.grow else "shrink", size=size, to=target,
                    demand=round(demand, 1))  # fmt: skip
        self.peak = max(self.peak, target)
        return moves

    def ready(self, t: float, replica: int, after_s: float) -> None:
        """Replica ``replica`` serves now, ``after_s`` after it was started (an event)."""
        self._event(t, "ready", replica=replica, after_s=round(after_s, 2))

    def _event(self, t: float, what: str, **info: Any) -> None:
        self.events.append({"t": round(t, 2), "event": what, **info})

    def summary(self, replicas: Sequence[Replica]) -> dict[str, Any]:
        """The report's view of the pool: bounds, sizes, and its moves over the run."""
        return {
            "min": self.scaler.min_size,
            "max": self.scaler.max_size,
            "peak": self.peak,
            "final": sum(r.state in SIZED for r in replicas),
            "started": len(replicas),
            "events": self.events[-200:],
        }
