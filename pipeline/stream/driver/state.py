"""The driver's state: the graph it is given (:class:`StageGraph` of :class:`Step` s), what it keeps
per replica, step, edge, batch and call, and :class:`DriverState`, which the policies share. The
:class:`RemoteCalls` protocol is everything the policies ask of the actors and the cluster."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from codec import CodecSettings
from pipeline.stream.autoscale import PoolAutoscaler
from pipeline.stream.config import PipelineConfig
from pipeline.stream.errors import StreamError
from pipeline.stream.feeder import ItemFeeder
from pipeline.stream.flow import CreditWindow, LinkWindow, StateTimer
from pipeline.stream.ledger import DeliveryLedger
from pipeline.stream.metrics import DriverExporter, LinkStats, ReceiverStats, StageStats, Timeline
from pipeline.stream.rate import RateController, RateProfile
from pipeline.stream.results import ResultLog
from pipeline.stream.stopping import StopControl

STAGES = ("source", "head", "encoder", "transport", "decoder", "tail", "sink")
"""The logical stages, in stream order; metrics are kept per logical stage however they are fused."""
EDGE_STAGES = STAGES[:4]
CLOUD_STAGES = STAGES[4:]

BUSY_RUN = 3
"""A rate sample spans this many deliveries of a busy run (the first one only marks its start)."""


class RemoteCalls(Protocol):
    """The actors' calls and the cluster's answers, as the policies use them. Each actor call returns
    ``(meta ref, data ref)``; :mod:`pipeline.stream.driver.ray_calls` implements it with Ray."""

    def actor_key(self, handle: Any) -> str: ...
    def send(self, handle: Any, ref: Any, ticket: int, floor: int) -> tuple[Any, Any]: ...
    def receive(self, handle: Any, ref: Any) -> tuple[Any, Any]: ...
    def process(
        self, handle: Any, ref: Any, setting: CodecSettings | None = None
    ) -> tuple[Any, Any]: ...
    def next_batch(self, handle: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]: ...
    def rebuild(self, handle: Any, *args: Any, items: Any) -> tuple[Any, Any]: ...
    def ready(self, handle: Any) -> Any: ...
    def put(self, value: Any) -> Any: ...
    def kill(self, handle: Any) -> None: ...
    def restart(self, handle: Any) -> None: ...
    def actor_died(self, exc: BaseException) -> bool: ...
    def alive_nodes(self) -> set[str] | None: ...
    def placement(self, resource: str) -> tuple[float, float] | None: ...
    def object_store_mb(self) -> float | None: ...
    def wait(self, refs: list[Any], timeout: float) -> list[Any]: ...
    def outcomes(self, refs: list[Any]) -> Iterator[tuple[Any, str, Any]]: ...


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
class Replica:
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
class Ticket:
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
class Task:
    kind: str  # "stage", "source", "rebuild" or "probe"
    step: StepState
    replica: int
    ticket: Ticket | None = None
    input_ref: Any = None
    data_ref: Any = None
    submitted: float = 0.0
    transport_ticket: int = -1
    edge: int = 0
    clear: bool = False  # a source call launched while nothing else of its edge was in flight


@dataclass(eq=False)
class StepState:
    """Driver-side state of one step: its replicas, queues, timers and failure counts."""

    stages: tuple[str, ...]
    replicas: list[Replica]
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
class EdgeState:
    """One edge's position in its stream and its own accounting."""

    index: int
    first_id: int
    samples: int
    chain: list[StepState]
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

    def key(self, ticket: Ticket, i: int) -> str | None:
        """Sample ``i``'s key (None: its id is its key)."""
        return None if ticket.keys is None else ticket.keys[i - ticket.start]

    @property
    def finished(self) -> bool:
        return self.done and self.open_tickets == 0 and not self.busy


def stage_metas(step: StepState, meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-logical-stage records of one call (a fused call returns one per stage it covers)."""
    return meta["stages"] if "stages" in meta else {step.stages[0]: meta}


@dataclass
class DriverState:
    """Everything the driver's policies share: the steps and edges, the calls in flight, the counters
    the report reads, and the clocks (``clock``: monotonic; ``wall_clock``: wall time)."""

    cfg: PipelineConfig
    graph: StageGraph
    cloud: list[StepState]
    edges: list[EdgeState]
    steps: list[StepState]
    replicas: list[Replica]
    stats: dict[str, StageStats]
    timeline: Timeline
    exporter: DriverExporter
    pool_keys: dict[str, str]  # autoscaling pool: its timeline key
    fixed_label: str  # rate.mode=fixed: the codec setting's label
    fixed_setting: dict[str, Any]
    stall_timeout_s: float
    profile: RateProfile | None = None
    results: ResultLog | None = None
    stop: StopControl | None = None
    feeder: ItemFeeder | None = None
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    tasks: dict[Any, Task] = field(default_factory=dict)  # by the call's meta ref
    reprobes: list[tuple[float, StepState, int]] = field(default_factory=list)  # (due, step, r)
    stopping: bool = False
    batches: int = 0
    receiver: ReceiverStats = field(default_factory=ReceiverStats)  # every edge's arrivals
    batch_sizes: Counter[int] = field(default_factory=Counter)
    settings: Counter[str] = field(default_factory=Counter)  # samples coded with each setting
    tokens: list[int] = field(default_factory=lambda: [0, 0])  # text: valid tokens, positions
    peak_total: int = 0
    memory: dict[str, float] = field(default_factory=dict)
    t_start: float = 0.0
    t_start_wall: float = 0.0
    cpu_start: float = 0.0
    last_progress: float = 0.0
    stall_restarts: int = 0  # replicas the watchdog restarted for a stalled call
    link_outages: dict[int, list[list[float]]] = field(default_factory=dict)  # edge: [[start, end]]
    calls: int = 0  # remote calls finished (each stage call, source call and probe)
    wall: float = 0.0
    error: StreamError | None = None
    given_up: list[tuple[int, StreamError]] = field(default_factory=list)  # fleet edges lost

    def own(self, ed: EdgeState) -> list[StepState]:
        """An edge's own steps (its chain without the shared cloud steps)."""
        return ed.chain[: -len(self.cloud)]

    def settled(self) -> int:
        return sum(e.ledger.settled for e in self.edges)
