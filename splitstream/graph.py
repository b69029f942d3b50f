"""Builds a stream's Ray actors from a config: placement on the two sides, restart options, and the
models, data and codec settings each stage needs. The executor (``pipeline.stream.executor``) gets the
handles and never imports the actor classes."""

from __future__ import annotations

import contextlib
from typing import Any

from actors import Decoder, Encoder, HeadModel, Sink, Source, TailModel, Transport
from pipeline.stream.config import PipelineConfig, link_spec_kwargs
from pipeline.stream.executor import EDGE_STAGES, StageGraph
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


def actor_options(cfg: PipelineConfig, stage: str) -> dict[str, Any]:
    """Ray options of one stage's actors: side resource, CPUs/GPUs, restarts (replays are the
    executor's job, so Ray retries no task itself)."""
    p = cfg.placement
    side = p.edge_resource if stage in EDGE_STAGES else p.cloud_resource
    opts: dict[str, Any] = {
        "num_cpus": p.num_cpus,
        "resources": {side: p.resource_amount},
        "max_restarts": cfg.flow.max_restarts,
        "max_task_retries": 0,
    }
    if stage in p.gpu_stages and p.num_gpus > 0:
        opts["num_gpus"] = p.num_gpus
    return opts


def _link_spec(cfg: PipelineConfig):
    if cfg.link.mode != "emulated":
        return None
    from pipeline.stream.link import resolve_link

    return resolve_link(cfg.link.profile, **link_spec_kwargs(cfg))


def build_graph(cfg: PipelineConfig, pre: Preflight) -> StageGraph:
    """Create every actor with its placement and wait until all are constructed."""
    import ray

    b, c, gpu, f = cfg.batching, cfg.codec, set(cfg.placement.gpu_stages), pre.factory

    def remote(cls: type, stage: str) -> Any:
        return ray.remote(cls).options(**actor_options(cfg, stage))

    n = cfg.replicas
    spec = pre.source
    source_args = (spec, cfg.samples, b.max_batch_size, b.max_wait_ms, b.min_batch_size)
    handles: dict[str, list[Any]] = {
        "source": [remote(Source, "source").remote(*source_args, b.adaptive, cfg.data.rate_sps)],
        "head": [remote(HeadModel, "head").remote(f, r, "head" in gpu) for r in range(n.head)],
        "encoder": [
            remote(Encoder, "encoder").remote(c.kind, c.bits, c.level, c.axis, r)
            for r in range(n.encoder)
        ],
        "transport": [
            remote(Transport, "transport").remote(_link_spec(cfg), 0, cfg.flow.reorder_timeout_s)
        ],
        "decoder": [
            remote(Decoder, "decoder").remote(pre.feature_shape, r) for r in range(n.decoder)
        ],
        "tail": [remote(TailModel, "tail").remote(f, r, "tail" in gpu) for r in range(n.tail)],
        "sink": [remote(Sink, "sink").remote(spec, f, cfg.fidelity.reference_samples)],
    }
    names = list(handles)
    refs = [[h.ready.remote() for h in handles[k]] for k in names]
    try:
        where = ray.get([r for rs in refs for r in rs], timeout=READY_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError as exc:
        kill_graph(StageGraph(handles, {}))
        raise PlacementError(
            f"actors did not start within {READY_TIMEOUT_S:.0f} s (placement resources?)"
        ) from exc
    it = iter(where)
    return StageGraph(handles, {k: [next(it) for _ in handles[k]] for k in names})


def kill_graph(graph: StageGraph) -> None:
    """Stop every actor for good (no restart)."""
    import ray

    for hs in graph.handles.values():
        for h in hs:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(h, no_restart=True)
