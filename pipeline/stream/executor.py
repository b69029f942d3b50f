"""The stream's driver: moves batches from every edge through the shared cloud pool under credit
windows, survives actor failures by replaying, and never waits forever.

The graph it runs (:class:`StageGraph`) is built by the layer above: per edge, a chain of
:class:`Step` s from the source to the transport; then the cloud steps every edge shares, ending with
the sink. A step is the replicas of one actor class serving one or more consecutive logical stages
(more than one when they are fused into one process). The executor imports no actor class; it knows
their calls: the first step of an edge ``next_batch(start, t0)`` / ``rebuild(...)``, a step that
starts with the transport ``send(batch, ticket, floor)``, one that is only the sink
``receive(batch)``, every other step ``process(batch)``, and every actor ``ready()``. Like Ray Data's streaming executor it never fetches
batch data: every call returns ``(meta, data)``; the driver fetches only the small ``meta`` and passes
the ``data`` ref on.

Flow control: each edge has a :class:`~pipeline.stream.flow.CreditWindow` on every hop of its chain,
the shared cloud hops included, so a slow edge holds back only itself and a slow cloud holds back
every edge. On top of those, an edge keeps only as many batches in flight to its link (from the
source call that makes a batch to its delivery) as the link needs: ``flow.inflight``, sized by a
:class:`~pipeline.stream.flow.LinkWindow` from the measured rate and round trip (``auto``).

Failure model (at-least-once transport, idempotent sink, exactly-once results):

* The edge keeps every batch (the source's object ref, and its sample ids and creation time to
  rebuild it) until the sink acknowledges it.
* When a call fails because its actor died (``RayActorError``), the batch goes back to that step's
  replay queue with the same input, the replica is probed until Ray has restarted it, and the replay
  is resubmitted first. A batch whose input object was lost with a node starts again from its edge's
  first step, or is rebuilt by the source from its sample ids.
* A call that raises is retried ``flow.max_batch_retries`` times, then the run fails naming the stage.
* Each edge's :class:`~pipeline.stream.ledger.DeliveryLedger` settles every sample id once
  (delivered, or rejected by the decoder) and drops repeats.
* Watchdogs: no call finished for ``stall_timeout_s`` (while no replica is restarting), or a replica
  that does not come back within ``flow.restart_timeout_s``, ends the run with a :class:`StreamError`
  naming the stage (and the placement resource, when no alive node offers it or has room for it: its
  node was lost); the error carries the partial report. In a fleet, an edge whose actors cannot come
  back is given up instead: the other edges finish, then the run fails naming its unsettled ids.

The loop here only sequences the parts in :mod:`pipeline.stream.driver`: admission and
credits (``admission``), dispatching calls (``dispatch``), rate decisions (``rate_decisions``),
delivery accounting (``delivery``), replay and recovery (``recovery``), watchdogs (``watchdog``),
autoscaling (``scaling``), metering (``meter``) and the report (``reporter``). Every Ray call goes
through ``ray_calls``.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.stream.config import PipelineConfig
from pipeline.stream.data import UNBOUNDED
from pipeline.stream.driver.admission import Admission
from pipeline.stream.driver.build import build_state
from pipeline.stream.driver.delivery import DeliveryAccounting
from pipeline.stream.driver.dispatch import Dispatcher
from pipeline.stream.driver.meter import Meter
from pipeline.stream.driver.rate_decisions import RateDecisions
from pipeline.stream.driver.recovery import REPROBE_DELAY_S, Recovery
from pipeline.stream.driver.reporter import Reporter
from pipeline.stream.driver.scaling import PoolScaling
from pipeline.stream.driver.state import (
    CLOUD_STAGES,
    EDGE_STAGES,
    STAGES,
    RemoteCalls,
    StageGraph,
    Step,
    Task,
)
from pipeline.stream.driver.watchdog import Watchdog
from pipeline.stream.errors import StageFailure, StreamError, short
from pipeline.stream.feeder import ItemFeeder
from pipeline.stream.rate import RateProfile
from pipeline.stream.results import ResultLog
from pipeline.stream.stopping import StopControl

__all__ = [
    "CLOUD_STAGES", "EDGE_STAGES", "STAGES", "StageFailure", "StageGraph", "Step", "StreamError",
    "StreamExecutor",
]  # fmt: skip

WAIT_TIMEOUT_S = 0.1
"""Longest the driver sleeps in ``ray.wait`` before it checks its watchdogs again."""

FEED_WAIT_S = 0.005
"""How long the driver waits for an iterable's next items when nothing else is running."""


