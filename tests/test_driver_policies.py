"""The driver's policies (:mod:`pipeline.stream.driver`) one by one, and the executor's loop over
them, with no Ray: a fake clock and fake actor handles (:mod:`fake_handles`)."""

from __future__ import annotations

import pytest
from fake_handles import (
    ActorDied,
    ActorUnavailable,
    FakeCalls,
    FakeClock,
    FakeHandle,
    FakeRef,
    fake_config,
    fake_graph,
    fake_state,
)

from codec import CodecSettings
from pipeline.stream.autoscale import PoolAutoscaler, PoolScaler
from pipeline.stream.driver.admission import Admission, inflight_window
from pipeline.stream.driver.delivery import DeliveryAccounting
from pipeline.stream.driver.dispatch import Dispatcher
from pipeline.stream.driver.meter import Meter
from pipeline.stream.driver.rate_decisions import STALL_AGE_S, RateDecisions
from pipeline.stream.driver.recovery import DEAD_AFTER_PROBES, REPROBE_DELAY_S, Recovery
from pipeline.stream.driver.scaling import PoolScaling
from pipeline.stream.driver.state import Task, Ticket
from pipeline.stream.driver.watchdog import Watchdog
from pipeline.stream.errors import StreamError
from pipeline.stream.executor import StreamExecutor
from pipeline.stream.flow import LinkWindow


class Policies:
    """The policies wired over one fake state, as the executor wires them."""

    def __init__(self, *overrides: str, edges: int = 1, cloud_replicas: int = 1) -> None:
        graph = fake_graph(edges, cloud_replicas)
        self.graph = graph
        self.state, self.calls, self.clock = fake_state(fake_config(*overrides), graph)
        st = self.state
        self.settled = 0
        self.admission = Admission(st)
        self.rate = RateDecisions(st)
        self.dispatcher = Dispatcher(st, self.calls, self.admission, self.rate)
        self.delivery = DeliveryAccounting(st, self.admission, self.rate, self._settle)
        self.recovery = Recovery(st, self.calls, self.dispatcher)
        self.watchdog = Watchdog(st, self.calls, self.recovery)

    def _settle(self) -> None:
        self.settled += 1

    def ticket(self, edge: int = 0, start: int = 0, n: int = 4, pos: int = 1) -> Ticket:
        t = Ticket(self.state.batches, edge, start, n, self.clock(), source_ref=None, pos=pos)
        self.state.batches += 1
        return t

    def finish(self, ref: object) -> None:
        """Hand a finished call's meta to the policy the executor would."""
        task = self.state.tasks.pop(ref)
        kind, value = self.calls.finished.pop(ref)
        assert kind == "ok"
        if task.kind == "probe":
            self.recovery.probe_succeeded(task.step, task.replica, value)
        else:
            self.delivery.succeeded(task, value)


# ---------------------------------------------------------------- admission and credits
def test_a_step_starts_a_queued_batch_only_with_the_next_hops_credit():
    p = Policies("flow.window=1")
    ed, head = p.state.edges[0], p.state.edges[0].chain[1]
    first, second = p.ticket(start=0), p.ticket(start=4)
    head.queue.extend([(first, "in0"), (second, "in4")])
    ed.hops[1].in_flight = 2  # both hold the hop into the head
    assert p.admission.next_batch(head) == (0, first, "in0")
    assert ed.hops[2].in_flight == 1 and ed.hops[1].in_flight == 1
    head.replicas[0].load = 0
    assert p.admission.next_batch(head) is None  # the encoder's hop is full: blocked
    assert head.blocked and list(head.queue) == [(second, "in4")]


def test_a_replay_goes_first_and_takes_no_new_credit():
    p = Policies("flow.window=1")
    ed, head = p.state.edges[0], p.state.edges[0].chain[1]
    ed.hops[2].in_flight = 1  # the replayed batch still holds it
    replayed, queued = p.ticket(start=0), p.ticket(start=4)
    head.queue.append((queued, "in4"))
    head.replay.append((replayed, "in0"))
    assert p.admission.next_batch(head) == (0, replayed, "in0")
    assert ed.hops[2].in_flight == 1


def test_a_shared_step_lets_another_edges_batch_pass_one_without_credit():
    p = Policies("flow.window=1", edges=2)
    decoder = p.state.cloud[0]
    stuck, free = p.ticket(edge=0, pos=4), p.ticket(edge=1, pos=4)
    for ed in p.state.edges:
        ed.hops[4].in_flight = 1  # each holds its hop into the decoder
    p.state.edges[0].hops[5].in_flight = 1  # edge 0's hop into the tail is full
    decoder.queue.extend([(stuck, "a"), (free, "b")])
    assert p.admission.next_batch(decoder) == (0, free, "b")
    assert list(decoder.queue) == [(stuck, "a")]


