"""Delivery accounting: what a finished call means for its batch and edge. A source call makes a
ticket (or settles shed and unloadable samples); a step's call moves the batch to the next step's
queue; the transport, decoder and sink report the link's deliveries, arrivals, rejected frames and
acknowledged samples, which settle in the edge's ledger and go to the results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.stream.driver.admission import Admission
from pipeline.stream.driver.rate_decisions import RateDecisions
from pipeline.stream.driver.state import DriverState, EdgeState, Task, Ticket, stage_metas


@dataclass(eq=False)
class DeliveryAccounting:
    """Handles the metas of successful stage and source calls; ``on_settled`` is told whenever
    samples may have settled."""

    state: DriverState
    admission: Admission
    rate: RateDecisions
    on_settled: Callable[[], None]

    def succeeded(self, task: Task, meta: dict[str, Any]) -> None:
        """A stage, source or rebuild call returned ``meta``."""
        st = self.state
        s, rep = task.step, task.step.replicas[task.replica]
        rep.load -= 1
        s.running -= 1
        metas = stage_metas(s, meta)
        index = task.edge if s.edge is not None else task.replica
        for name, m in metas.items():
            st.stats[name].add(index, m)
            if m.get("rss"):
                rep.rss = int(m["rss"])
        ed = st.edges[task.edge]
        if task.kind == "source":
            ticket = self.source_batch(ed, task, meta)
            if ticket is not None and "encoder" in metas:
                self.encoded(ed, ticket, metas["encoder"])
            return
        ticket = task.ticket
        assert ticket is not None
        if task.kind == "rebuild":  # first in line before the step after the source
            ticket.source_ref = task.data_ref
            ticket.pos = 1
            ed.chain[1].queue.appendleft((ticket, task.data_ref))
            return
        ticket.attempts = 0
        if "encoder" in metas:
            self.encoded(ed, ticket, metas["encoder"])
        if "transport" in metas:
            self._transported(ed, task, ticket, metas["transport"])
        if "decoder" in metas:
            self._decoded(ed, ticket, metas["decoder"])
        if "sink" in metas:
            self._acknowledged(ed, ticket, metas["sink"])
        else:
            # a step that passed its batch through unchanged hands on its input
            data = task.input_ref if meta.get("passthrough") else task.data_ref
            ticket.pos += 1
            ed.chain[ticket.pos].queue.append((ticket, data))
        self.on_settled()

    def _transported(self, ed: EdgeState, task: Task, ticket: Ticket, m: dict[str, Any]) -> None:
        ed.transport_pending.discard(task.transport_ticket)
        ed.on_link.pop(task.transport_ticket, None)
        ed.left_link = self.state.clock()
        ed.link.add(m)
        if "outages_wall" in m:  # the link's configured outages, on the wall clock
            self.state.link_outages[ed.index] = m["outages_wall"]
        if "tx_start_planned" in m:  # an emulated link: its delivery is the transport's return
            self.rate.delivered(ed, float(m["t_end"]), int(m["wire_bytes"]), bool(m.get("queued")))
        if self.state.cfg.link.mode != "real":
            idle = "queued" in m and not m["queued"]
            self.admission.landed(ed, ticket, int(m.get("wire_bytes", 0)), idle)

    def _decoded(self, ed: EdgeState, ticket: Ticket, d: dict[str, Any]) -> None:
        st = self.state
        self.arrived(ed, ticket)
        if st.cfg.link.mode == "real":  # the real network delivers as the decoder fetches it
            self.rate.delivered(ed, float(d["arrival"]), int(d["wire_bytes"]), True)
            self.admission.landed(ed, ticket, int(d["wire_bytes"]), False)
        ed.receiver.add(float(d["arrival"]), int(d["wire_bytes"]))
        st.receiver.add(float(d["arrival"]), int(d["wire_bytes"]))
        rejected = ed.ledger.reject(d["rejected_ids"], d["errors"])
        st.exporter.count("rejected", n=rejected)
        if rejected and st.results is not None:
            ids = [int(d["rejected_ids"][j]) for j in ed.ledger.last_fresh]
            reason = f"frame did not decode: {d['errors'][0] if d['errors'] else 'unknown'}"
            keys = [ed.key(ticket, i) for i in ids]
            st.results.rejected(ed.index, ids, keys, [reason] * len(ids), ticket.setting)

    def _acknowledged(self, ed: EdgeState, ticket: Ticket, m: dict[str, Any]) -> None:
        st = self.state
        ed.ledger.deliver(m["ids"], m["latency_s"], m["correct"], m["agree"], m.get("text"))
        if st.results is not None and ed.ledger.last_fresh:
            res = m.get("results") or {}
            keys = [ed.key(ticket, int(i)) for i in m["ids"]]
            st.results.delivered(
                ed.index, m["ids"], keys, m["latency_s"], res.get("labels"), res,
                ed.ledger.last_fresh, ticket.setting,
            )  # fmt: skip
        if m["latency_s"]:
            self.rate.latency(ed, max(m["latency_s"]), ticket.wire_bytes)
        ed.open_tickets -= 1  # acknowledged: the edge's copy goes with the ticket
        ed.aloft.discard(ticket.number)

    def source_batch(self, ed: EdgeState, task: Task, meta: dict[str, Any]) -> Ticket | None:
        """A source call made a batch: its ticket, queued before the step after the source (None:
        it made nothing to pass on)."""
        st = self.state
        ed.busy = False
        ed.source_attempts = 0
        ed.t0 = meta["t0"]
        n, start = int(meta["n"]), int(meta["start"])
        end = ed.first_id + ed.samples
        if start == ed.next_start and meta.get("dropped"):
            self.shed(ed, start, int(meta["dropped"]), meta.get("dropped_keys"))
            ed.next_start = start = int(meta["first"])
        ticket: Ticket | None = None
        if n > 0 and start == ed.next_start:
            ticket = Ticket(st.batches, ed.index, start, n, float(meta["t_created"]), task.data_ref)
            ticket.keys, ticket.items_ref = meta.get("keys"), task.input_ref
            ticket.launched, ticket.clear = task.submitted, task.clear
            st.batches += 1
            st.batch_sizes[n] += 1
            ed.next_start = start + n
            ed.last_n = n
            self.rejected_at_source(ed, ticket, meta.get("rejected") or [])
            if meta.get("good", n) > 0:
                ed.open_tickets += 1
                ed.aloft.add(ticket.number)
                ticket.pos = 1  # queued before chain[1], holding the credit of that hop
                ed.chain[1].queue.append((ticket, task.data_ref))
            else:  # nothing of it loaded: it is settled already
                self.admission.source_unused(ed)
                ticket = None
        else:
            self.admission.source_unused(ed)
        ed.done = st.stopping or bool(meta["done"]) or ed.next_start >= end
        return ticket

    def shed(self, ed: EdgeState, start: int, count: int, keys: list[str] | None) -> None:
        """Samples ``start .. start+count-1`` that a live source dropped unread (``flow.overflow``):
        they settle as dropped."""
        st = self.state
        ids = list(range(start, start + count))
        fresh = ed.ledger.drop(ids)
        st.exporter.count("dropped", n=fresh)
        if fresh and st.results is not None:
            keep = ed.ledger.last_fresh
            reason = f"shed: the stream could not keep up (flow.overflow={st.cfg.flow.overflow})"
            st.results.dropped(
                ed.index, [ids[j] for j in keep],
                [None if keys is None else keys[j] for j in keep], reason,
            )  # fmt: skip
        self.on_settled()

    def rejected_at_source(self, ed: EdgeState, ticket: Ticket, rejected: list[Any]) -> None:
        """Samples that did not load (a bad file, a bad item) settle as rejected, with reasons."""
        if not rejected:
            return
        st = self.state
        ids = [int(i) for i, _ in rejected]
        reasons = [str(r) for _, r in rejected]
        fresh = ed.ledger.reject(ids, reasons[:1])
        st.exporter.count("rejected", n=fresh)
        if fresh and st.results is not None:
            keep = ed.ledger.last_fresh
            st.results.rejected(
                ed.index, [ids[j] for j in keep], [ed.key(ticket, ids[j]) for j in keep],
                [reasons[j] for j in keep], {},
            )  # fmt: skip
        self.on_settled()

    def encoded(self, ed: EdgeState, ticket: Ticket, meta: dict[str, Any]) -> None:
        """A batch was coded: it joins its edge's backlog until the receiver has it."""
        st = self.state
        ed.backlog_bytes += int(meta.get("wire_bytes", 0)) - ticket.wire_bytes
        ticket.wire_bytes = int(meta.get("wire_bytes", 0))
        if "tokens" in meta:
            st.tokens[0] += int(meta["tokens"])
            st.tokens[1] += int(meta["positions"])
        setting = meta.get("setting")
        if setting is None:  # rate.mode=fixed: codec.* as configured
            st.settings[st.fixed_label] += int(meta["n"])
            ticket.setting = st.fixed_setting
            return
        st.settings[setting.label()] += int(meta["n"])
        ticket.setting = {"bits": setting.bits, "level": setting.level, "label": setting.label()}
        if ed.rate is not None:
            ed.rate.observe_batch(setting, int(meta["n"]), ticket.wire_bytes)

    def arrived(self, ed: EdgeState, ticket: Ticket) -> None:
        """A batch reached the receiver: it leaves its edge's backlog."""
        ed.backlog_bytes -= ticket.wire_bytes
        ticket.wire_bytes = 0
