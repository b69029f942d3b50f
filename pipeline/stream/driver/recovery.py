"""Replay and recovery. A call whose actor died puts its batch back first in line with the same
input, and the replica is probed until Ray has restarted it (a probe answered by a new process counts
a restart). A batch whose input object was lost starts again from its edge's first step, or is
rebuilt by the source. A call that raised is retried ``flow.max_batch_retries`` times. A fleet's edge
whose actors cannot come back is given up, so the other edges can finish."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.stream.driver.dispatch import Dispatcher
from pipeline.stream.driver.state import DriverState, EdgeState, RemoteCalls, StepState, Task
from pipeline.stream.errors import StreamError, failed_stage, short

REPROBE_DELAY_S = 0.25
"""Pause between probes of a replica that Ray reports as unavailable."""

DEAD_AFTER_PROBES = 3
"""A replica whose probe fails with ``ActorDiedError`` this many times in a row is dead for good."""

NODE_CHECK_S = 1.0
"""How often the driver asks Ray which nodes are alive (a replica on a lost node is recovering)."""


@dataclass(eq=False)
class Recovery:
    """Handles failed calls and probes' answers; keeps the probes due again (``state.reprobes``)."""

    state: DriverState
    calls: RemoteCalls
    dispatcher: Dispatcher
    _next_node_check: float = field(default=0.0, init=False)

    def _requeue(self, task: Task) -> StepState:
        """Undo a failed call's bookkeeping; returns its step."""
        s = task.step
        s.replicas[task.replica].load -= 1
        s.running -= 1
        ed = self.state.edges[task.edge]
        if task.kind == "source":
            ed.busy = False
            ed.hops[1].release()
            ed.retry_items = task.input_ref  # an iterable's items go again with the next call
        elif task.kind == "rebuild":
            assert task.ticket is not None
            ed.rebuilds.append(task.ticket)
        if task.transport_ticket >= 0:
            ed.transport_pending.discard(task.transport_ticket)
            ed.on_link.pop(task.transport_ticket, None)
        return s

    def _replay(self, s: StepState, task: Task) -> None:
        """Put a failed call's batch back, first in line, with the same input."""
        s.replay.append((task.ticket, task.input_ref))
        s.replayed += 1
        for name in s.stages:
            self.state.stats[name].replayed_batches += 1
        self.state.exporter.count("replays", s.name)

    def _recovering(self, s: StepState, r: int, error: str) -> None:
        """Replica ``r`` of ``s`` is down: probe it until it is back."""
        rep = s.replicas[r]
        rep.state, rep.since, rep.error = "recovering", self.state.clock(), error
        rep.probe_failures = 0
        self.dispatcher.probe(s, r)

    def actor_failed(self, task: Task, exc: BaseException) -> None:
        """The call's actor died or is unreachable: replay the batch once the replica is back."""
        if task.kind == "probe":
            self.probe_failed(task, exc)
            return
        s = self._requeue(task)
        if task.kind == "stage":
            self._replay(s, task)
        if s.replicas[task.replica].state == "up":
            self._recovering(s, task.replica, short(exc))

    def input_lost(self, task: Task, exc: BaseException) -> None:
        """The call's input object is gone (its node died): start the batch again from its edge's
        first step, rebuilding its inputs from the source if those are gone too."""
        if task.kind != "stage":  # the source's and probes' calls take no stored input
            self.actor_failed(task, exc)
            return
        s = self._requeue(task)
        ticket = task.ticket
        assert ticket is not None
        ed = self.state.edges[ticket.edge]
        if any(e == ed.index for e, _ in self.state.given_up):  # its edge is gone: unsettled
            ed.open_tickets -= 1
            return
        for name in s.stages:
            self.state.stats[name].lost_inputs += 1
            self.state.stats[name].replayed_batches += 1
        s.replayed += 1
        if ticket.pos + 1 < len(ed.hops):
            ed.hops[ticket.pos + 1].release()
        ed.hops[1].force_acquire()  # as if the batch were running at the edge's first step
        if ticket.pos <= 1 or ticket.rebuild:
            ed.rebuilds.append(ticket)
        else:  # first in line before the step after the source, with the edge's copy
            ticket.rebuild = True
            ticket.pos = 1
            ed.chain[1].queue.appendleft((ticket, ticket.source_ref))

    def raised(self, task: Task, exc: BaseException) -> None:
        """The stage's own code raised: retry the batch a few times, then fail the run."""
        s = task.step
        if task.kind == "probe" and s.replicas[task.replica].state == "retired":
            return
        if task.kind == "probe":
            raise StreamError(
                f"stage '{s.name}' replica {task.replica} fails its readiness call: {short(exc)}",
                stage=s.name,
                kind="actor_dead",
            )
        self._requeue(task)
        limit = self.state.cfg.flow.max_batch_retries
        if task.kind != "stage":
            ed = self.state.edges[task.edge]
            ed.source_attempts += 1
            if ed.source_attempts > limit:
                stage = failed_stage(s, exc)
                raise StreamError(
                    f"stage '{stage}' (edge {task.edge}) failed to make a batch "
                    f"{ed.source_attempts} times: {short(exc)}",
                    stage=stage,
                )
            return
        ticket = task.ticket
        assert ticket is not None
        ticket.attempts += 1
        if ticket.attempts > limit:
            last = ticket.start + ticket.n - 1
            stage = failed_stage(s, exc)
            raise StreamError(
                f"stage '{stage}' failed on batch {ticket.number} (samples {ticket.start}..{last}) "
                f"{ticket.attempts} times (flow.max_batch_retries={limit}): {short(exc)}",
                stage=stage,
            )
        for name in s.stages:
            self.state.stats[name].retries += 1
        s.replay.append((ticket, task.input_ref))

    def probe_succeeded(self, s: StepState, r: int, where: dict[str, Any]) -> None:
        """Replica ``r`` of ``s`` answered its probe from the process ``where`` describes."""
        st = self.state
        rep = s.replicas[r]
        if rep.state in ("draining", "retired"):
            return
        if rep.state == "starting":  # a new replica of an autoscaling pool is ready
            if s.pool is not None:
                now = st.clock()
                s.pool.ready(now - st.t_start, r, now - rep.since)
            rep.state, rep.pid, rep.where = "up", where.get("pid"), dict(where)
            rep.pids.add(rep.pid)
            rep.rss = int(where.get("rss") or 0)
            for name in s.stages:
                st.stats[name].place(r, where)
            return
        rep.state, rep.probe_failures = "up", 0
        if where.get("pid") is not None and where.get("pid") not in rep.pids:
            rep.pid, rep.where, rep.rss = where.get("pid"), dict(where), int(where.get("rss") or 0)
            rep.pids.add(rep.pid)
            rep.restarts += 1
            for host in st.steps:  # a fused actor serves several steps: count it once each
                if rep in host.replicas:
                    host.restarts += 1
                    for name in host.stages:
                        st.stats[name].restarts += 1
                        st.stats[name].place(host.edge if host.edge is not None else r, where)
            st.exporter.count("restarts", s.name)

    def probe_failed(self, task: Task, exc: BaseException) -> None:
        s = task.step
        rep = s.replicas[task.replica]
        if rep.state in ("draining", "retired"):  # it left the pool: nothing to wait for
            return
        rep.probe_failures += 1
        rep.error = short(exc)
        if self.calls.actor_died(exc) and rep.probe_failures >= DEAD_AFTER_PROBES:
            raise StreamError(
                f"stage {s.label} replica {task.replica} died and Ray will not restart it "
                f"(flow.max_restarts={self.state.cfg.flow.max_restarts}): {rep.error}",
                stage=s.name,
                kind="actor_dead",
            )
        self.state.reprobes.append((self.state.clock() + REPROBE_DELAY_S, s, task.replica))

    def fire_reprobes(self, now: float) -> None:
        """Probe again the replicas whose pause after a failed probe is over."""
        due = [p for p in self.state.reprobes if p[0] <= now]
        self.state.reprobes = [p for p in self.state.reprobes if p[0] > now]
        for _, s, r in due:
            self.dispatcher.probe(s, r)

    def check_nodes(self, now: float) -> None:
        """A replica whose node is gone is recovering, whether or not a call of it failed (Ray may
        restart an idle actor elsewhere unseen): it is probed, its restart counted and placed, and it
        falls under ``flow.restart_timeout_s`` when no node can host it."""
        if now < self._next_node_check:
            return
        self._next_node_check = now + NODE_CHECK_S
        alive = self.calls.alive_nodes()
        if alive is None:  # the GCS cannot say now: failed calls still tell
            return
        for s in self.state.steps:
            for r, rep in enumerate(s.replicas):
                node = rep.where.get("node_id")
                if rep.state == "up" and node and node not in alive:
                    self._recovering(s, r, f"its node {node[:12]} was lost")

    def give_up_edge(self, ed: EdgeState, err: StreamError) -> None:
        """A fleet's edge whose actors cannot come back: stop it, drop its batches that wait for its
        own actors, and let the other edges finish; the run then fails with ``err`` and the report
        names the edge's unsettled ids."""
        st = self.state
        st.given_up.append((ed.index, err))
        own = st.own(ed)
        for s in own:
            for rep in s.replicas:
                rep.state = "lost"
            ed.open_tickets -= len(s.queue) + len(s.replay)
            s.queue.clear()
            s.replay.clear()
        for ref, task in list(st.tasks.items()):
            if task.step in own:
                del st.tasks[ref]
                ed.open_tickets -= task.kind in ("stage", "rebuild")
        ed.open_tickets -= len(ed.rebuilds)
        ed.rebuilds.clear()
        st.reprobes = [p for p in st.reprobes if p[1] not in own]
        ed.done, ed.busy = True, False

    def raise_given_up(self) -> None:
        """The other edges have finished: fail the run for the edges given up, naming their ids."""
        if not self.state.given_up:
            return
        parts = []
        for e, err in self.state.given_up:
            led = self.state.edges[e].ledger
            ranges = ", ".join(f"{a}..{b}" for a, b in led.unsettled_ranges(5))
            parts.append(f"edge {e} given up, {led.lost} samples unsettled ({ranges}): {err}")
        stage = self.state.given_up[0][1].stage
        raise StreamError("; ".join(parts), stage=stage, kind="restart_timeout")
