"""Rate decisions (``rate.mode=adaptive``): what each edge's
:class:`~pipeline.stream.rate.RateController` sees of its link, and the setting it picks for the next
batch. The link's rate is sampled from busy runs of deliveries; a batch stuck at the head of the link
bounds it early."""

from __future__ import annotations

from dataclasses import dataclass

from codec import CodecSettings
from pipeline.stream.driver.state import DriverState, EdgeState

STALL_AGE_S = 0.1
"""A batch on the link longer than this, and twice as long as the rate estimate predicts, bounds the
link's rate by its bytes over its age (shorter waits are propagation delay, scheduling and a big
batch's own transmission, not a slower link)."""


@dataclass(eq=False)
class RateDecisions:
    """Feeds the edges' rate controllers (and in-flight windows) and asks them for settings."""

    state: DriverState

    def choose(self, ed: EdgeState, samples: int) -> CodecSettings | None:
        """The setting for the edge's next batch of ``samples`` (None: ``rate.mode=fixed``), from the
        backlog and how long the oldest batch on the link has been at the head of the line (since it
        was handed over, or since the link finished the batch before it): once that is clearly
        longer than expected (``STALL_AGE_S``), its bytes over that time bound the link's rate."""
        if ed.rate is None:
            return None
        now, cap = self.state.clock(), None
        if ed.on_link:
            handed, nbytes = min(ed.on_link.values())
            age, rate = now - max(handed, ed.left_link), ed.rate.rate_bps
            expected = nbytes / rate if rate else 0.0  # what the current estimate says it takes
            if nbytes > 0 and age >= max(STALL_AGE_S, 2.0 * expected):
                cap = nbytes / age
        return ed.rate.choose(samples, ed.backlog_bytes, now, cap)

    def delivered(self, ed: EdgeState, delivered: float, nbytes: int, queued: bool) -> None:
        """The link delivered a batch: perhaps a sample of its rate.

        A batch that went on the link while the link was still busy with the one before it
        (``queued``) extends a busy run: between the run's deliveries the link did nothing but
        transmit, so the bytes delivered after the run's first batch, over the time from its first
        delivery to its last, are the link's rate; the jitter of the deliveries in between cancels.
        A batch that found the link idle starts a new run. Only differences of one clock are used (the
        transport's, or on a real link the receiver's)."""
        if not queued:
            ed.busy_run.clear()
        ed.busy_run.append((delivered, nbytes))
        if len(ed.busy_run) == ed.busy_run.maxlen:
            span = ed.busy_run[-1][0] - ed.busy_run[0][0]
            nbytes = sum(b for _, b in list(ed.busy_run)[1:])
            if ed.rate is not None:
                ed.rate.observe_rate(nbytes, span, self.state.clock())
            if ed.window is not None and span > 0:
                ed.window.observe_rate(nbytes / span, self.state.clock())

    def latency(self, ed: EdgeState, worst_s: float, wire_bytes: int) -> None:
        """A batch was acknowledged with ``worst_s`` its worst sample latency."""
        ed.recent_latency_s = max(ed.recent_latency_s, worst_s)
        if ed.rate is not None:
            rate = ed.rate.rate_bps
            ed.rate.observe_latency(worst_s, wire_bytes / rate if rate else 0.0)
