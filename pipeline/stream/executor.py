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
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.stream.autoscale import PoolAutoscaler, PoolScaler
from pipeline.stream.config import PipelineConfig
from pipeline.stream.data import UNBOUNDED
from pipeline.stream.errors import StageFailure, StreamError, failed_stage, short
from pipeline.stream.feeder import ItemFeeder
from pipeline.stream.flow import CreditWindow, LinkWindow, StateTimer
from pipeline.stream.ledger import DeliveryLedger
from pipeline.stream.link import outage_overlap
from pipeline.stream.metrics import (
    DriverExporter,
    LatencySketch,
    LinkStats,
    ReceiverStats,
    StageStats,
    Timeline,
    object_store_mb,
    process_rss_bytes,
)
from pipeline.stream.rate import RateController, RateProfile, Setting
from pipeline.stream.results import ResultLog
from pipeline.stream.stopping import StopControl

__all__ = [
    "CLOUD_STAGES", "EDGE_STAGES", "STAGES", "StageFailure", "StageGraph", "Step", "StreamError",
    "StreamExecutor",
]  # fmt: skip

STAGES = ("source", "head", "encoder", "transport", "decoder", "tail", "sink")
"""The logical stages, in stream order; metrics are kept per logical stage however they are fused."""
EDGE_STAGES = STAGES[:4]
CLOUD_STAGES = STAGES[4:]

GET_TIMEOUT_S = 30.0
"""Bound on fetching ``meta`` s that ``ray.wait`` already reported ready."""

WAIT_TIMEOUT_S = 0.1
"""Longest the driver sleeps in ``ray.wait`` before it checks its watchdogs again."""

REPROBE_DELAY_S = 0.25
"""Pause between probes of a replica that Ray reports as unavailable."""

DEAD_AFTER_PROBES = 3
"""A replica whose probe fails with ``ActorDiedError`` this many times in a row is dead for good."""

NODE_CHECK_S = 1.0
"""How often the driver asks Ray which nodes are alive (a replica on a lost node is recovering)."""

BUSY_RUN = 3
"""A rate sample spans this many deliveries of a busy run (the first one only marks its start)."""

STALL_AGE_S = 0.1
"""A batch on the link longer than this, and twice as long as the rate estimate predicts, bounds the
link's rate by its bytes over its age (shorter waits are propagation delay, scheduling and a big
batch's own transmission, not a slower link)."""

WARM_FRACTION = 0.1
"""RSS growth is measured from the moment this fraction of the samples has settled ..."""

WARM_SAMPLES_ENDLESS = 2000
"""... or, for an endless source, this many samples."""

FEED_WAIT_S = 0.005
"""How long the driver waits for an iterable's next items when nothing else is running."""


@dataclass
class Step:
    """The replicas of one actor class serving ``stages`` (consecutive logical stages)."""

    stages: tuple[str, ...]
    handles: list[Any]
    where: list[dict[str, Any]]
    bounds: tuple[int, int] | None = None  # a cloud pool's (min, max) replicas when it autoscales

    @property
    def name(self) -> str:
        return "+".join(self.stages)


@dataclass
class StageGraph:
    """A stream's actors: per edge the steps from the source through the transport, then the cloud
    steps shared by every edge, ending with the sink. A fused actor may serve two steps (an edge actor
    produces a batch in one call and sends it in another): its handles then appear in both."""

    edges: list[list[Step]]
    cloud: list[Step]
    spawn: Callable[[int, int], Any] | None = None  # (cloud step, replica number) -> a new actor


@dataclass
class _Replica:
    handle: Any
    pid: int | None
    rss: int = 0
    state: str = "up"  # "up" or "recovering"
    load: int = 0  # calls submitted and not finished, over every step it serves
    since: float = 0.0  # when it went down
    probe_failures: int = 0
    error: str = ""
    where: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    # every process this replica has run in: a probe answered late by an earlier process (ray.wait
    # returns ready probes in any order) is not a restart
    pids: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.pid is not None:
            self.pids.add(self.pid)


@dataclass
class _Ticket:
    """One batch: which edge and samples, when made, and the edge's copy of its inputs."""

    number: int
    edge: int
    start: int
    n: int
    t_created: float
    source_ref: Any
    pos: int = 0  # index in its edge's chain of the step it is queued for or running at
    attempts: int = 0  # calls that raised at the current step
    rebuild: bool = False  # its stored inputs were lost once: rebuild from the source next time
    wire_bytes: int = 0  # its encoded size, while it counts in its edge's backlog (0 otherwise)
    keys: list[str] | None = None  # the user's data: each sample's key (None: keyed by id)
    setting: dict[str, Any] = field(default_factory=dict)  # the codec setting it was coded with
    items_ref: Any = None  # an iterable source: the driver's copy of its items, for rebuilds
    launched: float = 0.0  # when the source call that made it was launched (monotonic)
    clear: bool = False  # nothing else of its edge was in flight then


@dataclass
class _Task:
    kind: str  # "stage", "source", "rebuild" or "probe"
    step: _Step
    replica: int
    ticket: _Ticket | None = None
    input_ref: Any = None
    data_ref: Any = None
    submitted: float = 0.0
    transport_ticket: int = -1
    edge: int = 0
    clear: bool = False  # a source call launched while nothing else of its edge was in flight


@dataclass(eq=False)
class _Step:
    """Driver-side state of one step: its replicas, queues, timers and failure counts."""

    stages: tuple[str, ...]
    replicas: list[_Replica]
    per_replica: int
    edge: int | None  # None: a cloud step shared by every edge
    queue: deque = field(default_factory=deque)  # (ticket, input ref), holding the hop into it
    replay: deque = field(default_factory=deque)  # (ticket, input ref), holding the hop after it
    timer: StateTimer = field(default_factory=StateTimer)
    q_area: float = 0.0
    q_max: int = 0
    blocked: bool = False
    t_last: float = 0.0
    running: int = 0  # this step's calls in flight (a fused actor's other step not counted)
    restarts: int = 0
    replayed: int = 0
    pool: PoolAutoscaler | None = None  # an autoscaling cloud pool
    cloud_index: int = -1  # its index among the cloud steps (for StageGraph.spawn)

    def __post_init__(self) -> None:
        self.timer.set("idle")

    @property
    def name(self) -> str:
        return "+".join(self.stages)

    @property
    def label(self) -> str:
        """The step's name quoted, with its edge: ``'transport' (edge 3)``."""
        return f"'{self.name}'" + ("" if self.edge is None else f" (edge {self.edge})")

    def free_replica(self) -> int | None:
        """The least-loaded live replica with a free slot, or None."""
        live = [i for i, r in enumerate(self.replicas) if r.state == "up"]
        if not live:
            return None
        best = min(live, key=lambda i: self.replicas[i].load)
        return best if self.replicas[best].load < self.per_replica else None


