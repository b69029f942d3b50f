"""Dispatching: starts the calls the admission policy allows, through
:class:`~pipeline.stream.driver.state.RemoteCalls`, and records each as a
:class:`~pipeline.stream.driver.state.Task` in flight. The first step of an edge gets
``next_batch(start, t0)`` / ``rebuild(...)``, a step that starts with the transport
``send(batch, ticket, floor)``, one that is only the sink ``receive(batch)``, every other step
``process(batch)`` (with the rate controller's setting when it encodes), and a replica being probed
``ready()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.stream.driver.admission import Admission
from pipeline.stream.driver.rate_decisions import RateDecisions
from pipeline.stream.driver.state import (
    DriverState,
    EdgeState,
    RemoteCalls,
    StepState,
    Task,
    Ticket,
)


@dataclass(eq=False)
class Dispatcher:
    """Starts calls: batches at steps, sources' next batches and rebuilds, readiness probes."""

    state: DriverState
    calls: RemoteCalls
    admission: Admission
    rate: RateDecisions

    def submit_all(self) -> None:
        """Start what the credits allow, downstream first: the cloud steps, then each edge's own
        steps, then each edge's source."""
        st = self.state
        for s in st.steps:
            s.blocked = False
        for s in reversed(st.cloud):
            while self.submit(s):
                pass
        for ed in st.edges:
            for s in reversed(ed.chain[1 : -len(st.cloud)]):
                while self.submit(s):
                    pass
            self.feed(ed)

    def submit(self, s: StepState) -> bool:
        """Start one batch at step ``s`` if a replica and the next hop's credit allow it."""
        picked = self.admission.next_batch(s)
        if picked is None:
            return False
        self.launch(s, *picked)
        return True

    def launch(self, s: StepState, r: int, ticket: Ticket, ref: Any) -> None:
        rep = s.replicas[r]
        ed = self.state.edges[ticket.edge]
        now = self.state.clock()
        task = Task("stage", s, r, ticket, ref, submitted=now, edge=ticket.edge)
        first = s.stages[0]
        if first == "transport":
            task.transport_ticket = tnum = ed.next_transport_ticket
            ed.next_transport_ticket += 1
            ed.transport_pending.add(tnum)
            ed.on_link[tnum] = (self.state.clock(), ticket.wire_bytes)
            floor = min(ed.transport_pending)
            meta, task.data_ref = self.calls.send(rep.handle, ref, tnum, floor)
        elif first == "sink":
            meta, task.data_ref = self.calls.receive(rep.handle, ref)
        elif "encoder" in s.stages and ed.rate is not None:
            setting = self.rate.choose(ed, ticket.n)
            meta, task.data_ref = self.calls.process(rep.handle, ref, setting)
        else:
            meta, task.data_ref = self.calls.process(rep.handle, ref)
        self.state.tasks[meta] = task
        rep.load += 1
        s.running += 1

    def waiting_for_items(self) -> bool:
        """True when an idle edge waits for the iterable's next items."""
        st = self.state
        if st.feeder is None or st.stopping:
            return False
        ed = st.edges[0]
        return not ed.done and not ed.busy and not st.feeder.done

    def feed(self, ed: EdgeState) -> None:
        """Ask an edge's first step for its next batch (one call at a time), and for rebuilds."""
        st = self.state
        s = ed.chain[0]
        rep = s.replicas[0]
        if rep.state != "up":
            return
        while ed.rebuilds:
            t = ed.rebuilds.popleft()
            meta, data = self.calls.rebuild(
                rep.handle, t.start, t.n, ed.t0, t.t_created, items=t.items_ref
            )
            st.tasks[meta] = Task("rebuild", s, 0, t, data_ref=data, edge=ed.index)
            rep.load += 1
            s.running += 1
        if ed.done or ed.busy:
            return
        if st.feeder is not None and st.feeder.done and ed.retry_items is None:
            ed.done = True  # the iterable has ended and every item was handed on
            return
        if not self.admission.source_may_start(ed):
            return
        kwargs: dict[str, Any] = {}
        if st.feeder is not None:
            if ed.retry_items is not None:
                kwargs["items"], ed.retry_items = ed.retry_items, None
            else:
                items = st.feeder.take(min(st.cfg.batching.max_batch_size, ed.samples))
                if not items:
                    self.admission.source_unused(ed)
                    return
                kwargs["items"] = self.calls.put(items)
        args: tuple[Any, ...] = (ed.next_start, ed.t0)
        if "encoder" in s.stages and ed.rate is not None:  # a fused edge encodes as it makes
            args += (self.rate.choose(ed, ed.last_n),)
        meta, data = self.calls.next_batch(rep.handle, *args, **kwargs)
        st.tasks[meta] = Task(
            "source", s, 0, data_ref=data, submitted=st.clock(), edge=ed.index,
            clear=not ed.aloft,
        )  # fmt: skip
        st.tasks[meta].input_ref = kwargs.get("items")
        rep.load += 1
        s.running += 1
        ed.busy = True

    def probe(self, s: StepState, r: int) -> None:
        """Ask replica ``r`` of ``s`` whether it is ready (after a failure, or when it is new)."""
        ref = self.calls.ready(s.replicas[r].handle)
        self.state.tasks[ref] = Task("probe", s, r, submitted=self.state.clock(), edge=s.edge or 0)
