"""The stream's driver: moves batches through the stage actors under credit windows, survives actor
failures by replaying, and never waits forever.

It works on actor handles it is given (:class:`StageGraph`, built by the layer above) and on their call
protocol -- ``source.next_batch/rebuild``, ``<stage>.process``, ``transport.send``, ``sink.receive``,
``<any>.ready`` -- and imports no actor class. Like Ray Data's streaming executor it never fetches batch
data: every call returns ``(meta, data)``; the driver fetches only the small ``meta`` and passes the
``data`` ref on to the next stage.

Flow control: every hop into a stage has a :class:`~pipeline.stream.flow.CreditWindow`. A stage starts a
batch only when the hop after it grants a credit, so a slow link slows the head instead of filling
memory.

Failure model (at-least-once transport, idempotent sink, exactly-once results):

* The edge keeps every batch (its source object ref, and enough to rebuild it from the source by
  sample id) until the sink acknowledges it.
* Stage actors are created with Ray's restart options. When a call fails because its actor died
  (``RayActorError``), the batch goes back to that stage's replay queue with the same input, the
  replica is probed until Ray has restarted it, and the replay is resubmitted. A batch whose input
  object was lost with a node is replayed from the head, or rebuilt by the source.
* A call that raises (a bug or bad data in a stage) is retried ``flow.max_batch_retries`` times, then
  the run fails naming the stage.
* The driver's :class:`~pipeline.stream.ledger.DeliveryLedger` settles each sample id once (delivered,
  or rejected by the decoder) and drops repeats.
* Watchdogs: no progress for ``stall_timeout_s`` (while no replica is restarting), or a replica that
  does not come back within ``flow.restart_timeout_s``, ends the run with a :class:`StreamError` naming
  the stage; the error carries the partial report.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from pipeline.stream.config import PipelineConfig
from pipeline.stream.flow import CreditWindow, StateTimer
from pipeline.stream.ledger import DeliveryLedger
from pipeline.stream.metrics import (
    DriverExporter,
    LinkStats,
    ReceiverStats,
    StageStats,
    Timeline,
    object_store_mb,
    process_rss_bytes,
)

STAGES = ("head", "encoder", "transport", "decoder", "tail", "sink")
EDGE_STAGES = ("source", "head", "encoder", "transport")
CLOUD_STAGES = ("decoder", "tail", "sink")

GET_TIMEOUT_S = 30.0
"""Bound on fetching a ``meta`` that ``ray.wait`` already reported ready."""

WAIT_TIMEOUT_S = 0.1
"""Longest the driver sleeps in ``ray.wait`` before it checks its watchdogs again."""

REPROBE_DELAY_S = 0.25
"""Pause between probes of a replica that Ray reports as unavailable."""

DEAD_AFTER_PROBES = 3
"""A replica whose probe fails with ``ActorDiedError`` this many times in a row is dead for good."""

WARM_FRACTION = 0.1
"""RSS growth is measured from the moment this fraction of the samples has settled."""


class StreamError(RuntimeError):
    """The stream could not finish. ``kind`` is ``stall``, ``stage_failed``, ``actor_dead``,
    ``restart_timeout`` or ``internal``; ``stage`` names the stage at fault (None if unknown);
    ``report`` is the partial report (set by :meth:`StreamExecutor.run`)."""

    def __init__(self, message: str, *, stage: str | None = None, kind: str = "stage_failed"):
        super().__init__(message)
        self.stage = stage
        self.kind = kind
        self.report: dict[str, Any] | None = None


@dataclass
class StageGraph:
    """The actors of one stream, as the wiring layer created them.

    ``handles`` maps ``source`` and every name in :data:`STAGES` to its replicas' handles; ``where``
    holds each replica's ``ready()`` answer (node id, ip, pid)."""

    handles: dict[str, list[Any]]
    where: dict[str, list[dict[str, Any]]]


@dataclass
class _Ticket:
    """One batch of the stream: which samples, when made, and the edge's copy of its inputs."""

    number: int
    start: int
    n: int
    t_created: float
    source_ref: Any
    attempts: int = 0  # calls that raised at the current stage
    rebuild: bool = False  # its stored inputs were lost once: rebuild from the source next time


@dataclass
class _Replica:
    handle: Any
    pid: int | None
    state: str = "up"  # "up" or "recovering"
    load: int = 0  # calls submitted and not finished
    since: float = 0.0  # when it went down
    probe_failures: int = 0
    error: str = ""