@dataclass
class _Edge:
    """One edge's position in its stream and its own accounting."""

    index: int
    first_id: int
    samples: int
    chain: list[_Step]
    hops: list[CreditWindow]  # hops[j]: this edge's batches in flight into chain[j] (j >= 1)
    ledger: DeliveryLedger
    receiver: ReceiverStats
    link: LinkStats
    next_start: int = 0
    t0: float | None = None
    busy: bool = False  # a next_batch call is out
    done: bool = False
    source_attempts: int = 0
    open_tickets: int = 0
    next_transport_ticket: int = 0
    transport_pending: set[int] = field(default_factory=set)
    rebuilds: deque = field(default_factory=deque)
    rate: RateController | None = None  # rate.mode=adaptive: this edge's controller
    backlog_bytes: int = 0  # encoded and not yet arrived at the receiver
    busy_run: deque = field(default_factory=lambda: deque(maxlen=BUSY_RUN))  # (delivered, bytes)
    on_link: dict[int, tuple[float, int]] = field(default_factory=dict)  # ticket: (handed, bytes)
    left_link: float = 0.0  # monotonic time the link last finished a batch
    last_n: int = 1  # samples in this edge's latest batch
    recent_latency_s: float = 0.0  # worst latency delivered since the timeline's last point
    retry_items: Any = None  # an iterable's items whose source call failed: sent again first
    inflight: int = 0  # batches in flight to the link allowed (flow.inflight), when window is None
    window: LinkWindow | None = None  # flow.inflight=auto on a limited link: sized from the link
    aloft: set[int] = field(default_factory=set)  # tickets made and not yet delivered by the link
    held_back: bool = False  # the window held the source back since the link's last delivery

    @property
    def inflight_limit(self) -> int:
        return self.window.size if self.window is not None else self.inflight

    def key(self, ticket: _Ticket, i: int) -> str | None:
        """Sample ``i``'s key (None: its id is its key)."""
        return None if ticket.keys is None else ticket.keys[i - ticket.start]

    @property
    def finished(self) -> bool:
        return self.done and self.open_tickets == 0 and not self.busy