def test_the_source_waits_for_the_links_window_and_the_next_hop():
    p = Policies("flow.inflight=2", "flow.window=1")
    ed = p.state.edges[0]
    assert p.admission.source_may_start(ed) and ed.hops[1].in_flight == 1
    assert not p.admission.source_may_start(ed) and not ed.held_back  # no credit into the head
    ed.aloft.update({0, 1})
    assert not p.admission.source_may_start(ed) and ed.held_back  # the link has what it needs
    p.admission.source_unused(ed)
    assert ed.hops[1].in_flight == 0


def test_the_inflight_limit_is_a_number_or_sized_from_a_limited_link():
    p = Policies()
    chain = p.state.edges[0].chain
    assert inflight_window(fake_config("flow.inflight=3"), chain, 4.0) == (3, None)
    cap = 4 * 4  # flow.window for each hop up to the transport
    assert inflight_window(fake_config(), chain, None) == (cap, None)  # unconstrained
    size, window = inflight_window(fake_config(), chain, 4.0)
    assert size == cap and isinstance(window, LinkWindow)


def test_a_delivery_leaves_the_window_once_and_a_replayed_one_is_ignored():
    p = Policies()
    ed = p.state.edges[0]
    t = p.ticket()
    ed.aloft.add(t.number)
    ed.held_back = True
    p.admission.landed(ed, t, 400, idle_link=True)
    assert t.number not in ed.aloft and not ed.held_back
    ed.held_back = True
    p.admission.landed(ed, t, 400, idle_link=True)  # delivered before: nothing changes
    assert ed.held_back


# ---------------------------------------------------------------- rate decisions
class FakeController:
    """What the rate policy tells a rate controller."""

    def __init__(self, rate_bps: float | None = None) -> None:
        self.rate_bps = rate_bps
        self.rates: list[tuple[int, float]] = []
        self.latencies: list[tuple[float, float]] = []
        self.asked: list[tuple[int, int, float | None]] = []

    def observe_rate(self, nbytes: int, span: float, now: float) -> None:
        self.rates.append((nbytes, span))

    def observe_latency(self, worst: float, transmit_s: float) -> None:
        self.latencies.append((worst, transmit_s))

    def choose(self, samples: int, backlog: int, now: float, cap: float | None):
        self.asked.append((samples, backlog, cap))
        return CodecSettings(4)


def test_a_busy_run_of_deliveries_is_a_sample_of_the_links_rate():
    p = Policies()
    ed = p.state.edges[0]
    ed.rate = ctl = FakeController()  # type: ignore[assignment]
    p.rate.delivered(ed, 1.0, 100, queued=False)
    p.rate.delivered(ed, 1.5, 200, queued=True)
    assert not ctl.rates
    p.rate.delivered(ed, 2.0, 300, queued=True)
    assert ctl.rates == [(500, 1.0)]  # the first delivery only marks the run's start
    p.rate.delivered(ed, 9.0, 100, queued=False)  # the link was idle: a new run
    assert len(ed.busy_run) == 1


def test_a_batch_stuck_on_the_link_caps_the_rate_the_controller_is_told():
    p = Policies()
    ed = p.state.edges[0]
    assert p.rate.choose(ed, 4) is None  # rate.mode=fixed: no setting
    ed.rate = ctl = FakeController(rate_bps=1e6)  # type: ignore[assignment]
    ed.backlog_bytes = 800
    ed.on_link[0] = (p.clock(), 1000)
    assert p.rate.choose(ed, 4) == CodecSettings(4)
    assert ctl.asked[-1] == (4, 800, None)  # just handed over: no bound
    p.clock.advance(2 * STALL_AGE_S)
    p.rate.choose(ed, 4)
    assert ctl.asked[-1][2] == pytest.approx(1000 / (2 * STALL_AGE_S))


def test_an_acknowledged_batch_reports_its_worst_latency():
    p = Policies()
    ed = p.state.edges[0]
    ed.rate = ctl = FakeController(rate_bps=1000.0)  # type: ignore[assignment]
    p.rate.latency(ed, 0.25, 500)
    assert ed.recent_latency_s == 0.25 and ctl.latencies == [(0.25, 0.5)]


