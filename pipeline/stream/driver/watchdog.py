"""Watchdogs: the run never waits forever. A replica that does not come back within
``flow.restart_timeout_s`` ends the run (a fleet gives up only its edge), naming the placement
resource when no alive node offers it or has room for it. No call finished for ``stall_timeout_s``
(while no replica is restarting, and not counting a configured link outage) is a stall: the replica
holding the oldest call is restarted and its calls replayed (a call lost with a connection costs a
replay, not the run), ``flow.stall_restarts`` times in a run; the next stall ends the run."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline.stream.driver.recovery import Recovery
from pipeline.stream.driver.state import DriverState, RemoteCalls, StepState
from pipeline.stream.errors import StreamError
from pipeline.stream.outages import outage_overlap

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Watchdog:
    """Raises :class:`~pipeline.stream.errors.StreamError` when the run cannot go on."""

    state: DriverState
    calls: RemoteCalls
    recovery: Recovery

    def check(self, now: float) -> None:
        """Restart timeouts first, then the stall timeout."""
        if not self._restarts_timely(now):
            return  # a replica is restarting: the stream is not stalled
        self._check_stall(now)

    def _restarts_timely(self, now: float) -> bool:
        """Fail (or give up an edge of a fleet) for a replica past ``flow.restart_timeout_s``;
        returns False when some replica is recovering."""
        st = self.state
        limit = st.cfg.flow.restart_timeout_s
        recovering = False
        for s in st.steps:
            for r, rep in enumerate(s.replicas):
                if rep.state != "recovering":
                    continue
                recovering = True
                if now - rep.since > limit:
                    err = StreamError(
                        f"stage {s.label} replica {r} did not come back within "
                        f"flow.restart_timeout_s={limit:g} s{self.no_host(s)} ({rep.error})",
                        stage=s.name,
                        kind="restart_timeout",
                    )
                    if s.edge is None or len(st.edges) == 1:
                        raise err
                    self.recovery.give_up_edge(st.edges[s.edge], err)  # a fleet: others go on
        return not recovering

    def _check_stall(self, now: float) -> None:
        st = self.state
        idle = now - st.last_progress
        if st.link_outages:  # time in a configured link outage is not a stall
            wall = st.wall_clock()
            spans = [w for ws in st.link_outages.values() for w in ws]
            idle -= outage_overlap(spans, wall - idle, wall)
        if idle <= st.stall_timeout_s:
            return
        work = [t for t in st.tasks.values() if t.kind != "probe"]
        if not work:
            raise StreamError(
                f"stall: nothing finished for {idle:.1f} s and nothing is running", kind="stall"
            )
        oldest = min(work, key=lambda t: t.submitted)
        s = oldest.step
        what = "the next batch"
        if oldest.ticket is not None:
            t = oldest.ticket
            what = f"batch {t.number} (samples {t.start}..{t.start + t.n - 1})"
        held = (
            f"stage {s.label} has had {what} for {now - oldest.submitted:.1f} s on replica "
            f"{oldest.replica} (pid {s.replicas[oldest.replica].pid})"
        )
        allowed = st.cfg.flow.stall_restarts
        if st.stall_restarts < allowed:
            self._restart(s, oldest.replica, f"stall: no call finished for {idle:.1f} s; {held}")
            return
        raise StreamError(
            f"stall: no call finished for {idle:.1f} s (flow.stall_timeout_s="
            f"{st.stall_timeout_s:g}, after {st.stall_restarts} restart(s) for stalls, "
            f"flow.stall_restarts={allowed}); {held}",
            stage=s.name,
            kind="stall",
        )

    def _restart(self, s: StepState, r: int, why: str) -> None:
        """Restart replica ``r`` of ``s`` for a stall: its calls fail as a killed actor's do, and
        recovery replays them once Ray has brought it back."""
        st = self.state
        st.stall_restarts += 1
        st.last_progress = st.clock()  # the restarted replica gets a full stall timeout
        log.warning("%s: restarting the replica (flow.stall_restarts=%d, %d used)", why,
                    st.cfg.flow.stall_restarts, st.stall_restarts)  # fmt: skip
        self.calls.restart(s.replicas[r].handle)

    def no_host(self, s: StepState) -> str:
        """Why a replica of ``s`` may not come back: no alive node offers its side's placement
        resource any more (its node was lost), or none of those that do has room; else ''."""
        placement = self.state.cfg.placement
        key = "cloud_resource" if s.edge is None else "edge_resource"
        name, amount = getattr(placement, key), placement.resource_amount
        room = self.calls.placement(name)
        if room is None:  # the cluster cannot say: the timeout's own message stands
            return ""
        offered, free = room
        if offered < amount:
            return f": no alive node offers placement.{key} {name!r} any more"
        if free < amount:
            return f": no alive node offering placement.{key} {name!r} has room for it"
        return ""
