"""Admission and credits: which batch a step may start next, whether an edge's source may make
another batch, and the edge's in-flight window (``flow.inflight``) fed by the link's deliveries.

Each edge holds a :class:`~pipeline.stream.flow.CreditWindow` per hop of its chain: a batch starts at
a step only when the next hop has credit, so a slow edge holds back only itself and a slow shared
cloud step holds back every edge. Replays already hold their credit and go first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.stream.config import PipelineConfig
from pipeline.stream.driver.state import DriverState, EdgeState, StepState, Ticket
from pipeline.stream.flow import LinkWindow


def inflight_window(
    cfg: PipelineConfig, chain: list[StepState], mbps: float | None
) -> tuple[int, LinkWindow | None]:
    """An edge's in-flight limit: ``flow.inflight`` as a number, or ``auto``: a window sized from the
    link, at most what the hops up to the link hold (``flow.window`` each). An unconstrained emulated
    link is never the bottleneck: it keeps that cap."""
    hops = 1 + next(i for i, s in enumerate(chain) if "transport" in s.stages)
    cap = cfg.flow.window * hops
    setting = cfg.flow.inflight
    if setting != "auto":
        return int(setting), None
    if cfg.link.mode != "real" and mbps is None:
        return cap, None
    return cap, LinkWindow(cap)


@dataclass(eq=False)
class Admission:
    """Credit decisions over the shared :class:`DriverState`; it starts no call itself."""

    state: DriverState

    def next_batch(self, s: StepState) -> tuple[int, Ticket, Any] | None:
        """``(replica, ticket, input ref)`` of the batch step ``s`` may start now, taking the next
        hop's credit (None: no free replica, nothing queued, or no credit: ``s`` is blocked)."""
        if s.replay:  # replays already hold the next hop's credit and go first
            r = s.free_replica()
            if r is None:
                return None
            ticket, ref = s.replay.popleft()
            return r, ticket, ref
        if not s.queue:
            return None
        r = s.free_replica()
        if r is None:
            return None
        for k, (ticket, ref) in enumerate(s.queue):
            ed = self.state.edges[ticket.edge]
            nxt = ticket.pos + 1
            if nxt < len(ed.chain) and not ed.hops[nxt].try_acquire():
                if s.edge is not None:  # one edge's FIFO: the head of the line decides
                    break
                continue  # a shared step: another edge's batch may go
            del s.queue[k]
            ed.hops[ticket.pos].release()
            return r, ticket, ref
        s.blocked = True
        return None

    def source_may_start(self, ed: EdgeState) -> bool:
        """Whether the edge's source may make another batch: what the link needs is not yet in
        flight, and the hop after the source has credit (taken now; see :meth:`source_unused`)."""
        s = ed.chain[0]
        if ed.window is not None:
            ed.window.tick(self.state.clock())
        if len(ed.aloft) >= ed.inflight_limit:
            s.blocked = ed.held_back = True  # what the link needs is in flight: more would queue
            return False
        if not ed.hops[1].try_acquire():
            s.blocked = True  # the next hop is full: this edge's source waits (backpressure)
            return False
        return True

    def source_unused(self, ed: EdgeState) -> None:
        """A source call that was admitted made no batch to pass on: its credit goes back."""
        ed.hops[1].release()

    def landed(self, ed: EdgeState, ticket: Ticket, nbytes: int, idle_link: bool) -> None:
        """The link delivered a batch (``idle_link``: it had found the link idle): it is no longer in
        flight, and its round trip is a sample for the edge's window."""
        if ticket.number not in ed.aloft:
            return  # delivered before (a replay)
        ed.aloft.discard(ticket.number)
        if ed.window is not None:
            ed.window.observe_delivery(
                ticket.launched, self.state.clock(), nbytes, ticket.clear,
                idle_link=idle_link, limited=ed.held_back,
            )  # fmt: skip
        ed.held_back = False
