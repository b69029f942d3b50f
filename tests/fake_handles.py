"""Fakes for the driver's policies, with no Ray: a clock the test moves, actor handles whose calls
answer at once (or fail as told), and :class:`FakeCalls`, the policies'
:class:`~pipeline.stream.driver.state.RemoteCalls`, which runs those calls and logs them."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from codec import CodecSettings
from pipeline.stream.config import PipelineConfig, load_config
from pipeline.stream.driver.build import build_state
from pipeline.stream.driver.state import DriverState, StageGraph, Step

_ids = itertools.count()


class FakeClock:
    """Monotonic (and wall) time that moves only when a test says so."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeRef:
    """An object ref: ``value`` is what it holds (a data ref's batch, a put's items)."""

    def __init__(self, label: str, value: Any = None) -> None:
        self.label, self.value, self.id = label, value, next(_ids)

    def __repr__(self) -> str:
        return f"FakeRef({self.label}#{self.id})"


class ActorDied(Exception):
    """A fake ``ActorDiedError``: the actor is gone for good."""


class ActorUnavailable(Exception):
    """A fake ``RayActorError`` that is not ``ActorDiedError``: the actor is restarting."""


class FakeHandle:
    """An actor: ``stages`` it serves, the process it runs in, and ``fail``: the next calls'
    failures, ``(outcome kind, exception)`` each, used up one per call."""

    def __init__(self, name: str, stages: tuple[str, ...] = (), pid: int = 1000) -> None:
        self.name, self.stages, self.pid = name, stages, pid
        self.fail: list[tuple[str, BaseException]] = []

    def where(self) -> dict[str, Any]:
        return {"pid": self.pid, "node_id": f"node-{self.name}", "rss": 2**20}


def _meta(n: int, clock: float, **extra: Any) -> dict[str, Any]:
    return {"n": n, "t_start": clock, "t_end": clock, **extra}


class FakeCalls:
    """:class:`RemoteCalls` over :class:`FakeHandle` s. Every call finishes at once; its meta follows
    what the real stages return (a source makes ``batch`` samples per call up to ``end``; the
    encoder codes 100 bytes a sample; the transport delivers; the sink acknowledges)."""

    def __init__(self, clock: FakeClock, batch: int = 4, end: int = 1 << 30) -> None:
        self.clock, self.batch, self.end = clock, batch, end
        self.log: list[tuple[str, str, tuple[Any, ...]]] = []  # (method, actor, args)
        self.finished: dict[Any, tuple[str, Any]] = {}
        self.killed: list[FakeHandle] = []
        self.restarted: list[FakeHandle] = []
        self.alive: set[str] | None = None  # None: every node is alive
        self.room: tuple[float, float] | None = (1.0, 1.0)

    # ---- the actors' calls
    def _call(self, method: str, h: FakeHandle, args: tuple[Any, ...], make: Callable) -> Any:
        self.log.append((method, h.name, args))
        meta_ref, data_ref = FakeRef(f"{h.name}.{method}"), FakeRef(f"{h.name}.{method}.data")
        if h.fail:
            self.finished[meta_ref] = h.fail.pop(0)
        else:
            meta, data_ref.value = make()
            self.finished[meta_ref] = ("ok", meta)
        return meta_ref, data_ref

    def next_batch(self, h: FakeHandle, start: int, t0: Any, *rest: Any, **kw: Any) -> Any:
        def make() -> tuple[dict[str, Any], Any]:
            n = max(0, min(self.batch, self.end - start))
            meta = _meta(n, self.clock(), start=start, t0=0.0, t_created=self.clock())
            return meta | {"done": start + n >= self.end}, (start, n)

        return self._call("next_batch", h, (start, t0, *rest), make)

    def rebuild(self, h: FakeHandle, start: int, n: int, *rest: Any, items: Any) -> Any:
        return self._call("rebuild", h, (start, n, *rest), lambda: (_meta(n, 0.0), (start, n)))

    def process(self, h: FakeHandle, ref: Any, setting: CodecSettings | None = None) -> Any:
        start, n = ref.value
        extra = {"wire_bytes": 100 * n} if "encoder" in h.stages else {}
        if "decoder" in h.stages:
            extra |= {"arrival": self.clock(), "wire_bytes": 100 * n}
            extra |= {"rejected_ids": [], "errors": []}
        args = (ref,) if setting is None else (ref, setting)
        return self._call("process", h, args, lambda: (_meta(n, 0.0, **extra), ref.value))

    def send(self, h: FakeHandle, ref: Any, ticket: int, floor: int) -> Any:
        start, n = ref.value
        meta = _meta(n, 0.0, wire_bytes=100 * n, bytes_in=100 * n)
        return self._call("send", h, (ref, ticket, floor), lambda: (meta, ref.value))

    def receive(self, h: FakeHandle, ref: Any) -> Any:
        start, n = ref.value
        ids = list(range(start, start + n))
        meta = _meta(n, 0.0, ids=ids, latency_s=[0.01] * n, correct=None, agree=None)
        return self._call("receive", h, (ref,), lambda: (meta, None))

    def ready(self, h: FakeHandle) -> Any:
        return self._call("ready", h, (), lambda: (h.where(), None))[0]

    # ---- the object store and the cluster
    def actor_key(self, handle: FakeHandle) -> str:
        return handle.name

    def put(self, value: Any) -> FakeRef:
        return FakeRef("put", value)

    def kill(self, handle: FakeHandle) -> None:
        self.killed.append(handle)

    def restart(self, handle: FakeHandle) -> None:
        self.restarted.append(handle)

    def actor_died(self, exc: BaseException) -> bool:
        return isinstance(exc, ActorDied)

    def alive_nodes(self) -> set[str] | None:
        return self.alive

    def placement(self, resource: str) -> tuple[float, float] | None:
        return self.room

    def object_store_mb(self) -> float | None:
        return 0.0

    def wait(self, refs: list[Any], timeout: float) -> list[Any]:
        ready = [r for r in refs if r in self.finished]
        if not ready:
            self.clock.advance(timeout)
        return ready

    def outcomes(self, refs: list[Any]) -> Iterator[tuple[Any, str, Any]]:
        for ref in refs:
            kind, value = self.finished.pop(ref)
            yield ref, kind, value
            if kind == "timeout":
                return

    def calls_to(self, name: str, method: str | None = None) -> int:
        return sum(a == name and (method is None or m == method) for m, a, _ in self.log)


