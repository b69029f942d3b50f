"""Run one stream: check the config against its model and data (no Ray), start or join Ray, build the
actor graph, execute, report.

Errors, in the order they can happen: :class:`~pipeline.stream.config.ConfigError` (before Ray starts),
:class:`~splitstream.cluster_access.ClusterAccessError` (the cluster at ``ray.address`` cannot be joined:
unreachable, or a token or TLS setting that does not fit it),
:class:`~splitstream.graph.PlacementError` (the cluster cannot host the graph),
:class:`~pipeline.stream.executor.StreamError` (the stream could not finish; ``.report`` holds the
partial report).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.stream.config import PipelineConfig, edge_link
from pipeline.stream.executor import StreamError, StreamExecutor
from pipeline.stream.preflight import Preflight, preflight
from splitstream.cluster_access import ClusterAccessError, probe_cluster
from splitstream.graph import PlacementError, build_graph, check_resources, kill_graph

__all__ = [
    "ClusterAccessError",
    "PlacementError",
    "StreamError",
    "join_cluster",
    "run_pipeline",
    "start_local_ray",
]


def start_local_ray(
    num_cpus: int | None = 2,
    resources: tuple[str, str] = ("edge", "cloud"),
    object_store_mb: int | None = None,
) -> None:
    """Start a local Ray instance that carries both placement resources, so one machine runs the whole
    edge/cloud graph (the runner, the benchmarks and the tests all use this)."""
    import ray

    ray.init(
        num_cpus=num_cpus,
        resources={name: 1000 for name in resources},
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=object_store_mb * 1024 * 1024 if object_store_mb else None,
    )


def join_cluster(address: str) -> None:
    """``ray.init(address=...)`` with a clear :class:`ClusterAccessError` instead of Ray's retries
    and chained tracebacks when the cluster cannot be joined (see :mod:`splitstream.cluster_access`)."""
    import ray
    from ray.exceptions import AuthenticationError

    probe_cluster(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except (AuthenticationError, ConnectionError) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, AuthenticationError) else exc
        raise ClusterAccessError(f"cannot join the Ray cluster at {address}: {cause}") from None


def _init_ray(cfg: PipelineConfig) -> bool:
    """Connect to or start Ray; True when this call started it (so it also shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if cfg.ray.address:
        join_cluster(cfg.ray.address)
    else:
        start_local_ray(
            cfg.ray.num_cpus, (cfg.placement.edge_resource, cfg.placement.cloud_resource)
        )
    return True


def configured_mbps(cfg: PipelineConfig) -> list[float | None]:
    """Each edge's configured link rate (a trace's mean); None for a real or unlimited link."""
    if cfg.link.mode != "emulated":
        return [None] * cfg.fleet.edges
    from pipeline.stream.link import load_trace, resolve_link, trace_mean_mbps

    rates: list[float | None] = []
    for e in range(cfg.fleet.edges):
        profile, kw = edge_link(cfg, e)
        spec = resolve_link(profile, **kw)
        rates.append(
            trace_mean_mbps(load_trace(spec.trace))
            if spec.trace is not None
            else spec.bandwidth_mbps
        )
    return rates


def run_pipeline(
    cfg: PipelineConfig,
    progress: bool = True,
    factory: Callable[[], tuple[Any, Any]] | None = None,
    checked: Preflight | None = None,
) -> dict[str, Any]:
    """Run the stream described by ``cfg`` and return the report dict.

    ``factory`` (a picklable zero-argument callable returning ``(head, tail)`` torch modules)
    replaces the model registry, e.g. for tests with a tiny model. ``checked`` is a :func:`preflight`
    result already made for this ``cfg`` and ``factory``.
    """
    import ray

    pre = checked or preflight(cfg, factory)
    started = _init_ray(cfg)
    graph = None
    try:
        check_resources(cfg)
        graph = build_graph(cfg, pre)
        ex = StreamExecutor(
            cfg,
            graph,
            stall_timeout_s=pre.stall_timeout_s,
            configured_mbps=configured_mbps(cfg),
            profile=pre.profile,
            progress=progress,
        )
        try:
            report = ex.run()
        except StreamError as exc:
            if exc.report is not None:
                exc.report["model"] = pre.model
            raise
        report["model"] = pre.model
        return report
    finally:
        if graph is not None:
            kill_graph(graph)
        if started:
            ray.shutdown()