class StreamExecutor:
    """Runs one stream over ``graph`` and returns its report (see :meth:`run`).

    ``configured_mbps`` holds each edge's configured link rate (None: unconstrained or real);
    ``calls`` is how it reaches the actors (default: through Ray)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        graph: StageGraph,
        *,
        stall_timeout_s: float,
        configured_mbps: list[float | None] | None = None,
        profile: RateProfile | None = None,
        progress: bool = True,
        ranges: list[tuple[int, int]] | None = None,
        results: ResultLog | None = None,
        stop: StopControl | None = None,
        feeder: ItemFeeder | None = None,
        resume: list[dict[str, Any]] | None = None,
        calls: RemoteCalls | None = None,
    ) -> None:
        """``ranges``: each edge's ``(first id, samples)`` (default: ``cfg.samples`` each);
        ``results``: where each settled sample's row goes; ``stop``: stop and abort requests;
        ``feeder``: an iterable source's items (one edge); ``resume``: each edge's settled ids from a
        checkpoint (:meth:`edge_states`)."""
        if calls is None:
            from pipeline.stream.driver.ray_calls import RayCalls

            calls = RayCalls()
        self.calls = calls
        self.cfg = cfg
        self.progress = progress
        self.state = st = build_state(
            cfg, graph, calls, stall_timeout_s=stall_timeout_s, configured_mbps=configured_mbps,
            profile=profile, ranges=ranges, results=results, stop=stop, feeder=feeder,
            resume=resume,
        )  # fmt: skip
        self.meter = Meter(st, calls)
        self.admission = Admission(st)
        self.rate = RateDecisions(st)
        self.dispatcher = Dispatcher(st, calls, self.admission, self.rate)
        self.delivery = DeliveryAccounting(st, self.admission, self.rate, self.meter.progress)
        self.recovery = Recovery(st, calls, self.dispatcher)
        self.watchdog = Watchdog(st, calls, self.recovery)
        self.scaling = PoolScaling(st, calls, self.dispatcher)
        self.reporter = Reporter(st)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        """Stream every sample; returns the report. Raises :class:`StreamError` (with ``.report``
        holding the partial report) when the stream cannot finish."""
        st = self.state
        self.meter.open_bar(self._total(), self.progress)
        st.t_start = st.last_progress = st.clock()
        st.t_start_wall = st.wall_clock()
        st.cpu_start = time.process_time()
        for s in st.steps:
            s.t_last = st.t_start
        if st.stop is not None:
            st.stop.start()
        try:
            self._loop()
            self.recovery.raise_given_up()
        except StreamError as exc:
            st.error = exc
        except Exception as exc:  # a bug in the driver: still end with what was measured
            st.error = StreamError(f"internal error: {short(exc)}", kind="internal")
            st.error.__cause__ = exc
        finally:
            st.wall = st.clock() - st.t_start
            self.meter.bar.close()
            for s in st.steps:
                s.timer.stop()
            if st.feeder is not None:
                st.feeder.close()
        self._read_so_far()
        if st.results is not None:
            try:
                st.results.commit(self.edge_states(), final=True)
            except OSError as exc:  # the output could not be written: the run fails and says so
                st.error = st.error or StreamError(f"output: {exc}", kind="output")
        self.meter.sample(st.clock(), force=True)
        report = self.report()
        if st.error is not None:
            st.error.report = report
            raise st.error
        return report

    def report(self) -> dict[str, Any]:
        """The run's report so far (complete after :meth:`run`; partial if it failed)."""
        return self.reporter.report()

    def _total(self) -> int | None:
        """Samples the stream will settle, when known (the progress bar's end)."""
        st = self.state
        if st.feeder is not None and self.cfg.samples is None:
            return None
        if any(e.samples >= UNBOUNDED for e in st.edges):
            return None
        return sum(e.samples for e in st.edges)

    def _read_so_far(self) -> None:
        """A stream that stopped reading, or whose source has no set end, expects only the samples
        it read: every one of them settles, and none after them is lost."""
        st = self.state
        for ed in st.edges:
            if st.stopping or ed.samples >= UNBOUNDED or st.feeder is not None:
                ed.ledger.samples = min(ed.samples, ed.next_start - ed.first_id)

    def edge_states(self) -> list[dict[str, Any]]:
        """Each edge's settled ids and position: what a checkpoint records."""
        return [
            {**ed.ledger.settled_state(), "first_id": ed.first_id, "next_start": ed.next_start}
            for ed in self.state.edges
        ]

    def _check_stop(self) -> None:
        """Act on stop requests: the first stops every source, a second aborts the run."""
        st = self.state
        if st.stop is None:
            return
        if st.stop.aborted:
            raise StreamError(
                "aborted: a second stop request ended the run at once", kind="aborted"
            )
        if st.stop.stopping and not st.stopping:
            st.stopping = True
            for ed in st.edges:
                ed.done = True
            if st.feeder is not None:
                st.feeder.close()
            st.stop.acted_on()

    def _loop(self) -> None:
        st = self.state
        while not all(e.finished for e in st.edges):
            now = st.clock()
            self._check_stop()
            if st.feeder is not None and st.feeder.error is not None:
                raise StreamError(
                    f"the input iterable raised {short(st.feeder.error)}", kind="source"
                )
            if st.results is not None and st.results.due():
                st.results.commit(self.edge_states())
            self.recovery.check_nodes(now)
            self.watchdog.check(now)
            self.recovery.fire_reprobes(now)
            self.scaling.tick(now)
            self.dispatcher.submit_all()
            self.meter.account(now)
            self.meter.sample(now)
            waiting = self.dispatcher.waiting_for_items()
            if not st.tasks:
                if st.reprobes:
                    time.sleep(REPROBE_DELAY_S / 5)
                    continue
                if waiting:
                    assert st.feeder is not None
                    st.feeder.take(0, FEED_WAIT_S)
                    st.last_progress = st.clock()  # a quiet iterable is not a stall
                    continue
                if all(e.finished for e in st.edges):
                    break
                raise StreamError(
                    "internal error: nothing is running but work remains", kind="internal"
                )
            ready = self.calls.wait(list(st.tasks), FEED_WAIT_S if waiting else WAIT_TIMEOUT_S)
            self._complete(ready)

    # ------------------------------------------------------------------ completions
    def _complete(self, refs: list[Any]) -> None:
        """Hand each finished call to the policy its outcome concerns."""
        if not refs:
            return
        st = self.state
        st.calls += len(refs)
        for ref, outcome, value in self.calls.outcomes(refs):
            if outcome == "timeout":
                task = st.tasks[ref]
                raise StreamError(
                    f"internal error: finished calls (stage '{task.step.name}') could not be "
                    f"fetched within {value:.0f} s",
                    stage=task.step.name,
                    kind="internal",
                )
            task = st.tasks.pop(ref)
            if outcome == "ok":
                self._succeeded(task, value)
            elif outcome == "input_lost":
                self.recovery.input_lost(task, value)
            elif outcome == "raised":
                self.recovery.raised(task, value)
            else:
                self.recovery.actor_failed(task, value)

    def _succeeded(self, task: Task, meta: Any) -> None:
        self.state.last_progress = self.state.clock()
        if task.kind == "probe":
            self.recovery.probe_succeeded(task.step, task.replica, meta)
        else:
            self.delivery.succeeded(task, meta)
