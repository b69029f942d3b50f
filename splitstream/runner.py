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

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from pipeline.stream.config import ConfigError, PipelineConfig, edge_link
from pipeline.stream.executor import StreamError, StreamExecutor
from pipeline.stream.feeder import ItemFeeder, dataset_items
from pipeline.stream.preflight import Preflight, preflight
from pipeline.stream.results import open_results
from pipeline.stream.stopping import StopControl
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
    """Start a new local Ray instance that carries both placement resources, so one machine runs the
    whole edge/cloud graph (the runner, the benchmarks and the tests all use this).

    Always a new, private instance (``address="local"``): a cluster that ``ray start`` left running on
    this machine, or ``RAY_ADDRESS``, is not joined (join one with ``ray.address`` / ``--address``).

    A watcher process (:mod:`splitstream.ray_watcher`) sees that nothing of it outlives it: once the
    instance's raylet is gone (``ray.shutdown``, or this process killed), it gives the raylet's
    children (the dashboard and runtime-env agents, workers) 3 s and then kills those still running.
    Ray's agents otherwise linger, orphaned, for a minute or more after their driver is killed.
    """
    import subprocess
    import sys

    import psutil
    import ray

    ray.init(
        address="local",
        num_cpus=num_cpus,
        resources={name: 1000 for name in resources},
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=object_store_mb * 1024 * 1024 if object_store_mb else None,
    )
    try:  # Ray's own record of the processes it started for this node; its agents are up by now
        node = ray._private.worker._global_node
        raylet = node.all_processes[ray._private.ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        kids = [f"{c.pid}:{c.create_time()}" for c in psutil.Process(raylet).children()]
    except (AttributeError, IndexError, KeyError, psutil.Error):  # pragma: no cover - other Ray
        return
    subprocess.Popen(
        [sys.executable, "-m", "splitstream.ray_watcher", str(raylet), *kids],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the driver's terminal does not stop it
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
    *,
    inputs: Iterable[Any] | None = None,
    stop: StopControl | None = None,
    resume: bool = False,
    listeners: Sequence[Callable[[list[dict[str, Any]]], None]] = (),
) -> dict[str, Any]:
    """Run the stream described by ``cfg`` and return the report dict.

    ``factory`` (a picklable zero-argument callable returning ``(head, tail)`` torch modules)
    replaces the model registry, e.g. for tests with a tiny model. ``checked`` is a :func:`preflight`
    result already made for this ``cfg`` and ``factory``. ``inputs`` is the iterable of a
    ``data.source: iterable`` stream (or a ``ray.data.Dataset``). ``stop`` takes stop requests
    (signals, ``--duration``); ``resume`` continues the run checkpointed beside ``output.path``;
    each of ``listeners`` gets every batch of result rows as the stream settles them.
    """
    import ray

    items, first = _peek_inputs(cfg, inputs)
    pre = checked or preflight(cfg, factory, first=first)
    try:
        results, states = open_results(
            cfg, pre.prediction, pre.class_names, resume=resume, listeners=listeners
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    feeder = None
    if items is not None:
        skip = 0 if states is None else int(states[0]["watermark"])
        left = None if cfg.samples is None else max(0, cfg.samples - skip)
        feeder = ItemFeeder(items, 2 * cfg.batching.max_batch_size, left, skip)
    started = _init_ray(cfg)
    graph = None
    try:
        check_resources(cfg)
        graph = build_graph(cfg, pre, results=results.wanted)
        ex = StreamExecutor(
            cfg,
            graph,
            stall_timeout_s=pre.stall_timeout_s,
            configured_mbps=configured_mbps(cfg),
            profile=pre.profile,
            progress=progress,
            ranges=list(pre.edges),
            results=results,
            stop=stop,
            feeder=feeder,
            resume=states,
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
        if feeder is not None:
            feeder.close()
        if results.writer is not None:
            results.writer.close()
        if graph is not None:
            kill_graph(graph)
        if started:
            ray.shutdown()


def _peek_inputs(cfg: PipelineConfig, inputs: Any) -> tuple[Iterator[Any] | None, Any]:
    """An iterable source's items (a ``ray.data.Dataset``'s rows' inputs) and its first item, which
    preflight runs the head on; the iterator still yields it."""
    if cfg.data.source != "iterable":
        if inputs is not None:
            raise ConfigError(
                "data.source: inputs were given; set data.source=iterable to use them"
            )
        return None, None
    if inputs is None:
        raise ConfigError("data.source: an iterable source needs its inputs (inputs=...)")
    if hasattr(inputs, "iter_rows") and hasattr(inputs, "schema"):  # a ray.data.Dataset
        inputs = dataset_items(inputs, cfg.data.column)
    it = iter(inputs)
    try:
        first = next(it)
    except StopIteration:
        raise ConfigError("data.source: the input iterable is empty") from None
    return itertools.chain([first], it), first