# ---------------------------------------------------------------- dispatch and delivery accounting
def test_a_batch_flows_from_the_source_to_the_sink_and_settles_once():
    p = Policies("samples=4")
    p.calls.end = 4
    st, ed = p.state, p.state.edges[0]
    for _ in range(7):  # source, head, encoder, transport, decoder, tail, sink
        p.dispatcher.submit_all()
        for ref in list(st.tasks):
            p.finish(ref)
    assert ed.ledger.delivered == 4 and ed.finished and not st.tasks
    assert ed.backlog_bytes == 0 and not ed.aloft and st.receiver.bytes == 400
    assert st.settings[st.fixed_label] == 4 and st.batch_sizes[4] == 1
    assert [m for m, _, _ in p.calls.log] == [
        "next_batch", "process", "process", "send", "process", "process", "receive",
    ]  # fmt: skip
    assert all(h.in_flight == 0 for h in ed.hops)


def test_a_source_call_that_loads_nothing_gives_its_credit_back():
    p = Policies()
    ed = p.state.edges[0]
    assert p.admission.source_may_start(ed)
    task = Task("source", ed.chain[0], 0, data_ref="d", edge=0)
    meta = {"t0": 0.0, "n": 2, "start": 0, "t_created": 1.0, "done": False, "good": 0}
    meta["rejected"] = [(0, "bad file"), (1, "bad file")]
    assert p.delivery.source_batch(ed, task, meta) is None
    assert ed.hops[1].in_flight == 0 and ed.ledger.rejected == 2 and ed.next_start == 2


def test_samples_a_live_source_shed_settle_as_dropped():
    p = Policies()
    ed = p.state.edges[0]
    p.delivery.shed(ed, 0, 3, None)
    assert ed.ledger.dropped == 3 and p.settled == 1


# ---------------------------------------------------------------- replay and recovery
def _running(p: Policies, step: int = 1) -> Task:
    """A batch that was running at ``chain[step]`` of edge 0 (its call is out of ``state.tasks``,
    as the executor takes a finished call out; ``task.input_ref`` is its input)."""
    ed = p.state.edges[0]
    t = p.ticket(pos=step)
    ed.open_tickets += 1
    ed.hops[step + 1].in_flight += 1
    p.dispatcher.launch(ed.chain[step], 0, t, FakeRef("input", (t.start, t.n)))
    return p.state.tasks.pop(next(iter(p.state.tasks)))


def test_a_dead_actors_batch_is_replayed_once_a_new_process_answers_the_probe():
    p = Policies()
    head = p.state.edges[0].chain[1]
    task = _running(p)
    p.recovery.actor_failed(task, ActorUnavailable("restarting"))
    rep = head.replicas[0]
    assert rep.state == "recovering" and list(head.replay) == [(task.ticket, task.input_ref)]
    assert p.state.stats["head"].replayed_batches == 1 and rep.load == 0
    (probe,) = [t for t in p.state.tasks.values() if t.kind == "probe"]
    p.recovery.probe_succeeded(head, 0, {"pid": rep.pid + 1})
    assert rep.state == "up" and rep.restarts == 1 and head.restarts == 1
    assert p.state.stats["head"].restarts == 1


def test_a_late_probe_from_an_earlier_process_is_not_a_restart():
    p = Policies()
    head = p.state.edges[0].chain[1]
    rep = head.replicas[0]
    old = rep.pid
    p.recovery.probe_succeeded(head, 0, {"pid": old + 1})
    p.recovery.probe_succeeded(head, 0, {"pid": old})
    assert rep.restarts == 1


def test_a_replica_that_stays_dead_ends_the_run_after_its_probes():
    p = Policies()
    head = p.state.edges[0].chain[1]
    head.replicas[0].state = "recovering"
    probe = Task("probe", head, 0)
    for _ in range(DEAD_AFTER_PROBES - 1):
        p.recovery.probe_failed(probe, ActorDied("gone"))
    assert len(p.state.reprobes) == DEAD_AFTER_PROBES - 1
    p.state.reprobes.clear()
    p.recovery.probe_failed(probe, ActorUnavailable("not yet"))  # not a death: reprobe later
    with pytest.raises(StreamError) as err:
        p.recovery.probe_failed(probe, ActorDied("gone"))
    assert err.value.kind == "actor_dead" and err.value.stage == "head"


def test_a_reprobe_goes_out_when_its_pause_is_over():
    p = Policies()
    head = p.state.edges[0].chain[1]
    head.replicas[0].state = "recovering"
    p.recovery.probe_failed(Task("probe", head, 0), ActorUnavailable("not yet"))
    p.recovery.fire_reprobes(p.clock())
    assert not p.state.tasks
    p.clock.advance(REPROBE_DELAY_S)
    p.recovery.fire_reprobes(p.clock())
    assert [t.kind for t in p.state.tasks.values()] == ["probe"] and not p.state.reprobes


