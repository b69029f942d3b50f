"""Builds a stream's :class:`~pipeline.stream.driver.state.DriverState` from its graph: one record
per actor (a fused actor serving two steps is one replica), the steps and edges with their credit
windows, ledgers and rate controllers, and the per-logical-stage metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipeline.stream.autoscale import PoolAutoscaler, PoolScaler
from pipeline.stream.config import PipelineConfig
from pipeline.stream.driver.admission import inflight_window
from pipeline.stream.driver.state import (
    EDGE_STAGES,
    STAGES,
    DriverState,
    EdgeState,
    RemoteCalls,
    Replica,
    StageGraph,
    Step,
    StepState,
)
from pipeline.stream.errors import StreamError
from pipeline.stream.feeder import ItemFeeder
from pipeline.stream.flow import CreditWindow
from pipeline.stream.ledger import DeliveryLedger
from pipeline.stream.metrics import DriverExporter, LinkStats, ReceiverStats, StageStats, Timeline
from pipeline.stream.rate import RateController, RateProfile
from pipeline.stream.results import ResultLog
from pipeline.stream.stopping import StopControl


def build_state(
    cfg: PipelineConfig,
    graph: StageGraph,
    calls: RemoteCalls,
    *,
    stall_timeout_s: float,
    configured_mbps: list[float | None] | None = None,
    profile: RateProfile | None = None,
    ranges: list[tuple[int, int]] | None = None,
    results: ResultLog | None = None,
    stop: StopControl | None = None,
    feeder: ItemFeeder | None = None,
    resume: list[dict[str, Any]] | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> DriverState:
    """The driver's state at the start of a run (see :class:`~pipeline.stream.executor.StreamExecutor`
    for the arguments)."""
    w, per = cfg.flow.window, cfg.flow.per_replica_inflight
    replicas: dict[Any, Replica] = {}  # by actor id: a fused actor serving two steps is one

    def replica(handle: Any, where: dict[str, Any]) -> Replica:
        key = calls.actor_key(handle)
        if key not in replicas:
            replicas[key] = Replica(handle, where.get("pid"), int(where.get("rss") or 0))
            replicas[key].where = dict(where)
        return replicas[key]

    def step(s: Step, edge: int | None) -> StepState:
        reps = [replica(h, wh) for h, wh in zip(s.handles, s.where, strict=True)]
        return StepState(s.stages, reps, w if "transport" in s.stages else per, edge)

    cloud = [step(s, None) for s in graph.cloud]
    for i, (s, gs) in enumerate(zip(cloud, graph.cloud, strict=True)):
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
    r = cfg.rate
    slo_s = None if r.latency_slo_ms is None else r.latency_slo_ms / 1000.0
    if r.mode == "adaptive" and (profile is None or slo_s is None):
        raise StreamError("internal error: an adaptive stream needs a profile and an SLO")
    edges: list[EdgeState] = []
    for e, steps in enumerate(graph.edges):
        chain = [step(s, e) for s in steps] + cloud
        first, samples = ranges[e]
        ledger = DeliveryLedger(samples, first_id=first, slo_s=slo_s)
        if resume is not None:
            ledger.resume(resume[e])
        ed = EdgeState(
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
        ed.done = samples == 0
        ed.inflight, ed.window = inflight_window(cfg, chain, configured[e])
        if r.mode == "adaptive":
            assert profile is not None and slo_s is not None
            ed.rate = RateController(
                profile, slo_s, r.bits, hysteresis=r.hysteresis, min_fidelity=r.min_fidelity
            )
        edges.append(ed)
    all_steps = [s for ed in edges for s in ed.chain[: -len(cloud)]] + cloud
    c = cfg.codec
    fixed = {
        "ours": c.settings().label(),
        "zstd": f"zstd/L{c.level}",
        "int8-zstd": f"int8-zstd/L{c.level}",
    }
    fixed_label = fixed.get(c.kind, c.kind)
    pooled = [s for s in cloud if s.pool is not None]
    pool_keys = {
        s.name: "replicas" if len(pooled) == 1 else f"replicas_{s.stages[0]}" for s in pooled
    }
    t_start = clock()
    return DriverState(
        cfg=cfg,
        graph=graph,
        cloud=cloud,
        edges=edges,
        steps=all_steps,
        replicas=list(replicas.values()),
        stats=stage_stats(all_steps, n_edges),
        timeline=Timeline(period_s=0.1, steps=("bits", "inflight", *pool_keys.values())),
        exporter=DriverExporter(),
        pool_keys=pool_keys,
        fixed_label=fixed_label,
        fixed_setting={
            "bits": c.bits if c.kind in ("ours", "int8-zstd") else None,
            "level": c.level if c.kind in ("ours", "zstd", "int8-zstd") else None,
            "label": fixed_label,
        },
        stall_timeout_s=stall_timeout_s,
        profile=profile,
        results=results,
        stop=stop,
        feeder=feeder,
        clock=clock,
        wall_clock=wall_clock,
        t_start=t_start,
        last_progress=t_start,
        t_start_wall=wall_clock(),
        cpu_start=time.process_time(),
    )


def stage_stats(steps: list[StepState], n_edges: int) -> dict[str, StageStats]:
    """Logical-stage aggregates: edge stages have one "replica" per edge, cloud stages per replica."""
    stats: dict[str, StageStats] = {}
    for name in STAGES:
        hosts = [s for s in steps if name in s.stages]
        count = n_edges if name in EDGE_STAGES else max(len(s.replicas) for s in hosts)
        stats[name] = StageStats(name, count)
        for s in hosts:
            for r, rep in enumerate(s.replicas):
                stats[name].place(s.edge if s.edge is not None else r, rep.where)
    return stats