@dataclass
class _Task:
    kind: str  # "stage", "source", "rebuild" or "probe"
    stage: str
    replica: int
    ticket: _Ticket | None = None
    input_ref: Any = None
    data_ref: Any = None
    submitted: float = 0.0
    transport_ticket: int = -1


@dataclass
class _Stage:
    """Driver-side state of one stage: replicas, queues, timers and aggregates."""

    name: str
    replicas: list[_Replica]
    per_replica: int
    stats: StageStats
    queue: deque = field(default_factory=deque)  # (ticket, input ref), holding the hop *into* it
    replay: deque = field(default_factory=deque)  # (ticket, input ref), holding the hop *after* it
    timer: StateTimer = field(default_factory=StateTimer)
    q_area: float = 0.0
    q_max: int = 0
    blocked: bool = False

    def __post_init__(self) -> None:
        self.timer.set("idle")

    @property
    def load(self) -> int:
        return sum(r.load for r in self.replicas)

    def free_replica(self) -> int | None:
        """The least-loaded live replica with a free slot, or None."""
        live = [i for i, r in enumerate(self.replicas) if r.state == "up"]
        if not live:
            return None
        best = min(live, key=lambda i: self.replicas[i].load)
        return best if self.replicas[best].load < self.per_replica else None


def _short(exc: BaseException) -> str:
    """One line naming an exception (a RayTaskError's cause, not its remote traceback)."""
    cause = getattr(exc, "cause", None)
    err = cause if isinstance(cause, BaseException) else exc
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:500]