def test_a_batch_whose_code_raises_is_retried_then_fails_the_run_naming_its_stage():
    p = Policies("flow.max_batch_retries=1")
    head = p.state.edges[0].chain[1]
    task = _running(p)
    p.recovery.raised(task, ValueError("bad batch"))
    assert (
        list(head.replay) == [(task.ticket, task.input_ref)] and p.state.stats["head"].retries == 1
    )
    head.replay.clear()
    with pytest.raises(StreamError) as err:
        p.recovery.raised(task, ValueError("bad batch"))
    assert err.value.kind == "stage_failed" and err.value.stage == "head"
    assert "ValueError: bad batch" in str(err.value)


def test_a_lost_input_starts_the_batch_again_from_the_edges_copy():
    p = Policies()
    ed = p.state.edges[0]
    task = _running(p, step=2)  # at the encoder
    p.recovery.input_lost(task, RuntimeError("object lost"))
    assert task.ticket.pos == 1 and task.ticket.rebuild
    assert ed.chain[1].queue[0] == (task.ticket, task.ticket.source_ref)
    assert ed.hops[3].in_flight == 0 and ed.hops[1].in_flight == 1
    again = _running(p, step=2)
    again.ticket.rebuild = True
    p.recovery.input_lost(again, RuntimeError("object lost"))  # lost twice: rebuild
    assert list(ed.rebuilds) == [again.ticket]


def test_a_replica_on_a_lost_node_is_recovering_and_probed():
    p = Policies()
    p.calls.alive = {"node-e0.source", "node-e0.encoder", "node-e0.transport"}
    p.calls.alive |= {"node-decoder", "node-tail", "node-sink"}
    p.recovery.check_nodes(p.clock())
    head = p.state.edges[0].chain[1]
    assert head.replicas[0].state == "recovering" and "was lost" in head.replicas[0].error
    assert [t.step for t in p.state.tasks.values()] == [head]


def test_a_fleet_gives_up_an_edge_and_drops_only_its_work():
    p = Policies(edges=2)
    ed = p.state.edges[1]
    ed.chain[1].queue.append((p.ticket(edge=1), "x"))
    ed.open_tickets = 1
    p.recovery.give_up_edge(ed, StreamError("gone", stage="head", kind="restart_timeout"))
    assert ed.finished and not ed.chain[1].queue
    assert p.state.edges[0].chain[1].replicas[0].state == "up"
    with pytest.raises(StreamError, match="edge 1 given up"):
        p.recovery.raise_given_up()


# ---------------------------------------------------------------- watchdogs
def test_no_call_finishing_for_the_stall_timeout_is_a_stall_naming_the_oldest_call():
    p = Policies("flow.stall_restarts=0")
    p.dispatcher.submit_all()  # the source's call, which never finishes
    p.watchdog.check(p.clock())
    p.clock.advance(p.state.stall_timeout_s + 1)
    with pytest.raises(StreamError) as err:
        p.watchdog.check(p.clock())
    assert err.value.kind == "stall" and err.value.stage == "source"
    assert "flow.stall_restarts=0" in str(err.value) and not p.calls.restarted


def test_a_stall_first_restarts_the_replica_holding_the_oldest_call_then_ends_the_run():
    p = Policies()  # flow.stall_restarts: 1 by default
    p.dispatcher.submit_all()
    source = p.state.edges[0].chain[0]
    p.clock.advance(p.state.stall_timeout_s + 1)
    p.watchdog.check(p.clock())  # the first stall: a restart, not the end
    assert p.calls.restarted == [source.replicas[0].handle] and p.state.stall_restarts == 1
    p.clock.advance(p.state.stall_timeout_s - 1)
    p.watchdog.check(p.clock())  # the restarted replica gets a whole stall timeout
    p.clock.advance(2)
    with pytest.raises(StreamError) as err:
        p.watchdog.check(p.clock())
    assert err.value.kind == "stall" and "after 1 restart(s) for stalls" in str(err.value)
    assert len(p.calls.restarted) == 1


def test_time_in_a_configured_link_outage_is_not_a_stall():
    p = Policies()
    p.dispatcher.submit_all()
    p.clock.advance(p.state.stall_timeout_s + 1)
    p.state.link_outages[0] = [[p.clock() - 3.0, p.clock()]]
    p.watchdog.check(p.clock())


