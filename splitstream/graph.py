"""Builds a stream's Ray actors from a config: one chain of edge actors per edge of the fleet, the
shared cloud pool and the sink; placement on the two sides, restart options, and the models, data and
codec settings each stage needs. The executor (``pipeline.stream.executor``) gets the handles and
never imports the actor classes.

Placement: every actor asks for its side's custom resource (``placement.edge_resource`` or
``placement.cloud_resource``). Edge ``i`` is pinned (soft node affinity) to the ``i``-th node that
offers the edge resource, and cloud replica ``r`` to the ``r``-th node offering the cloud resource,
wrapping around when there are fewer nodes than edges or replicas; on one machine everything shares its
node. The affinity is soft, so a restarted actor may move if its node is gone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from actors import (
    CloudNode,
    Decoder,
    EdgeHost,
    EdgeNode,
    Encoder,
    HeadModel,
    Sink,
    Source,
    TailModel,
    Transport,
)
from pipeline.stream.config import PipelineConfig, edge_link
from pipeline.stream.executor import EDGE_STAGES, StageGraph, Step
from pipeline.stream.preflight import Preflight

READY_TIMEOUT_S = 300.0
"""Longest wait for every actor's constructor (model loading) before giving up."""


class PlacementError(RuntimeError):
    """The cluster cannot host the stream as configured (a missing resource, actors never start)."""


def check_resources(cfg: PipelineConfig) -> None:
    """Both placement resources must exist in the connected cluster."""
    import ray

    have = ray.cluster_resources()
    for key in ("edge_resource", "cloud_resource"):
        name = getattr(cfg.placement, key)
        if have.get(name, 0) < cfg.placement.resource_amount:
            raise PlacementError(
                f"placement.{key}: the Ray cluster has no custom resource {name!r} "
                f"(have {sorted(k for k in have if not k.startswith('node:'))})"
            )


def nodes_with(resource: str, amount: float) -> list[str]:
    """Ids of the alive nodes offering ``resource``, in a stable order."""
    import ray

    return sorted(
        n["NodeID"]
        for n in ray.nodes()
        if n.get("Alive") and n.get("Resources", {}).get(resource, 0) >= amount
    )


def actor_options(cfg: PipelineConfig, stage: str, node: str | None = None) -> dict[str, Any]:
    """Ray options of one actor: side resource, CPUs/GPUs, restarts (replays are the executor's
    job, so Ray retries no task itself), and the node it should run on."""
    p = cfg.placement
    side = p.edge_resource if stage in EDGE_STAGES or stage == "edge" else p.cloud_resource
    opts: dict[str, Any] = {
        "num_cpus": p.num_cpus,
        "resources": {side: p.resource_amount},
        "max_restarts": cfg.flow.max_restarts,
        "max_task_retries": 0,
    }
    gpu = set(p.gpu_stages)
    if p.num_gpus > 0 and (stage in gpu or (stage in ("edge", "cloud") and gpu)):
        opts["num_gpus"] = p.num_gpus
    if node is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
    return opts


def _link_spec(cfg: PipelineConfig, edge: int):
    if cfg.link.mode != "emulated":
        return None
    from pipeline.stream.link import resolve_link

    profile, kw = edge_link(cfg, edge)
    return resolve_link(profile, **kw)


def _threads(cfg: PipelineConfig) -> int:
    """Pool sizes of every actor: its CPU request, at least one."""
    return max(1, round(cfg.placement.num_cpus))


def _pick(nodes: list[str], i: int) -> str | None:
    return nodes[i % len(nodes)] if nodes else None


def _edge_steps(
    cfg: PipelineConfig, pre: Preflight, e: int, node: str | None, host: Any = None
) -> list[Any]:
    """Edge ``e``'s actors, as ``(stages, handle)`` in stream order (fused: one actor, two steps).
    With ``host`` (a :class:`HostedEdge`), the edge lives in a process it shares."""
    import ray

    def remote(cls: type, stage: str) -> Any:
        return ray.remote(cls).options(**actor_options(cfg, stage, node))

    if cfg.placement.fuse:
        if host is None:
            args, kwargs = _edge_node_args(cfg, pre, e)
            host = remote(EdgeNode, "edge").remote(*args, **kwargs)
        return [(("source", "head", "encoder"), host), (("transport",), host)]
    c, gpu, t = cfg.codec, set(cfg.placement.gpu_stages), _threads(cfg)
    first, samples = pre.edges[e]
    source = remote(Source, "source").remote(
        pre.source, samples, first_id=first, arrival=_arrival(cfg), threads=t,
        **_batching(cfg, pre),
    )  # fmt: skip
    head = remote(HeadModel, "head").remote(pre.factory, e, "head" in gpu, t)
    enc = remote(Encoder, "encoder").remote(
        c.kind, c.settings(), e, c.frame, t, use_gpu="encoder" in gpu, zstd_level=c.level
    )
    tr = remote(Transport, "transport").remote(_link_spec(cfg, e), e, cfg.flow.reorder_timeout_s)
    return [(("source",), source), (("head",), head), (("encoder",), enc), (("transport",), tr)]