def _stage_metas(step: _Step, meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-logical-stage records of one call (a fused call returns one per stage it covers)."""
    return meta["stages"] if "stages" in meta else {step.stages[0]: meta}


class StreamExecutor:
    """Runs one stream over ``graph`` and returns its report (see :meth:`run`).

    ``configured_mbps`` holds each edge's configured link rate (None: unconstrained or real)."""

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
    ) -> None:
        """``ranges``: each edge's ``(first id, samples)`` (default: ``cfg.samples`` each);
        ``results``: where each settled sample's row goes; ``stop``: stop and abort requests;
        ``feeder``: an iterable source's items (one edge); ``resume``: each edge's settled ids from a
        checkpoint (:meth:`edge_states`)."""
        self.cfg = cfg
        self.results = results
        self.stop = stop
        self.feeder = feeder
        self._stopping = False
        self.stall_timeout_s = stall_timeout_s
        self.progress = progress
        w, per = cfg.flow.window, cfg.flow.per_replica_inflight
        replicas: dict[Any, _Replica] = {}  # by actor id: a fused actor serving two steps is one

        def replica(handle: Any, where: dict[str, Any]) -> _Replica:
            key = handle._actor_id.hex()
            if key not in replicas:
                replicas[key] = _Replica(handle, where.get("pid"), int(where.get("rss") or 0))
                replicas[key].where = dict(where)
            return replicas[key]

        def step(s: Step, edge: int | None) -> _Step:
            reps = [replica(h, wh) for h, wh in zip(s.handles, s.where, strict=True)]
            return _Step(s.stages, reps, w if "transport" in s.stages else per, edge)

        self.cloud = [step(s, None) for s in graph.cloud]
        self.graph = graph
        for i, (s, gs) in enumerate(zip(self.cloud, graph.cloud, strict=True)):
            s.cloud_index = i
            if gs.bounds is not None and gs.bounds[0] < gs.bounds[1] and graph.spawn is not None:
                a = cfg.replicas.autoscale
                scaler = PoolScaler(*gs.bounds, a.target_calls, a.up_after_s, a.down_after_s)
                s.pool = PoolAutoscaler(s.name, scaler, a.drain_s, cfg.flow.restart_timeout_s)
        n_edges = len(graph.edges)
        configured = configured_mbps or [None] * n_edges
        if ranges is None:
            assert cfg.samples is not None, "an endless stream needs its edges' ranges"
            ranges = [(e * cfg.samples, cfg.samples) for e in range(n_edges)]
        self.profile = profile
        r = cfg.rate
        slo_s = None if r.latency_slo_ms is None else r.latency_slo_ms / 1000.0
        if r.mode == "adaptive" and (profile is None or slo_s is None):
            raise StreamError("internal error: an adaptive stream needs a profile and an SLO")
        self.edges: list[_Edge] = []
        for e, steps in enumerate(graph.edges):
            chain = [step(s, e) for s in steps] + self.cloud
            first, samples = ranges[e]
            ledger = DeliveryLedger(samples, first_id=first, slo_s=slo_s)
            if resume is not None:
                ledger.resume(resume[e])
            self.edges.append(
                _Edge(
                    e,
                    first,
                    samples,
                    chain,
                    [CreditWindow(w) for _ in chain],
                    ledger,
                    ReceiverStats(),
                    LinkStats(configured[e]),
                    next_start=ledger.watermark,
                )
            )
            self.edges[-1].done = samples == 0
            self.edges[-1].inflight, self.edges[-1].window = self._inflight(chain, configured[e])
            if r.mode == "adaptive":
                assert profile is not None and slo_s is not None
                self.edges[-1].rate = RateController(
                    profile, slo_s, r.bits, hysteresis=r.hysteresis, min_fidelity=r.min_fidelity
                )
        self.steps: list[_Step] = [s for ed in self.edges for s in ed.chain[: -len(self.cloud)]]
        self.steps += self.cloud
        self.replicas = list(replicas.values())
        # logical-stage aggregates: edge stages have one "replica" per edge, cloud stages per replica
        self.stats: dict[str, StageStats] = {}
        for name in STAGES:
            hosts = [s for s in self.steps if name in s.stages]
            count = n_edges if name in EDGE_STAGES else max(len(s.replicas) for s in hosts)
            self.stats[name] = StageStats(name, count)
            for s in hosts:
                for r, rep in enumerate(s.replicas):
                    self.stats[name].place(s.edge if s.edge is not None else r, rep.where)
        self.tasks: dict[Any, _Task] = {}
        self.reprobes: list[tuple[float, _Step, int]] = []
        self.batches = 0
        self.receiver = ReceiverStats()  # every edge's arrivals: the fleet's goodput
        self.batch_sizes: Counter[int] = Counter()
        self.settings: Counter[str] = Counter()  # samples coded with each rate-control setting
        self.tokens = [0, 0]  # text streams: valid tokens coded, positions of the padded batches
        c = cfg.codec
        fixed = {
            "ours": Setting(c.bits, c.level, c.axis, c.clip).label(),
            "zstd": f"zstd/L{c.level}",
        }
        self._fixed_label = fixed.get(c.kind, c.kind)
        self._fixed_setting = {
            "bits": c.bits if c.kind == "ours" else None,
            "level": c.level if c.kind in ("ours", "zstd") else None,
            "label": self._fixed_label,
        }
        pooled = [s for s in self.cloud if s.pool is not None]
        self._pool_keys = {
            s.name: "replicas" if len(pooled) == 1 else f"replicas_{s.stages[0]}" for s in pooled
        }
        self.timeline = Timeline(
            period_s=0.1, steps=("bits", "inflight", *self._pool_keys.values())
        )
        self.exporter = DriverExporter()
        self.peak_total = 0
        self.memory: dict[str, float] = {}
        self.t_start = time.monotonic()
        self.last_progress = self.t_start
        self.link_outages: dict[int, list[list[float]]] = {}  # edge: [start, end] (wall clock)
        self.t_start_wall = time.time()
        self.cpu_start = time.process_time()
        self.calls = 0  # remote calls finished (each stage call, source call and probe)
        self.wall = 0.0
        self.error: StreamError | None = None
        self.given_up: list[tuple[int, StreamError]] = []  # fleet edges that cannot come back
        self._next_node_check = 0.0
        self._bar: Any = None
        self._bar_n = 0

    def _inflight(self, chain: list[_Step], mbps: float | None) -> tuple[int, LinkWindow | None]:
        """An edge's in-flight limit: ``flow.inflight`` as a number, or ``auto``: a window sized from
        the link, at most what the hops up to the link hold (``flow.window`` each). An unconstrained
        emulated link is never the bottleneck: it keeps that cap."""
        hops = 1 + next(i for i, s in enumerate(chain) if "transport" in s.stages)
        cap = self.cfg.flow.window * hops
        setting = self.cfg.flow.inflight
        if setting != "auto":
            return int(setting), None
        if self.cfg.link.mode != "real" and mbps is None:
            return cap, None
        return cap, LinkWindow(cap)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        """Stream every sample; returns the report. Raises :class:`StreamError` (with ``.report``
        holding the partial report) when the stream cannot finish."""
        from tqdm import tqdm

        total = self._total()
        self._bar = tqdm(total=total, desc="stream", unit="sample", disable=not self.progress)
        self._bar.update(sum(e.ledger.resumed for e in self.edges))
        self.t_start = self.last_progress = time.monotonic()
        self.t_start_wall = time.time()
        self.cpu_start = time.process_time()
        for s in self.steps:
            s.t_last = self.t_start
        if self.stop is not None:
            self.stop.start()
        try:
            self._loop()
            self._raise_given_up()
        except StreamError as exc:
            self.error = exc
        except Exception as exc:  # a bug in the driver: still end with what was measured
            self.error = StreamError(f"internal error: {short(exc)}", kind="internal")
            self.error.__cause__ = exc
        finally:
            self.wall = time.monotonic() - self.t_start
            self._bar.close()
            for s in self.steps:
                s.timer.stop()
            if self.feeder is not None:
                self.feeder.close()
        self._read_so_far()
        if self.results is not None:
            try:
                self.results.commit(self.edge_states(), final=True)
            except OSError as exc:  # the output could not be written: the run fails and says so
                self.error = self.error or StreamError(f"output: {exc}", kind="output")
        self._sample(time.monotonic(), force=True)
        report = self.report()
        if self.error is not None:
            self.error.report = report
            raise self.error
        return report

    def _total(self) -> int | None:
        """Samples the stream will settle, when known (the progress bar's end)."""
        if self.feeder is not None and self.cfg.samples is None:
            return None
        if any(e.samples >= UNBOUNDED for e in self.edges):
            return None
        return sum(e.samples for e in self.edges)

    def _read_so_far(self) -> None:
        """A stream that stopped reading, or whose source has no set end, expects only the samples
        it read: every one of them settles, and none after them is lost."""
        for ed in self.edges:
            if self._stopping or ed.samples >= UNBOUNDED or self.feeder is not None:
                ed.ledger.samples = min(ed.samples, ed.next_start - ed.first_id)

    def edge_states(self) -> list[dict[str, Any]]:
        """Each edge's settled ids and position: what a checkpoint records."""
        return [
            {**ed.ledger.settled_state(), "first_id": ed.first_id, "next_start": ed.next_start}
            for ed in self.edges
        ]

    def _check_stop(self) -> None:
        """Act on stop requests: the first stops every source, a second aborts the run."""
        if self.stop is None:
            return
        if self.stop.aborted:
            raise StreamError(
                "aborted: a second stop request ended the run at once", kind="aborted"
            )
        if self.stop.stopping and not self._stopping:
            self._stopping = True
            for ed in self.edges:
                ed.done = True
            if self.feeder is not None:
                self.feeder.close()

    def _loop(self) -> None:
        import ray

        while not all(e.finished for e in self.edges):
            now = time.monotonic()
            self._check_stop()
            if self.feeder is not None and self.feeder.error is not None:
                raise StreamError(
                    f"the input iterable raised {short(self.feeder.error)}", kind="source"
                )
            if self.results is not None and self.results.due():
                self.results.commit(self.edge_states())
            self._watchdogs(now)
            self._fire_reprobes(now)
            self._autoscale(now)
            for s in self.steps:
                s.blocked = False
            for s in reversed(self.cloud):
                while self._submit(s):
                    pass
            for ed in self.edges:
                for s in reversed(ed.chain[1 : -len(self.cloud)]):
                    while self._submit(s):
                        pass
                self._feed(ed)
            self._account(now)
            self._sample(now)
            waiting = self._waiting_for_items()
            if not self.tasks:
                if self.reprobes:
                    time.sleep(REPROBE_DELAY_S / 5)
                    continue
                if waiting:
                    assert self.feeder is not None
                    self.feeder.take(0, FEED_WAIT_S)
                    self.last_progress = time.monotonic()  # a quiet iterable is not a stall
                    continue
                if all(e.finished for e in self.edges):
                    break
                raise StreamError(
                    "internal error: nothing is running but work remains", kind="internal"
                )
            watch = list(self.tasks)
            timeout = FEED_WAIT_S if waiting else WAIT_TIMEOUT_S
            ready, _ = ray.wait(watch, num_returns=1, timeout=timeout, fetch_local=False)
            if ready:
                ready, _ = ray.wait(watch, num_returns=len(watch), timeout=0, fetch_local=False)
            self._complete(ready)

    # ------------------------------------------------------------------ submitting
    def _submit(self, s: _Step) -> bool:
        """Start one batch at step ``s`` if a replica and the next hop's credit allow it."""
        if s.replay:  # replays already hold the next hop's credit and go first
            r = s.free_replica()
            if r is None:
                return False
            ticket, ref = s.replay.popleft()
            self._launch(s, r, ticket, ref)
            return True
        if not s.queue:
            return False
        r = s.free_replica()
        if r is None:
            return False
        for k, (ticket, ref) in enumerate(s.queue):
            ed = self.edges[ticket.edge]
            nxt = ticket.pos + 1
            if nxt < len(ed.chain) and not ed.hops[nxt].try_acquire():
                if s.edge is not None:  # one edge's FIFO: the head of the line decides
                    break
                continue  # a shared step: another edge's batch may go
            del s.queue[k]
            ed.hops[ticket.pos].release()
            self._launch(s, r, ticket, ref)
            return True
        s.blocked = True
        return False

    def _launch(self, s: _Step, r: int, ticket: _Ticket, ref: Any) -> None:
        rep = s.replicas[r]
        ed = self.edges[ticket.edge]
        task = _Task("stage", s, r, ticket, ref, submitted=time.monotonic(), edge=ticket.edge)
        first = s.stages[0]
        if first == "transport":
            task.transport_ticket = tnum = ed.next_transport_ticket
            ed.next_transport_ticket += 1
            ed.transport_pending.add(tnum)
            ed.on_link[tnum] = (time.monotonic(), ticket.wire_bytes)
            floor = min(ed.transport_pending)
            meta, task.data_ref = rep.handle.send.options(num_returns=2).remote(ref, tnum, floor)
        elif first == "sink":
            meta, task.data_ref = rep.handle.receive.options(num_returns=2).remote(ref)
        elif "encoder" in s.stages and ed.rate is not None:
            setting = self._choose(ed, ticket.n)
            meta, task.data_ref = rep.handle.process.options(num_returns=2).remote(ref, setting)
        else:
            meta, task.data_ref = rep.handle.process.options(num_returns=2).remote(ref)
        self.tasks[meta] = task
        rep.load += 1
        s.running += 1

    def _choose(self, ed: _Edge, samples: int) -> dict[str, Any]:
        """The edge's rate controller picks the next batch's setting from what the driver sees of the
        link: the backlog, and how long the oldest batch on it has been at the head of the line
        (since it was handed over, or since the link finished the batch before it): once that is
        clearly longer than expected (``STALL_AGE_S``), its bytes over that time bound the link's
        rate."""
        assert ed.rate is not None
        now, cap = time.monotonic(), None
        if ed.on_link:
            handed, nbytes = min(ed.on_link.values())
            age, rate = now - max(handed, ed.left_link), ed.rate.rate_bps
            expected = nbytes / rate if rate else 0.0  # what the current estimate says it takes
            if nbytes > 0 and age >= max(STALL_AGE_S, 2.0 * expected):
                cap = nbytes / age
        return ed.rate.choose(samples, ed.backlog_bytes, now, cap).as_dict()

    def _waiting_for_items(self) -> bool:
        """True when an idle edge waits for the iterable's next items."""
        if self.feeder is None or self._stopping:
            return False
        ed = self.edges[0]
        return not ed.done and not ed.busy and not self.feeder.done

    def _feed(self, ed: _Edge) -> None:
        """Ask an edge's first step for its next batch (one call at a time), and for rebuilds."""
        s = ed.chain[0]
        rep = s.replicas[0]
        if rep.state != "up":
            return
        while ed.rebuilds:
            t = ed.rebuilds.popleft()
            meta, data = rep.handle.rebuild.options(num_returns=2).remote(
                t.start, t.n, ed.t0, t.t_created, items=t.items_ref
            )
            self.tasks[meta] = _Task("rebuild", s, 0, t, data_ref=data, edge=ed.index)
            rep.load += 1
            s.running += 1
        if ed.done or ed.busy:
            return
        if self.feeder is not None and self.feeder.done and ed.retry_items is None:
            ed.done = True  # the iterable has ended and every item was handed on
            return
        if ed.window is not None:
            ed.window.tick(time.monotonic())
        if len(ed.aloft) >= ed.inflight_limit:
            s.blocked = ed.held_back = True  # what the link needs is in flight: more would queue
            return
        if not ed.hops[1].try_acquire():
            s.blocked = True  # the next hop is full: this edge's source waits (backpressure)
            return
        kwargs: dict[str, Any] = {}
        if self.feeder is not None:
            import ray

            if ed.retry_items is not None:
                kwargs["items"], ed.retry_items = ed.retry_items, None
            else:
                items = self.feeder.take(min(self.cfg.batching.max_batch_size, ed.samples))
                if not items:
                    ed.hops[1].release()
                    return
                kwargs["items"] = ray.put(items)
        args: tuple[Any, ...] = (ed.next_start, ed.t0)
        if "encoder" in s.stages and ed.rate is not None:  # a fused edge encodes as it makes
            args += (self._choose(ed, ed.last_n),)
        meta, data = rep.handle.next_batch.options(num_returns=2).remote(*args, **kwargs)
        self.tasks[meta] = _Task(
            "source", s, 0, data_ref=data, submitted=time.monotonic(), edge=ed.index,
            clear=not ed.aloft,
        )  # fmt: skip
        self.tasks[meta].input_ref = kwargs.get("items")
        rep.load += 1
        s.running += 1
        ed.busy = True

    # ------------------------------------------------------------------ completions
    def _complete(self, refs: list[Any]) -> None:
        """Fetch the metas of finished calls (one round trip when all succeeded) and handle them."""
        import ray

        if not refs:
            return
        self.calls += len(refs)
        try:
            metas = ray.get(refs, timeout=GET_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            self._internal_timeout(refs)
        except Exception:  # at least one failed: sort them out one by one
            for ref in refs:
                self._complete_one(ref)
            return
        for ref, meta in zip(refs, metas, strict=True):
            self._succeeded(self.tasks.pop(ref), meta)

    def _internal_timeout(self, refs: list[Any]) -> None:
        task = self.tasks[refs[0]]
        raise StreamError(
            f"internal error: finished calls (stage '{task.step.name}') could not be fetched "
            f"within {GET_TIMEOUT_S:.0f} s",
            stage=task.step.name,
            kind="internal",
        )

    def _complete_one(self, ref: Any) -> None:
        import ray
        from ray import exceptions as rex

        task = self.tasks[ref]
        try:
            meta = ray.get(ref, timeout=GET_TIMEOUT_S)
        except rex.GetTimeoutError:
            self._internal_timeout([ref])
        except rex.RayTaskError as exc:
            del self.tasks[ref]
            if isinstance(getattr(exc, "cause", None), rex.ObjectLostError):
                self._input_lost(task, exc)
            else:
                self._raised(task, exc)
            return
        except rex.ObjectLostError as exc:
            del self.tasks[ref]
            self._input_lost(task, exc)
            return
        except rex.RayError as exc:  # RayActorError and other system failures: the replica's fault
            del self.tasks[ref]
            self._actor_failed(task, exc)
            return
        del self.tasks[ref]
        self._succeeded(task, meta)

    def _succeeded(self, task: _Task, meta: Any) -> None:
        self.last_progress = time.monotonic()
        s, rep = task.step, task.step.replicas[task.replica]
        if task.kind == "probe":
            self._probe_succeeded(s, task.replica, meta)
            return
        rep.load -= 1
        s.running -= 1
        metas = _stage_metas(s, meta)
        index = task.edge if s.edge is not None else task.replica
        for name, m in metas.items():
            self.stats[name].add(index, m)
            if m.get("rss"):
                rep.rss = int(m["rss"])
        ed = self.edges[task.edge]
        if task.kind == "source":
            ticket = self._source_batch(ed, task, meta)
            if ticket is not None and "encoder" in metas:
                self._encoded(ed, ticket, metas["encoder"])
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
            self._encoded(ed, ticket, metas["encoder"])
        if "transport" in metas:
            ed.transport_pending.discard(task.transport_ticket)
            ed.on_link.pop(task.transport_ticket, None)
            ed.left_link = time.monotonic()
            ed.link.add(metas["transport"])
            m = metas["transport"]
            if "outages_wall" in m:  # the link's configured outages, on the wall clock
                self.link_outages[ed.index] = m["outages_wall"]
            if "tx_start_planned" in m:  # an emulated link: its delivery is the transport's return
                self._delivered(ed, float(m["t_end"]), int(m["wire_bytes"]), bool(m.get("queued")))
            if self.cfg.link.mode != "real":
                idle = "queued" in m and not m["queued"]
                self._landed(ed, ticket, int(m.get("wire_bytes", 0)), idle)
        if "decoder" in metas:
            d = metas["decoder"]
            self._arrived(ed, ticket)
            if self.cfg.link.mode == "real":  # the real network delivers as the decoder fetches it
                self._delivered(ed, float(d["arrival"]), int(d["wire_bytes"]), True)
                self._landed(ed, ticket, int(d["wire_bytes"]), False)
            ed.receiver.add(float(d["arrival"]), int(d["wire_bytes"]))
            self.receiver.add(float(d["arrival"]), int(d["wire_bytes"]))
            rejected = ed.ledger.reject(d["rejected_ids"], d["errors"])
            self.exporter.count("rejected", n=rejected)
            if rejected and self.results is not None:
                ids = [int(d["rejected_ids"][j]) for j in ed.ledger.last_fresh]
                reason = f"frame did not decode: {d['errors'][0] if d['errors'] else 'unknown'}"
                keys = [ed.key(ticket, i) for i in ids]
                self.results.rejected(ed.index, ids, keys, [reason] * len(ids), ticket.setting)
        if "sink" in metas:
            m = metas["sink"]
            ed.ledger.deliver(m["ids"], m["latency_s"], m["correct"], m["agree"], m.get("text"))
            if self.results is not None and ed.ledger.last_fresh:
                res = m.get("results") or {}
                keys = [ed.key(ticket, int(i)) for i in m["ids"]]
                self.results.delivered(
                    ed.index, m["ids"], keys, m["latency_s"], res.get("labels"), res,
                    ed.ledger.last_fresh, ticket.setting,
                )  # fmt: skip
            if m["latency_s"]:
                worst = max(m["latency_s"])
                ed.recent_latency_s = max(ed.recent_latency_s, worst)
                if ed.rate is not None:
                    rate = ed.rate.rate_bps
                    ed.rate.observe_latency(worst, ticket.wire_bytes / rate if rate else 0.0)
            ed.open_tickets -= 1  # acknowledged: the edge's copy goes with the ticket
            ed.aloft.discard(ticket.number)
        else:
            # a step that passed its batch through unchanged hands on its input
            data = task.input_ref if meta.get("passthrough") else task.data_ref
            ticket.pos += 1
            ed.chain[ticket.pos].queue.append((ticket, data))
        self._progress()

    def _source_batch(self, ed: _Edge, task: _Task, meta: dict[str, Any]) -> _Ticket | None:
        ed.busy = False
        ed.source_attempts = 0
        ed.t0 = meta["t0"]
        n, start = int(meta["n"]), int(meta["start"])
        end = ed.first_id + ed.samples
        if start == ed.next_start and meta.get("dropped"):
            self._shed(ed, start, int(meta["dropped"]), meta.get("dropped_keys"))
            ed.next_start = start = int(meta["first"])
        if n > 0 and start == ed.next_start:
            ticket = _Ticket(
                self.batches, ed.index, start, n, float(meta["t_created"]), task.data_ref
            )
            ticket.keys, ticket.items_ref = meta.get("keys"), task.input_ref
            ticket.launched, ticket.clear = task.submitted, task.clear
            self.batches += 1
            self.batch_sizes[n] += 1
            ed.next_start = start + n
            ed.last_n = n
            self._rejected_at_source(ed, ticket, meta.get("rejected") or [])
            if meta.get("good", n) > 0:
                ed.open_tickets += 1
                ed.aloft.add(ticket.number)
                ticket.pos = 1  # queued before chain[1], holding the credit of that hop
                ed.chain[1].queue.append((ticket, task.data_ref))
            else:  # nothing of it loaded: it is settled already
                ed.hops[1].release()
                ticket = None
        else:
            ed.hops[1].release()
            ticket = None
        ed.done = self._stopping or bool(meta["done"]) or ed.next_start >= end
        return ticket

    def _shed(self, ed: _Edge, start: int, count: int, keys: list[str] | None) -> None:
        """Samples ``start .. start+count-1`` that a live source dropped unread (``flow.overflow``):
        they settle as dropped."""
        ids = list(range(start, start + count))
        fresh = ed.ledger.drop(ids)
        self.exporter.count("dropped", n=fresh)
        if fresh and self.results is not None:
            keep = ed.ledger.last_fresh
            reason = f"shed: the stream could not keep up (flow.overflow={self.cfg.flow.overflow})"
            self.results.dropped(
                ed.index, [ids[j] for j in keep],
                [None if keys is None else keys[j] for j in keep], reason,
            )  # fmt: skip
        self._progress()

    def _rejected_at_source(self, ed: _Edge, ticket: _Ticket, rejected: list[Any]) -> None:
        """Samples that did not load (a bad file, a bad item) settle as rejected, with reasons."""
        if not rejected:
            return
        ids = [int(i) for i, _ in rejected]
        reasons = [str(r) for _, r in rejected]
        fresh = ed.ledger.reject(ids, reasons[:1])
        self.exporter.count("rejected", n=fresh)
        if fresh and self.results is not None:
            keep = ed.ledger.last_fresh
            self.results.rejected(
                ed.index, [ids[j] for j in keep], [ed.key(ticket, ids[j]) for j in keep],
                [reasons[j] for j in keep], {},
            )  # fmt: skip
        self._progress()

    def _encoded(self, ed: _Edge, ticket: _Ticket, meta: dict[str, Any]) -> None:
        """A batch was coded: it joins its edge's backlog until the receiver has it."""
        ed.backlog_bytes += int(meta.get("wire_bytes", 0)) - ticket.wire_bytes
        ticket.wire_bytes = int(meta.get("wire_bytes", 0))
        if "tokens" in meta:
            self.tokens[0] += int(meta["tokens"])
            self.tokens[1] += int(meta["positions"])
        setting = meta.get("setting")
        if setting is None:  # rate.mode=fixed: codec.* as configured
            self.settings[self._fixed_label] += int(meta["n"])
            ticket.setting = self._fixed_setting
            return
        used = Setting(setting["bits"], setting["level"], setting.get("axis"), setting.get("clip"))
        self.settings[used.label()] += int(meta["n"])
        ticket.setting = {"bits": used.bits, "level": used.level, "label": used.label()}
        if ed.rate is not None:
            ed.rate.observe_batch(used, int(meta["n"]), ticket.wire_bytes)

    def _arrived(self, ed: _Edge, ticket: _Ticket) -> None:
        """A batch reached the receiver: it leaves its edge's backlog."""
        ed.backlog_bytes -= ticket.wire_bytes
        ticket.wire_bytes = 0

    def _landed(self, ed: _Edge, ticket: _Ticket, nbytes: int, idle_link: bool) -> None:
        """The link delivered a batch (``idle_link``: it had found the link idle): it is no longer in
        flight, and its round trip is a sample for the edge's window."""
        if ticket.number not in ed.aloft:
            return  # delivered before (a replay)
        ed.aloft.discard(ticket.number)
        if ed.window is not None:
            ed.window.observe_delivery(
                ticket.launched, time.monotonic(), nbytes, ticket.clear,
                idle_link=idle_link, limited=ed.held_back,
            )  # fmt: skip
        ed.held_back = False

    def _delivered(self, ed: _Edge, delivered: float, nbytes: int, queued: bool) -> None:
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
                ed.rate.observe_rate(nbytes, span, time.monotonic())
            if ed.window is not None and span > 0:
                ed.window.observe_rate(nbytes / span, time.monotonic())

    def _requeue(self, task: _Task) -> _Step:
        """Undo a failed call's bookkeeping; returns its step."""
        s = task.step
        s.replicas[task.replica].load -= 1
        s.running -= 1
        ed = self.edges[task.edge]
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

    def _replay(self, s: _Step, task: _Task) -> None:
        """Put a failed call's batch back, first in line, with the same input."""
        s.replay.append((task.ticket, task.input_ref))
        s.replayed += 1
        for name in s.stages:
            self.stats[name].replayed_batches += 1
        self.exporter.count("replays", s.name)

    def _actor_failed(self, task: _Task, exc: BaseException) -> None:
        """The call's actor died or is unreachable: replay the batch once the replica is back."""
        if task.kind == "probe":
            self._probe_failed(task, exc)
            return
        s = self._requeue(task)
        if task.kind == "stage":
            self._replay(s, task)
        rep = s.replicas[task.replica]
        if rep.state == "up":
            rep.state, rep.since, rep.error = "recovering", time.monotonic(), short(exc)
            rep.probe_failures = 0
            self._probe(s, task.replica)

    def _input_lost(self, task: _Task, exc: BaseException) -> None:
        """The call's input object is gone (its node died): start the batch again from its edge's
        first step, rebuilding its inputs from the source if those are gone too."""
        if task.kind != "stage":  # the source's and probes' calls take no stored input
            self._actor_failed(task, exc)
            return
        s = self._requeue(task)
        ticket = task.ticket
        assert ticket is not None
        ed = self.edges[ticket.edge]
        if any(e == ed.index for e, _ in self.given_up):  # its edge is gone: it stays unsettled
            ed.open_tickets -= 1
            return
        for name in s.stages:
            self.stats[name].lost_inputs += 1
            self.stats[name].replayed_batches += 1
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

    def _raised(self, task: _Task, exc: BaseException) -> None:
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
        limit = self.cfg.flow.max_batch_retries
        if task.kind != "stage":
            ed = self.edges[task.edge]
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
            self.stats[name].retries += 1
        s.replay.append((ticket, task.input_ref))

    # ------------------------------------------------------------------ restarts
    def _probe(self, s: _Step, r: int) -> None:
        ref = s.replicas[r].handle.ready.remote()
        self.tasks[ref] = _Task("probe", s, r, submitted=time.monotonic(), edge=s.edge or 0)

    def _probe_succeeded(self, s: _Step, r: int, where: dict[str, Any]) -> None:
        rep = s.replicas[r]
        if rep.state in ("draining", "retired"):
            return
        if rep.state == "starting":  # a new replica of an autoscaling pool is ready
            rep.state, rep.pid, rep.where = "up", where.get("pid"), dict(where)
            rep.pids.add(rep.pid)
            rep.rss = int(where.get("rss") or 0)
            for name in s.stages:
                self.stats[name].place(r, where)
            return
        rep.state, rep.probe_failures = "up", 0
        if where.get("pid") is not None and where.get("pid") not in rep.pids:
            rep.pid, rep.where, rep.rss = where.get("pid"), dict(where), int(where.get("rss") or 0)
            rep.pids.add(rep.pid)
            rep.restarts += 1
            for host in self.steps:  # a fused actor serves several steps: count it once each
                if rep in host.replicas:
                    host.restarts += 1
                    for name in host.stages:
                        self.stats[name].restarts += 1
                        self.stats[name].place(host.edge if host.edge is not None else r, where)
            self.exporter.count("restarts", s.name)

    def _probe_failed(self, task: _Task, exc: BaseException) -> None:
        from ray.exceptions import ActorDiedError

        s = task.step
        rep = s.replicas[task.replica]
        if rep.state in ("draining", "retired"):  # it left the pool: nothing to wait for
            return
        rep.probe_failures += 1
        rep.error = short(exc)
        if isinstance(exc, ActorDiedError) and rep.probe_failures >= DEAD_AFTER_PROBES:
            raise StreamError(
                f"stage {s.label} replica {task.replica} died and Ray will not restart it "
                f"(flow.max_restarts={self.cfg.flow.max_restarts}): {rep.error}",
                stage=s.name,
                kind="actor_dead",
            )
        self.reprobes.append((time.monotonic() + REPROBE_DELAY_S, s, task.replica))

    def _no_host(self, s: _Step) -> str:
        """Why a replica of ``s`` may not come back: no alive node offers its side's placement
        resource any more (its node was lost), or none of those that do has room; else ''."""
        import ray

        key = "cloud_resource" if s.edge is None else "edge_resource"
        name, amount = getattr(self.cfg.placement, key), self.cfg.placement.resource_amount
        try:
            offered = sum(
                n.get("Resources", {}).get(name, 0.0) for n in ray.nodes() if n.get("Alive")
            )
            free = ray.available_resources().get(name, 0.0)
        except Exception:  # the cluster cannot say: the timeout's own message stands
            return ""
        if offered < amount:
            return f": no alive node offers placement.{key} {name!r} any more"
        if free < amount:
            return f": no alive node offering placement.{key} {name!r} has room for it"
        return ""

    def _give_up_edge(self, ed: _Edge, err: StreamError) -> None:
        """A fleet's edge whose actors cannot come back: stop it, drop its batches that wait for its
        own actors, and let the other edges finish; the run then fails with ``err`` and the report
        names the edge's unsettled ids."""
        self.given_up.append((ed.index, err))
        own = ed.chain[: -len(self.cloud)]
        for s in own:
            for rep in s.replicas:
                rep.state = "lost"
            ed.open_tickets -= len(s.queue) + len(s.replay)
            s.queue.clear()
            s.replay.clear()
        for ref, task in list(self.tasks.items()):
            if task.step in own:
                del self.tasks[ref]
                ed.open_tickets -= task.kind in ("stage", "rebuild")
        ed.open_tickets -= len(ed.rebuilds)
        ed.rebuilds.clear()
        self.reprobes = [p for p in self.reprobes if p[1] not in own]
        ed.done, ed.busy = True, False

    def _raise_given_up(self) -> None:
        """The other edges have finished: fail the run for the edges given up, naming their ids."""
        if not self.given_up:
            return
        parts = []
        for e, err in self.given_up:
            led = self.edges[e].ledger
            ranges = ", ".join(f"{a}..{b}" for a, b in led.unsettled_ranges(5))
            parts.append(f"edge {e} given up, {led.lost} samples unsettled ({ranges}): {err}")
        raise StreamError("; ".join(parts), stage=self.given_up[0][1].stage, kind="restart_timeout")

    def _fire_reprobes(self, now: float) -> None:
        due = [p for p in self.reprobes if p[0] <= now]
        self.reprobes = [p for p in self.reprobes if p[0] > now]
        for _, s, r in due:
            self._probe(s, r)

    def _check_nodes(self, now: float) -> None:
        """A replica whose node is gone is recovering, whether or not a call of it failed (Ray may
        restart an idle actor elsewhere unseen): it is probed, its restart counted and placed, and it
        falls under ``flow.restart_timeout_s`` when no node can host it."""
        import ray

        if now < self._next_node_check:
            return
        self._next_node_check = now + NODE_CHECK_S
        try:
            alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        except Exception:  # the GCS cannot say now: failed calls still tell
            return
        for s in self.steps:
            for r, rep in enumerate(s.replicas):
                node = rep.where.get("node_id")
                if rep.state == "up" and node and node not in alive:
                    rep.state, rep.since = "recovering", time.monotonic()
                    rep.error, rep.probe_failures = f"its node {node[:12]} was lost", 0
                    self._probe(s, r)

    def _autoscale(self, now: float) -> None:
        """Grow or shrink the autoscaling cloud pools (:mod:`pipeline.stream.autoscale`): a new
        replica lands where Ray places it and serves once its readiness call returns; one that leaves
        drains, then is killed; calls it still held then are replayed elsewhere."""
        import ray

        for s in self.cloud:
            if s.pool is None:
                continue
            demand = s.running + len(s.queue) + len(s.replay)
            moves = s.pool.tick(now, now - self.t_start, demand, s.replicas)
            for r in moves.retire:
                rep = s.replicas[r]
                rep.state = "retired"
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(rep.handle, no_restart=True)
            for r in moves.drain:
                s.replicas[r].state, s.replicas[r].since = "draining", now
            for _ in range(moves.grow):
                self._start_replica(s, now)

    def _start_replica(self, s: _Step, now: float) -> None:
        """A new replica of an autoscaling pool: created now, probed until it is ready."""
        assert self.graph.spawn is not None
        r = len(s.replicas)
        handle = self.graph.spawn(s.cloud_index, r)
        rep = _Replica(handle, None, state="starting", since=now)
        s.replicas.append(rep)
        self.replicas.append(rep)
        gs = self.graph.cloud[s.cloud_index]
        gs.handles.append(handle)  # so that the run's end stops it too
        gs.where.append({})
        for name in s.stages:
            self.stats[name].ensure(r + 1)
        self._probe(s, r)

    def _watchdogs(self, now: float) -> None:
        self._check_nodes(now)
        recovering = False
        for s in self.steps:
            for r, rep in enumerate(s.replicas):
                if rep.state != "recovering":
                    continue
                recovering = True
                if now - rep.since > self.cfg.flow.restart_timeout_s:
                    err = StreamError(
                        f"stage {s.label} replica {r} did not come back within "
                        f"flow.restart_timeout_s={self.cfg.flow.restart_timeout_s:g} s"
                        f"{self._no_host(s)} ({rep.error})",
                        stage=s.name,
                        kind="restart_timeout",
                    )
                    if s.edge is None or len(self.edges) == 1:
                        raise err
                    self._give_up_edge(self.edges[s.edge], err)  # a fleet: the others go on
        idle = now - self.last_progress
        if self.link_outages:  # time in a configured link outage is not a stall
            wall = time.time()
            spans = [w for ws in self.link_outages.values() for w in ws]
            idle -= outage_overlap(spans, wall - idle, wall)
        if recovering or idle <= self.stall_timeout_s:
            return
        work = [t for t in self.tasks.values() if t.kind != "probe"]
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
        raise StreamError(
            f"stall: no call finished for {idle:.1f} s (flow.stall_timeout_s="
            f"{self.stall_timeout_s:g}); stage {s.label} has had {what} for "
            f"{now - oldest.submitted:.1f} s on replica {oldest.replica} "
            f"(pid {s.replicas[oldest.replica].pid})",
            stage=s.name,
            kind="stall",
        )

    # ------------------------------------------------------------------ observation
    def _settled(self) -> int:
        return sum(e.ledger.settled for e in self.edges)

    def _progress(self) -> None:
        settled = self._settled()
        if settled > self._bar_n:
            self._bar.update(settled - self._bar_n)
            self._bar_n = settled
        total = self._total()
        warm = WARM_SAMPLES_ENDLESS if total is None else WARM_FRACTION * total
        if "driver_warm_mb" not in self.memory and settled >= warm:
            self.memory["driver_warm_mb"] = process_rss_bytes() / 2**20
            self.memory["sink_warm_mb"] = self._rss_mb(("sink",))

    def _account(self, now: float) -> None:
        for s in self.steps:
            queued = len(s.queue) + len(s.replay)
            s.q_area += queued * (now - s.t_last)
            s.t_last = now
            s.q_max = max(s.q_max, queued)
            if s.running:
                s.timer.set("busy")
            elif s.blocked:
                s.timer.set("backpressured")
            else:
                s.timer.set("idle")
        self.peak_total = max(
            self.peak_total, sum(h.in_flight for ed in self.edges for h in ed.hops)
        )

    def _rss_mb(self, stages: tuple[str, ...]) -> float:
        """RSS of the processes hosting any of ``stages``, each process counted once (edges that
        share a process, ``fleet.edges_per_process``, have a replica record each)."""
        hosts = {
            (r.where.get("node_id"), r.pid) if r.pid else id(r): r
            for s in self.steps
            if set(s.stages) & set(stages)
            for r in s.replicas
        }
        return sum(r.rss for r in hosts.values()) / 2**20

    def _sample(self, now: float, force: bool = False) -> None:
        t = now - self.t_start
        if not force and not self.timeline.due(t):
            return
        values = self._flow_values() | {
            "settled": float(self._settled()),
            "arrived_mb": self.receiver.bytes / 2**20,
            "driver_rss_mb": process_rss_bytes() / 2**20,
            "sink_rss_mb": self._rss_mb(("sink",)),
            "edge_rss_mb": self._rss_mb(EDGE_STAGES),
            "cloud_rss_mb": self._rss_mb(CLOUD_STAGES),
            "object_store_mb": object_store_mb() or 0.0,
        }
        pools = {
            key: float(sum(r.state == "up" for r in s.replicas))  # serving, not starting
            for s in self.cloud
            if (key := self._pool_keys.get(s.name))
        }
        self.timeline.record(t, values | pools | self._fidelity_so_far())
        for k, v in values.items():
            self.memory[f"{k}_max"] = max(self.memory.get(f"{k}_max", 0.0), v)
            self.memory[f"{k}_last"] = v
        self.exporter.flow(
            {s.label.replace("'", ""): len(s.queue) for s in self.steps},
            {s.label.replace("'", ""): s.running for s in self.steps},
        )

    def _flow_values(self) -> dict[str, float]:
        """The link's side of the timeline: bits in use (the rate controllers' choice, mean over
        edges, or ``codec.bits``), the backlog on the links, the worst latency delivered since the
        last point, and (adaptive) the controllers' link-rate estimates (measured at the receiver)."""
        ctls = [ed.rate for ed in self.edges if ed.rate is not None]
        latency = max(ed.recent_latency_s for ed in self.edges)
        for ed in self.edges:
            ed.recent_latency_s = 0.0
        bits = sum(c.setting.bits for c in ctls) / len(ctls) if ctls else self.cfg.codec.bits
        out = {
            "bits": float(bits),
            "backlog_kb": sum(ed.backlog_bytes for ed in self.edges) / 1e3,
            "latency_ms": latency * 1000.0,
            "inflight": sum(ed.inflight_limit for ed in self.edges) / len(self.edges),
            "aloft": float(sum(len(ed.aloft) for ed in self.edges)),
        }
        if ctls:
            rates = [c.rate_bps for c in ctls if c.rate_bps is not None]
            out["rate_estimate_mbps"] = sum(rates) * 8 / 1e6 if rates else 0.0
        return out

    def _fidelity_so_far(self) -> dict[str, float | None]:
        """Accuracy and top-1 agreement over the samples settled so far (None before any)."""
        led = [e.ledger for e in self.edges]
        labelled, checked = sum(x.labelled for x in led), sum(x.agree_checked for x in led)
        return {
            "accuracy": sum(x.correct for x in led) / labelled if labelled else None,
            "agreement": sum(x.agree for x in led) / checked if checked else None,
        }

    # ------------------------------------------------------------------ report
    def _stage_summary(self, name: str) -> dict[str, Any]:
        d = self.stats[name].summary()
        hosts = [s for s in self.steps if name in s.stages]
        wall = self.wall
        d["fused_with"] = [x for x in hosts[0].stages if x != name]
        d["queue_depth_mean"] = sum(s.q_area for s in hosts) / wall if wall > 0 else 0.0
        d["queue_depth_max"] = max(s.q_max for s in hosts)
        d["backpressured_s"] = sum(s.timer.totals.get("backpressured", 0.0) for s in hosts)
        d["idle_s"] = sum(s.timer.totals.get("idle", 0.0) for s in hosts)
        d["backpressure_ratio"] = d["backpressured_s"] / wall / len(hosts) if wall > 0 else 0.0
        d["rss_mb"] = self._rss_mb((name,))
        return d

    def report(self) -> dict[str, Any]:
        """The run's report so far (complete after :meth:`run`; partial if it failed)."""
        from pipeline.stream.report import build_report, edge_summary

        stages = {name: self._stage_summary(name) for name in STAGES}
        hops = {}
        for ed in self.edges:
            for s, h in zip(ed.chain[1:], ed.hops[1:], strict=True):
                d = hops.setdefault(s.name, {"peak": 0, "refused": 0})
                d["peak"] = max(d["peak"], h.peak)
                d["refused"] += h.refused
        err = None
        if self.error is not None:
            err = {"kind": self.error.kind, "stage": self.error.stage, "message": str(self.error)}
        memory = dict(self.memory)
        # RSS per node side: the peak of each side's processes summed, each process counted once
        memory["edge_rss_mb"] = memory.get("edge_rss_mb_max")
        memory["cloud_rss_mb"] = memory.get("cloud_rss_mb_max")
        for side in ("driver", "sink"):
            warm, last = memory.get(f"{side}_warm_mb"), memory.get(f"{side}_rss_mb_last")
            growth = (last / warm - 1.0) if warm and last else math.nan
            memory[f"{side}_growth_after_warmup"] = growth
        latency = LatencySketch.merged([e.ledger.latency for e in self.edges])
        edges = [
            edge_summary(
                e.index,
                e.ledger,
                e.receiver,
                e.link,
                e.chain[0].replicas[0].where,
                restarts=self._edge_restarts(e),
            )  # fmt: skip
            for e in self.edges
        ]
        return (
            build_report(
                self.cfg,
                wall=self.wall,
                ledgers=[e.ledger for e in self.edges],
                latency=latency,
                restarts=sum(r.restarts for r in self.replicas),
                replayed=sum(s.replayed for s in self.steps),
                receiver=self.receiver,
                links=[e.link for e in self.edges],
                stages=stages,
                edges=edges,
                hops=hops,
                peak_total=self.peak_total,
                batch_sizes=self.batch_sizes,
                memory=memory,
                timeline=self.timeline.resample(
                    40 if self.cfg.rate.latency_slo_ms is None else 120
                ),
                error=err,
                settings=dict(self.settings),
                rate=self._rate_summary(),
                tokens=(self.tokens[0], self.tokens[1]),
                t0_wall=self.t_start_wall,
                outages_wall=self.link_outages,
            )
            | self._io_summary()
            | {"inflight": self._inflight_summary(), "t0_wall": self.t_start_wall}
            | self._pools_summary()
            | {"driver": self._driver_summary()}
        )

    def _driver_summary(self) -> dict[str, Any]:
        """What the driver process spent: CPU seconds (all its threads, Ray's included), its share
        of one core, remote calls handled per second, and its RSS, also per edge."""
        cpu = time.process_time() - self.cpu_start
        wall = self.wall or (time.monotonic() - self.t_start)
        rss = self.memory.get("driver_rss_mb_max")
        n = len(self.edges)
        return {
            "cpu_s": cpu,
            "cpu_share": cpu / wall if wall > 0 else None,
            "calls": self.calls,
            "calls_per_s": self.calls / wall if wall > 0 else None,
            "rss_mb": rss,
            "cpu_share_per_edge": cpu / wall / n if wall > 0 else None,
            "calls_per_s_per_edge": self.calls / wall / n if wall > 0 else None,
        }

    def _pools_summary(self) -> dict[str, Any]:
        """The report's ``pools``: each autoscaling cloud pool's bounds, sizes and moves."""
        pools = {s.name: s.pool.summary(s.replicas) for s in self.cloud if s.pool is not None}
        return {"pools": pools} if pools else {}

    def _edge_restarts(self, ed: _Edge) -> int:
        """Restarts of an edge's own actors (each counted once, however many steps it serves)."""
        own = {id(r): r for s in ed.chain[: -len(self.cloud)] for r in s.replicas}
        return sum(r.restarts for r in own.values())

    def _inflight_summary(self) -> dict[str, Any]:
        """``flow.inflight`` as set, and per edge the window it came to (auto: with the estimates)."""
        edges = [
            ed.window.summary() if ed.window is not None else {"size": ed.inflight}
            for ed in self.edges
        ]
        return {"setting": self.cfg.flow.inflight, "edges": edges}

    def _io_summary(self) -> dict[str, Any]:
        """The report's ``output`` (the rows written), ``stop`` (why reading ended) and ``resumed``
        (samples settled by earlier runs of a resumed stream)."""
        out: dict[str, Any] = {"resumed": sum(e.ledger.resumed for e in self.edges)}
        out["dropped"] = sum(e.ledger.dropped for e in self.edges)
        out["dropped_ids"] = [i for e in self.edges for i in e.ledger.dropped_ids][:100]
        if self.results is not None:
            out["output"] = self.results.summary()
        finished = self.error is None and all(e.finished for e in self.edges)
        if self.stop is not None:
            out["stop"] = self.stop.summary(finished)
        else:
            out["stop"] = {"reason": "end" if finished else None, "signal": None}
        return out

    def _rate_summary(self) -> dict[str, Any]:
        r = self.cfg.rate
        out: dict[str, Any] = {"mode": r.mode, "latency_slo_ms": r.latency_slo_ms}
        if r.mode == "fixed":
            return out
        if self.profile is not None:
            out["profile_source"] = self.profile.source
            out["profile"] = self.profile.to_dict()
        out["edges"] = [ed.rate.summary() for ed in self.edges if ed.rate is not None]
        return out