def fake_config(*overrides: str) -> PipelineConfig:
    """A small stream's configuration (no model is loaded)."""
    base = ["model.name=tiny", "data.source=synthetic", "data.shape=[3,16,16]", "samples=16"]
    return load_config(None, [*base, *overrides], check_model=False)


EDGE_LAYOUT = (("source",), ("head",), ("encoder",), ("transport",))
CLOUD_LAYOUT = (("decoder",), ("tail",), ("sink",))


def fake_graph(edges: int = 1, cloud_replicas: int = 1) -> StageGraph:
    """One actor per stage and edge (``e0.source``, ...); ``cloud_replicas`` of each cloud stage."""

    def step(stages: tuple[str, ...], prefix: str, n: int, pid: int) -> Step:
        hs = [FakeHandle(f"{prefix}{stages[0]}{r or ''}", stages, pid + r) for r in range(n)]
        return Step(stages, hs, [h.where() for h in hs])

    return StageGraph(
        edges=[
            [step(s, f"e{e}.", 1, 1000 + 10 * e + i) for i, s in enumerate(EDGE_LAYOUT)]
            for e in range(edges)
        ],
        cloud=[step(s, "", cloud_replicas, 2000 + 10 * i) for i, s in enumerate(CLOUD_LAYOUT)],
    )


def fake_state(
    cfg: PipelineConfig | None = None,
    graph: StageGraph | None = None,
    clock: FakeClock | None = None,
    calls: FakeCalls | None = None,
    **kwargs: Any,
) -> tuple[DriverState, FakeCalls, FakeClock]:
    """A driver's state over fake actors, with its calls and clock."""
    clock = clock or FakeClock()
    calls = calls or FakeCalls(clock)
    cfg = cfg or fake_config()
    kwargs.setdefault("stall_timeout_s", 5.0)
    state = build_state(cfg, graph or fake_graph(), calls, clock=clock, wall_clock=clock, **kwargs)
    return state, calls, clock