class StreamExecutor:
    """Runs one stream over ``graph`` and returns its report (see :meth:`run`)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        graph: StageGraph,
        *,
        stall_timeout_s: float,
        configured_mbps: float | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.stall_timeout_s = stall_timeout_s
        self.progress = progress
        w = cfg.flow.window

        def stage(name: str, per_replica: int) -> _Stage:
            hs, where = graph.handles[name], graph.where[name]
            st = _Stage(
                name,
                [_Replica(h, wh.get("pid")) for h, wh in zip(hs, where, strict=True)],
                per_replica,
                StageStats(name, len(hs)),
            )
            for r, wh in enumerate(where):
                st.stats.place(r, wh)
            return st

        per = cfg.flow.per_replica_inflight
        self.source = stage("source", 1)
        self.stages = [stage(n, w if n == "transport" else per) for n in STAGES]
        self.by_name = {st.name: st for st in (self.source, *self.stages)}
        # hops[i]: batches in flight into stages[i] (running at stage i-1 or queued before i)
        self.hops = [CreditWindow(w) for _ in STAGES]
        self.tasks: dict[Any, _Task] = {}
        self.next_start = 0
        self.t0: float | None = None
        self.source_busy = False
        self.source_done = False
        self.source_attempts = 0
        self.rebuilds: deque[_Ticket] = deque()
        self.reprobes: list[tuple[float, str, int]] = []
        self.open_tickets = 0
        self.batches = 0
        self.next_transport_ticket = 0
        self.transport_pending: set[int] = set()
        self.ledger = DeliveryLedger(cfg.samples)
        self.receiver = ReceiverStats()
        self.link = LinkStats(configured_mbps)
        self.batch_sizes: Counter[int] = Counter()
        self.timeline = Timeline()
        self.exporter = DriverExporter()
        self.peak_total = 0
        self.memory: dict[str, float] = {}
        self.t_start = time.monotonic()
        self.last_progress = self.t_start
        self.wall = 0.0
        self.error: StreamError | None = None
        self._bar: Any = None
        self._bar_n = 0

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        """Stream every sample; returns the report. Raises :class:`StreamError` (with ``.report``
        holding the partial report) when the stream cannot finish."""
        from tqdm import tqdm

        self._bar = tqdm(
            total=self.cfg.samples, desc="stream", unit="sample", disable=not self.progress
        )
        self.t_start = self.last_progress = time.monotonic()
        try:
            self._loop()
        except StreamError as exc:
            self.error = exc
        except Exception as exc:  # a bug in the driver: still end with what was measured
            self.error = StreamError(f"internal error: {_short(exc)}", kind="internal")
            self.error.__cause__ = exc
        finally:
            self.wall = time.monotonic() - self.t_start
            self._bar.close()
            for st in (self.source, *self.stages):
                st.timer.stop()
        self._sample(time.monotonic(), force=True)
        report = self.report()
        if self.error is not None:
            self.error.report = report
            raise self.error
        return report

    def _finished(self) -> bool:
        return self.source_done and self.open_tickets == 0 and not self.source_busy

    def _loop(self) -> None:
        import ray

        while not self._finished():
            now = time.monotonic()
            self._watchdogs(now)
            self._fire_reprobes(now)
            for st in self.stages:
                st.blocked = False
            for i in reversed(range(len(self.stages))):
                while self._submit(i):
                    pass
            self._feed_source()
            self._account(now)
            self._sample(now)
            if not self.tasks:
                if self.reprobes:
                    time.sleep(REPROBE_DELAY_S / 5)
                    continue
                raise StreamError(
                    "internal error: nothing is running but work remains", kind="internal"
                )
            watch = list(self.tasks)
            ready, _ = ray.wait(watch, num_returns=1, timeout=WAIT_TIMEOUT_S, fetch_local=False)
            if ready:
                ready, _ = ray.wait(watch, num_returns=len(watch), timeout=0, fetch_local=False)
            for ref in ready:
                self._complete(ref)

    # ------------------------------------------------------------------ submitting
    def _submit(self, i: int) -> bool:
        """Start one batch at stage ``i`` if a replica and the next hop's credit allow it."""
        st = self.stages[i]
        if st.replay:  # replays already hold the next hop's credit and go first
            r = st.free_replica()
            if r is None:
                return False
            ticket, ref = st.replay.popleft()
            self._launch(st, r, ticket, ref)
            return True
        if not st.queue:
            return False
        r = st.free_replica()
        if r is None:
            return False
        if i + 1 < len(self.stages) and not self.hops[i + 1].try_acquire():
            st.blocked = True
            return False
        ticket, ref = st.queue.popleft()
        self.hops[i].release()
        self._launch(st, r, ticket, ref)
        return True

    def _launch(self, st: _Stage, r: int, ticket: _Ticket, ref: Any) -> None:
        rep = st.replicas[r]
        task = _Task("stage", st.name, r, ticket, ref, submitted=time.monotonic())
        if st.name == "transport":
            task.transport_ticket = tnum = self.next_transport_ticket
            self.next_transport_ticket += 1
            self.transport_pending.add(tnum)
            floor = min(self.transport_pending)
            meta, task.data_ref = rep.handle.send.options(num_returns=2).remote(ref, tnum, floor)
        elif st.name == "sink":
            meta = rep.handle.receive.remote(ref)
        else:
            meta, task.data_ref = rep.handle.process.options(num_returns=2).remote(ref)
        self.tasks[meta] = task
        rep.load += 1

    def _feed_source(self) -> None:
        """Ask the source for the next batch (one request at a time), and for rebuilds."""
        rep = self.source.replicas[0]
        if rep.state != "up":
            return
        while self.rebuilds:
            t = self.rebuilds.popleft()
            meta, data = rep.handle.rebuild.options(num_returns=2).remote(
                t.start, t.n, self.t0, t.t_created
            )
            self.tasks[meta] = _Task("rebuild", "source", 0, t, data_ref=data)
            rep.load += 1
        if self.source_done or self.source_busy or not self.hops[0].try_acquire():
            return
        meta, data = rep.handle.next_batch.options(num_returns=2).remote(self.next_start, self.t0)
        self.tasks[meta] = _Task("source", "source", 0, data_ref=data, submitted=time.monotonic())
        rep.load += 1
        self.source_busy = True

    # ------------------------------------------------------------------ completions
    def _complete(self, ref: Any) -> None:
        import ray
        from ray import exceptions as rex

        task = self.tasks.pop(ref)
        try:
            meta = ray.get(ref, timeout=GET_TIMEOUT_S)
        except rex.GetTimeoutError:
            raise StreamError(
                f"internal error: a finished call of stage '{task.stage}' could not be fetched "
                f"within {GET_TIMEOUT_S:.0f} s",
                stage=task.stage,
                kind="internal",
            ) from None
        except rex.RayTaskError as exc:
            if isinstance(getattr(exc, "cause", None), rex.ObjectLostError):
                self._input_lost(task, exc)
            else:
                self._raised(task, exc)
            return
        except rex.ObjectLostError as exc:
            self._input_lost(task, exc)
            return
        except rex.RayError as exc:  # RayActorError and other system failures: the replica's fault
            self._actor_failed(task, exc)
            return
        self._succeeded(task, meta)

    def _succeeded(self, task: _Task, meta: Any) -> None:
        now = time.monotonic()
        self.last_progress = now
        st = self.by_name[task.stage]
        rep = st.replicas[task.replica]
        if task.kind == "probe":
            self._probe_succeeded(st, task.replica, meta)
            return
        rep.load -= 1
        st.stats.add(task.replica, meta)
        if task.kind == "source":
            self._source_batch(task, meta)
            return
        ticket = task.ticket
        assert ticket is not None
        if task.kind == "rebuild":
            ticket.source_ref = task.data_ref
            self.stages[0].replay.append((ticket, task.data_ref))
            return
        ticket.attempts = 0
        if st.name == "transport":
            self.transport_pending.discard(task.transport_ticket)
            self.link.add(meta)
        elif st.name == "decoder":
            self.receiver.add(float(meta["arrival"]), int(meta["wire_bytes"]))
            rejected = self.ledger.reject(meta["rejected_ids"], meta["errors"])
            self.exporter.count("rejected", n=rejected)
        if st.name == "sink":
            self.ledger.deliver(meta["ids"], meta["latency_s"], meta["correct"], meta["agree"])
            self.open_tickets -= 1  # acknowledged: the edge's copy goes with the ticket
        else:
            nxt = self.stages[STAGES.index(st.name) + 1]
            nxt.queue.append((ticket, task.data_ref))
        self._progress()

    def _source_batch(self, task: _Task, meta: dict[str, Any]) -> None:
        self.source_busy = False
        self.source_attempts = 0
        self.t0 = meta["t0"]
        n, start = int(meta["n"]), int(meta["start"])
        if n > 0 and start == self.next_start:
            ticket = _Ticket(self.batches, start, n, float(meta["t_created"]), task.data_ref)
            self.batches += 1
            self.open_tickets += 1
            self.batch_sizes[n] += 1
            self.next_start = start + n
            self.stages[0].queue.append((ticket, task.data_ref))
        else:
            self.hops[0].release()
        self.source_done = bool(meta["done"]) or self.next_start >= self.cfg.samples

    def _requeue(self, task: _Task) -> _Stage:
        """Undo a failed call's bookkeeping; returns its stage."""
        st = self.by_name[task.stage]
        st.replicas[task.replica].load -= 1
        if task.kind == "source":
            self.source_busy = False
            self.hops[0].release()
        elif task.kind == "rebuild":
            assert task.ticket is not None
            self.rebuilds.append(task.ticket)
        if st.name == "transport":
            self.transport_pending.discard(task.transport_ticket)
        return st

    def _replay(self, st: _Stage, task: _Task) -> None:
        """Put a failed stage call's batch back, first in line, with the same input."""
        st.replay.append((task.ticket, task.input_ref))
        st.stats.replayed_batches += 1
        self.exporter.count("replays", st.name)

    def _actor_failed(self, task: _Task, exc: BaseException) -> None:
        """The call's actor died or is unreachable: replay the batch once the replica is back."""
        if task.kind == "probe":
            self._probe_failed(task, exc)
            return
        st = self._requeue(task)
        if task.kind == "stage":
            self._replay(st, task)
        rep = st.replicas[task.replica]
        if rep.state == "up":
            rep.state, rep.since, rep.error = "recovering", time.monotonic(), _short(exc)
            rep.probe_failures = 0
            self._probe(st, task.replica)

    def _input_lost(self, task: _Task, exc: BaseException) -> None:
        """The call's input object is gone (its node died): start the batch again from the head,
        rebuilding its inputs from the source if those are gone too."""
        if task.kind != "stage":  # the source's and probes' calls take no stored input
            self._actor_failed(task, exc)
            return
        st = self._requeue(task)
        ticket = task.ticket
        assert ticket is not None
        st.stats.lost_inputs += 1
        st.stats.replayed_batches += 1
        i = STAGES.index(st.name)
        if i + 1 < len(self.hops):
            self.hops[i + 1].release()
        self.hops[1].force_acquire()  # as if the batch were running at the head
        if i == 0 or ticket.rebuild:
            self.rebuilds.append(ticket)
        else:
            ticket.rebuild = True
            self.stages[0].replay.append((ticket, ticket.source_ref))

    def _raised(self, task: _Task, exc: BaseException) -> None:
        """The stage's own code raised: retry the batch a few times, then fail the run."""
        st = self.by_name[task.stage]
        if task.kind == "probe":
            raise StreamError(
                f"stage '{st.name}' replica {task.replica} fails its readiness call: {_short(exc)}",
                stage=st.name,
                kind="actor_dead",
            )
        self._requeue(task)
        limit = self.cfg.flow.max_batch_retries
        if task.kind != "stage":
            self.source_attempts += 1
            if self.source_attempts > limit:
                raise StreamError(
                    f"the source failed {self.source_attempts} times: {_short(exc)}",
                    stage="source",
                )
            return
        ticket = task.ticket
        assert ticket is not None
        ticket.attempts += 1
        if ticket.attempts > limit:
            last = ticket.start + ticket.n - 1
            raise StreamError(
                f"stage '{st.name}' failed on batch {ticket.number} (samples {ticket.start}..{last}) "
                f"{ticket.attempts} times (flow.max_batch_retries={limit}): {_short(exc)}",
                stage=st.name,
            )
        st.stats.retries += 1
        st.replay.append((ticket, task.input_ref))

    # ------------------------------------------------------------------ restarts
    def _probe(self, st: _Stage, r: int) -> None:
        ref = st.replicas[r].handle.ready.remote()
        self.tasks[ref] = _Task("probe", st.name, r, submitted=time.monotonic())

    def _probe_succeeded(self, st: _Stage, r: int, where: dict[str, Any]) -> None:
        rep = st.replicas[r]
        rep.state, rep.probe_failures = "up", 0
        if where.get("pid") != rep.pid:
            rep.pid = where.get("pid")
            st.stats.restarts += 1
            st.stats.place(r, where)
            self.exporter.count("restarts", st.name)

    def _probe_failed(self, task: _Task, exc: BaseException) -> None:
        from ray.exceptions import ActorDiedError

        st = self.by_name[task.stage]
        rep = st.replicas[task.replica]
        rep.probe_failures += 1
        rep.error = _short(exc)
        if isinstance(exc, ActorDiedError) and rep.probe_failures >= DEAD_AFTER_PROBES:
            raise StreamError(
                f"stage '{st.name}' replica {task.replica} died and Ray will not restart it "
                f"(flow.max_restarts={self.cfg.flow.max_restarts}): {rep.error}",
                stage=st.name,
                kind="actor_dead",
            )
        self.reprobes.append((time.monotonic() + REPROBE_DELAY_S, st.name, task.replica))

    def _fire_reprobes(self, now: float) -> None:
        due = [p for p in self.reprobes if p[0] <= now]
        self.reprobes = [p for p in self.reprobes if p[0] > now]
        for _, name, r in due:
            self._probe(self.by_name[name], r)

    def _watchdogs(self, now: float) -> None:
        recovering = False
        for st in (self.source, *self.stages):
            for r, rep in enumerate(st.replicas):
                if rep.state != "recovering":
                    continue
                recovering = True
                if now - rep.since > self.cfg.flow.restart_timeout_s:
                    raise StreamError(
                        f"stage '{st.name}' replica {r} did not come back within "
                        f"flow.restart_timeout_s={self.cfg.flow.restart_timeout_s:g} s ({rep.error})",
                        stage=st.name,
                        kind="restart_timeout",
                    )
        idle = now - self.last_progress
        if recovering or idle <= self.stall_timeout_s:
            return
        work = [t for t in self.tasks.values() if t.kind != "probe"]
        if not work:
            raise StreamError(
                f"stall: nothing finished for {idle:.1f} s and nothing is running",
                kind="stall",
            )
        oldest = min(work, key=lambda t: t.submitted)
        st = self.by_name[oldest.stage]
        what = "the next batch"
        if oldest.ticket is not None:
            t = oldest.ticket
            what = f"batch {t.number} (samples {t.start}..{t.start + t.n - 1})"
        raise StreamError(
            f"stall: no call finished for {idle:.1f} s (flow.stall_timeout_s="
            f"{self.stall_timeout_s:g}); stage '{st.name}' has had {what} for "
            f"{now - oldest.submitted:.1f} s on replica {oldest.replica} "
            f"(pid {st.replicas[oldest.replica].pid})",
            stage=st.name,
            kind="stall",
        )

    # ------------------------------------------------------------------ observation
    def _progress(self) -> None:
        settled = self.ledger.settled
        if settled > self._bar_n:
            self._bar.update(settled - self._bar_n)
            self._bar_n = settled
        if "driver_warm_mb" not in self.memory and settled >= WARM_FRACTION * self.cfg.samples:
            self.memory["driver_warm_mb"] = process_rss_bytes() / 2**20
            self.memory["sink_warm_mb"] = self.by_name["sink"].stats.summary()["rss_mb"]

    def _account(self, now: float) -> None:
        for st in (self.source, *self.stages):
            queued = len(st.queue) + len(st.replay)
            dt = now - getattr(st, "_t_last", now)
            st._t_last = now  # type: ignore[attr-defined]
            st.q_area += queued * dt
            st.q_max = max(st.q_max, queued)
            if st.load:
                st.timer.set("busy")
            elif st.blocked:
                st.timer.set("backpressured")
            else:
                st.timer.set("idle")
        self.peak_total = max(self.peak_total, sum(h.in_flight for h in self.hops))

    def _side_rss_mb(self, names: tuple[str, ...]) -> float:
        return sum(sum(self.by_name[n].stats.rss) for n in names) / 2**20

    def _sample(self, now: float, force: bool = False) -> None:
        t = now - self.t_start
        if not force and not self.timeline.due(t):
            return
        values = {
            "settled": float(self.ledger.settled),
            "arrived_mb": self.receiver.bytes / 2**20,
            "driver_rss_mb": process_rss_bytes() / 2**20,
            "sink_rss_mb": sum(self.by_name["sink"].stats.rss) / 2**20,
            "edge_rss_mb": self._side_rss_mb(EDGE_STAGES),
            "cloud_rss_mb": self._side_rss_mb(CLOUD_STAGES),
            "object_store_mb": object_store_mb() or 0.0,
        }
        self.timeline.record(t, values)
        for k, v in values.items():
            self.memory[f"{k}_max"] = max(self.memory.get(f"{k}_max", 0.0), v)
            self.memory[f"{k}_last"] = v
        self.exporter.flow(
            {st.name: len(st.queue) for st in self.stages},
            {st.name: h.in_flight for st, h in zip(self.stages, self.hops, strict=True)},
        )

    # ------------------------------------------------------------------ report
    def _stage_summary(self, st: _Stage, i: int | None) -> dict[str, Any]:
        d = st.stats.summary()
        totals, wall = st.timer.totals, self.wall
        d["queue_depth_mean"] = st.q_area / wall if wall > 0 else 0.0
        d["queue_depth_max"] = st.q_max
        d["backpressured_s"] = totals.get("backpressured", 0.0)
        d["idle_s"] = totals.get("idle", 0.0)
        d["backpressure_ratio"] = d["backpressured_s"] / wall if wall > 0 else 0.0
        d["inflight_peak"] = (
            self.hops[i + 1].peak if i is not None and i + 1 < len(self.hops) else None
        )
        return d

    def report(self) -> dict[str, Any]:
        """The run's report so far (complete after :meth:`run`; partial if it failed)."""
        from pipeline.stream.report import build_report

        stages = {"source": self._stage_summary(self.source, None)}
        for i, st in enumerate(self.stages):
            stages[st.name] = self._stage_summary(st, i)
        hops = {
            n: {"peak": h.peak, "refused": h.refused}
            for n, h in zip(STAGES, self.hops, strict=True)
        }
        err = None
        if self.error is not None:
            err = {"kind": self.error.kind, "stage": self.error.stage, "message": str(self.error)}
        memory = dict(self.memory)
        for side in ("driver", "sink"):
            warm, last = memory.get(f"{side}_warm_mb"), memory.get(f"{side}_rss_mb_last")
            growth = (last / warm - 1.0) if warm and last else math.nan
            memory[f"{side}_growth_after_warmup"] = growth
        return build_report(
            self.cfg,
            wall=self.wall,
            ledger=self.ledger,
            receiver=self.receiver,
            link=self.link,
            stages=stages,
            hops=hops,
            peak_total=self.peak_total,
            batch_sizes=self.batch_sizes,
            memory=memory,
            timeline=self.timeline.resample(),
            error=err,
        )