def test_a_replica_that_does_not_come_back_names_the_missing_placement():
    p = Policies("flow.restart_timeout_s=10")
    rep = p.state.cloud[0].replicas[0]
    rep.state, rep.since, rep.error = "recovering", p.clock(), "died"
    p.dispatcher.submit_all()
    p.clock.advance(9)
    p.watchdog.check(p.clock())  # a replica is restarting: not a stall
    p.clock.advance(2)
    p.calls.room = (0.0, 0.0)
    with pytest.raises(StreamError) as err:
        p.watchdog.check(p.clock())
    assert err.value.kind == "restart_timeout" and "any more" in str(err.value)


def test_a_fleets_edge_that_does_not_come_back_is_given_up_not_the_run():
    p = Policies("flow.restart_timeout_s=10", edges=2)
    rep = p.state.edges[1].chain[1].replicas[0]
    rep.state, rep.since = "recovering", p.clock()
    p.clock.advance(11)
    p.watchdog.check(p.clock())
    assert [e for e, _ in p.state.given_up] == [1] and rep.state == "lost"


# ---------------------------------------------------------------- autoscaling and metering
def test_a_pool_under_demand_grows_and_a_drained_replica_is_killed():
    p = Policies()
    spawned: list[FakeHandle] = []

    def spawn(step: int, r: int) -> FakeHandle:
        spawned.append(FakeHandle(f"decoder{r}", ("decoder",), 3000 + r))
        return spawned[-1]

    p.graph.spawn = spawn
    decoder = p.state.cloud[0]
    decoder.pool = PoolAutoscaler("decoder", PoolScaler(1, 2, 1.0, 0.0, 0.0), drain_s=0.0)
    decoder.queue.extend([(p.ticket(pos=4), "a"), (p.ticket(pos=4), "b")])
    scaling = PoolScaling(p.state, p.calls, p.dispatcher)
    scaling.tick(p.clock())
    assert len(decoder.replicas) == 2 and decoder.replicas[1].state == "starting"
    assert p.graph.cloud[0].handles[-1] is spawned[0]
    assert p.calls.calls_to("decoder1", "ready") == 1
    decoder.queue.clear()
    p.clock.advance(1.0)
    scaling.tick(p.clock())  # no demand: one replica drains ...
    p.clock.advance(1.0)
    scaling.tick(p.clock())  # ... and, idle, is retired
    assert [r.state for r in decoder.replicas].count("retired") == 1 and len(p.calls.killed) == 1


def test_the_meter_times_each_step_and_samples_the_timeline():
    p = Policies()
    meter = Meter(p.state, p.calls)
    head = p.state.edges[0].chain[1]
    head.blocked = True
    head.queue.append((p.ticket(), "x"))
    meter.account(p.clock())
    head.timer.stop()
    assert head.timer.totals.get("backpressured", 0.0) > 0 and head.q_max == 1
    meter.sample(p.clock(), force=True)
    assert p.state.memory["settled_last"] == 0.0 and "object_store_mb_max" in p.state.memory


# ---------------------------------------------------------------- the executor's loop
def _executor(samples: int, calls: FakeCalls, *overrides: str, **kw) -> StreamExecutor:
    cfg = fake_config(f"samples={samples}", *overrides)
    return StreamExecutor(cfg, fake_graph(), stall_timeout_s=5.0, progress=False, calls=calls, **kw)


def test_the_executor_streams_every_sample_through_fake_actors():
    calls = FakeCalls(FakeClock(), batch=4, end=16)
    report = _executor(16, calls).run()
    assert report["delivered"] == 16 and report["lost"] == 0 and report["error"] is None
    assert calls.calls_to("e0.source", "next_batch") == 4


def test_the_executor_replays_through_a_restart_and_counts_it():
    calls = FakeCalls(FakeClock(), batch=4, end=16)
    ex = _executor(16, calls)
    tail = ex.state.cloud[1].replicas[0]
    tail.handle.fail = [("actor", ActorUnavailable("restarting"))]
    tail.handle.pid += 1  # the probe is answered by a new process
    report = ex.run()
    assert report["delivered"] == 16 and report["restarts"] == 1
    assert report["replayed_batches"] == 1


def test_the_executor_fails_with_the_partial_report_when_a_call_keeps_raising():
    calls = FakeCalls(FakeClock(), batch=4, end=16)
    ex = _executor(16, calls, "flow.max_batch_retries=1")
    sink = ex.state.cloud[2].replicas[0].handle
    sink.fail = [("raised", RuntimeError("sink broke"))] * 2
    with pytest.raises(StreamError) as err:
        ex.run()
    assert err.value.stage == "sink" and err.value.report is not None
    assert err.value.report["error"]["kind"] == "stage_failed"