def _batching(cfg: PipelineConfig, pre: Preflight) -> dict[str, Any]:
    """The source's batching and load-shedding settings."""
    b = cfg.batching
    return {
        "max_batch_size": b.max_batch_size,
        "max_wait_ms": b.max_wait_ms,
        "min_batch_size": b.min_batch_size,
        "adaptive": b.adaptive,
        "rate_sps": pre.rate_sps,
        "overflow": cfg.flow.overflow,
        "overflow_samples": cfg.flow.overflow_samples,
    }


def _arrival(cfg: PipelineConfig) -> dict[str, Any]:
    """How a paced source's samples arrive (``data.arrival`` and its settings)."""
    d = cfg.data
    return {"pattern": d.arrival, "period_s": d.burst_period_s, "duty": d.burst_duty,
            "steps": d.load_steps}  # fmt: skip


def _edge_node_args(
    cfg: PipelineConfig, pre: Preflight, e: int
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The :class:`EdgeNode` constructor's ``(args, kwargs)`` for edge ``e``."""
    c = cfg.codec
    codec = {"kind": c.kind, "settings": c.settings(), "frame": c.frame, "zstd_level": c.level}
    codec["use_gpu"] = "encoder" in set(cfg.placement.gpu_stages)
    first, samples = pre.edges[e]
    args = (pre.source, samples, _batching(cfg, pre), pre.factory, codec, _link_spec(cfg, e))
    kwargs = dict(first_id=first, arrival=_arrival(cfg), reorder_timeout_s=cfg.flow.reorder_timeout_s,
                  use_gpu="head" in set(cfg.placement.gpu_stages), threads=_threads(cfg))  # fmt: skip
    return args, kwargs


CloudPlan = list[tuple[tuple[str, ...], Callable[[int], Any], tuple[int, int]]]
"""The cloud steps in stream order: stages, a maker of replica ``r``'s actor, and (min, max) replicas."""


class HostedEdge:
    """One edge's handle on a shared :class:`EdgeHost` actor: it looks like an edge actor's handle
    to the executor (``handle.method.options(...).remote(...)``, ``handle._actor_id.hex()``), and
    each call names its edge first."""

    def __init__(self, host: Any, edge: int) -> None:
        self.host, self.edge = host, edge

    @property
    def _actor_id(self) -> _HostedId:
        return _HostedId(f"{self.host._actor_id.hex()}/{self.edge}")

    def __getattr__(self, name: str) -> _EdgeMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        return _EdgeMethod(getattr(self.host, name), self.edge)


class _HostedId:
    def __init__(self, key: str) -> None:
        self.key = key

    def hex(self) -> str:
        return self.key


class _EdgeMethod:
    def __init__(self, method: Any, edge: int) -> None:
        self.method, self.edge = method, edge

    def options(self, **kwargs: Any) -> _EdgeMethod:
        return _EdgeMethod(self.method.options(**kwargs), self.edge)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.method.remote(self.edge, *args, **kwargs)


def _edge_hosts(cfg: PipelineConfig, pre: Preflight, nodes: list[str]) -> list[Any]:
    """Edges grouped ``fleet.edges_per_process`` to an :class:`EdgeHost` (host ``j`` on the ``j``-th
    edge node): each edge's :class:`HostedEdge` handle, in edge order."""
    import ray

    k, n = cfg.fleet.edges_per_process, cfg.fleet.edges
    handles: list[Any] = []
    for j, first in enumerate(range(0, n, k)):
        members = {e: _edge_node_args(cfg, pre, e) for e in range(first, min(n, first + k))}
        opts = actor_options(cfg, "edge", _pick(nodes, j))
        host = ray.remote(EdgeHost).options(**opts).remote(members)
        handles += [HostedEdge(host, e) for e in members]
    return handles


def _cloud_plan(cfg: PipelineConfig, pre: Preflight, nodes: list[str], results: bool) -> CloudPlan:
    """The shared cloud pool and the sink. With ``results``, the sink passes each sample's prediction
    on (the output rows). A pool given as ``{min, max}`` starts at ``min`` and may grow to ``max``:
    the maker then starts its new replicas during the run."""
    import ray

    gpu, t, f = set(cfg.placement.gpu_stages), _threads(cfg), pre.factory

    def remote(cls: type, stage: str, r: int) -> Any:
        return ray.remote(cls).options(**actor_options(cfg, stage, _pick(nodes, r)))

    n, refs, kind = cfg.replicas, cfg.fidelity.reference_samples, pre.model["kind"]
    if pre.source.kind == "iterable":  # its inputs cannot be read again for the reference check
        refs = 0
    top_k = cfg.output.top_k if results and pre.prediction == "classes" else 0
    if cfg.placement.fuse:
        (dlo, dhi), (tlo, thi) = n.bounds("decoder"), n.bounds("tail")

        def cloud(r: int) -> Any:
            return remote(CloudNode, "cloud", r).remote(
                pre.feature_shape, f, pre.source, refs, r, "tail" in gpu, t,
                kind=kind, top_k=top_k, results=results, codec_gpu="decoder" in gpu,
            )  # fmt: skip

        return [(("decoder", "tail", "sink"), cloud, (max(dlo, tlo), max(dhi, thi)))]

    def sink(r: int) -> Any:
        return remote(Sink, "sink", 0).remote(pre.source, f, refs, results)

    def decoder(r: int) -> Any:
        return remote(Decoder, "decoder", r).remote(
            pre.feature_shape, r, t, text=pre.text, use_gpu="decoder" in gpu
        )

    def tail(r: int) -> Any:
        return remote(TailModel, "tail", r).remote(
            f, r, "tail" in gpu, t, kind=kind, reference_samples=refs, top_k=top_k
        )

    return [
        (("decoder",), decoder, n.bounds("decoder")),
        (("tail",), tail, n.bounds("tail")),
        (("sink",), sink, (1, 1)),
    ]


def build_graph(cfg: PipelineConfig, pre: Preflight, results: bool = False) -> StageGraph:
    """Create every actor with its placement and wait until all are constructed (``results``: the
    sink passes each sample's prediction on, for the output rows)."""
    import ray

    p = cfg.placement
    edge_nodes = nodes_with(p.edge_resource, p.resource_amount)
    cloud_nodes = nodes_with(p.cloud_resource, p.resource_amount)
    hosts = _edge_hosts(cfg, pre, edge_nodes) if cfg.fleet.edges_per_process > 1 else None
    edges = [
        _edge_steps(cfg, pre, e, _pick(edge_nodes, e), None if hosts is None else hosts[e])
        for e in range(cfg.fleet.edges)
    ]
    plan = _cloud_plan(cfg, pre, cloud_nodes, results)
    cloud = [(stages, [make(r) for r in range(lo)]) for stages, make, (lo, _) in plan]
    handles = {h._actor_id.hex(): h for steps in edges for _, h in steps}
    handles.update({h._actor_id.hex(): h for _, hs in cloud for h in hs})
    keys = list(handles)
    try:
        answers = ray.get([handles[k].ready.remote() for k in keys], timeout=READY_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError as exc:
        kill_handles(handles.values())
        raise PlacementError(
            f"actors did not start within {READY_TIMEOUT_S:.0f} s (placement resources?)"
        ) from exc
    where = dict(zip(keys, answers, strict=True))

    def step(stages: tuple[str, ...], hs: list[Any], bounds: tuple[int, int] | None = None) -> Step:
        return Step(stages, hs, [where[h._actor_id.hex()] for h in hs], bounds)

    def spawn(index: int, r: int) -> Any:
        """A new replica ``r`` of cloud step ``index`` (an autoscaling pool grows)."""
        return plan[index][1](r)

    return StageGraph(
        [[step(s, [h]) for s, h in steps] for steps in edges],
        [step(s, hs, b) for (s, hs), (_, _, b) in zip(cloud, plan, strict=True)],
        spawn=spawn,
    )


def kill_handles(handles: Any) -> None:
    """Stop actors for good (no restart)."""
    import ray

    for h in handles:
        with contextlib.suppress(Exception):  # already gone (a host's edges name it several times)
            ray.kill(getattr(h, "host", h), no_restart=True)


def kill_graph(graph: StageGraph) -> None:
    """Stop every actor of a graph for good."""
    steps = [s for chain in graph.edges for s in chain] + graph.cloud
    kill_handles({h._actor_id.hex(): h for s in steps for h in s.handles}.values())
