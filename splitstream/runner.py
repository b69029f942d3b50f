"""Graph wiring and the streaming run: start the actors, move batches under flow control, report.

The driver is a small streaming executor (in the spirit of Ray Data's): it never fetches
batch data, it only passes ``ObjectRef`` s from one stage to the next and watches them with
``ray.wait(fetch_local=False)``. Every hop (into head, encoder, transport, decoder, tail,
sink) has a :class:`~pipeline.stream.flow.CreditWindow`: a stage only starts a batch when the hop
after it has a free credit, so a slow link throttles the source instead of filling memory.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.stream.config import PipelineConfig, config_to_dict, link_spec_kwargs
from pipeline.stream.data import resolve_source
from pipeline.stream.flow import CreditWindow, StateTimer
from pipeline.stream.metrics import (
    FlowGauges,
    MemorySampler,
    link_goodput,
    percentile,
    summarize_stage,
)

STAGE_ORDER = ("head", "encoder", "transport", "decoder", "tail", "sink")
EDGE_STAGES = ("source", "head", "encoder", "transport")


class PipelineError(RuntimeError):
    """The stream could not be started or a stage failed while running."""


@dataclass
class _Stage:
    """Driver-side state of one stage: replicas, input queue, running tasks, timers."""

    name: str
    handles: list[Any]
    per_replica: int
    queue: deque = field(default_factory=deque)
    running: dict[Any, int] = field(default_factory=dict)
    load: list[int] = field(default_factory=list)
    timer: StateTimer = field(default_factory=StateTimer)
    q_area: float = 0.0
    q_max: int = 0
    blocked: bool = False

    def __post_init__(self) -> None:
        self.load = [0] * len(self.handles)
        self.timer.set("idle")

    def free_replica(self) -> int | None:
        """Least-loaded replica with a free slot, or None."""
        best = min(range(len(self.handles)), key=lambda r: self.load[r])
        return best if self.load[best] < self.per_replica else None


def _model_kwargs(cfg: PipelineConfig) -> dict[str, Any]:
    return {} if cfg.model.input_size is None else {"input_size": cfg.model.input_size}


def model_factory(cfg: PipelineConfig) -> Callable[[], tuple[Any, Any]]:
    """A picklable zero-argument callable building ``(head, tail)`` for ``cfg.model``."""
    from pipeline.models import split_model

    m = cfg.model
    return functools.partial(split_model, m.name, m.split, m.weights, **_model_kwargs(cfg))


def prepare_model(cfg: PipelineConfig) -> dict[str, Any]:
    """Load the registry model once in the driver (trains / caches weights before the actors
    load them), check it can stream, and describe it for the report."""
    from pipeline.models import load_model

    loaded = load_model(cfg.model.name, cfg.model.weights, **_model_kwargs(cfg))
    if loaded.kind not in ("vision", "custom"):
        raise PipelineError(
            f"model.name: {cfg.model.name!r} is a {loaded.kind} (text) model; the stream's "
            "source and head carry image tensors only"
        )
    loaded.split(cfg.model.split)
    return {
        "name": cfg.model.name,
        "split": cfg.model.split,
        "kind": loaded.kind,
        "trained": bool(loaded.trained),
        "weights_source": loaded.weights_source,
        "input_shape": list(loaded.input_shape) or None,
    }


def _init_ray(cfg: PipelineConfig) -> bool:
    """Connect to / start Ray; returns True when this call started it (so we shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, log_to_driver=False)
    else:
        start_local_ray(
            cfg.ray.num_cpus, (cfg.placement.edge_resource, cfg.placement.cloud_resource)
        )
    return True


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


def _check_resources(cfg: PipelineConfig) -> None:
    import ray

    have = ray.cluster_resources()
    for key in ("edge_resource", "cloud_resource"):
        name = getattr(cfg.placement, key)
        if have.get(name, 0) < cfg.placement.resource_amount:
            raise PipelineError(
                f"placement.{key}: the Ray cluster has no custom resource {name!r} "
                f"(have {sorted(k for k in have if not k.startswith('node:'))})"
            )


def _options(cfg: PipelineConfig, stage: str) -> dict[str, Any]:
    side = cfg.placement.edge_resource if stage in EDGE_STAGES else cfg.placement.cloud_resource
    opts: dict[str, Any] = {
        "num_cpus": cfg.placement.num_cpus,
        "resources": {side: cfg.placement.resource_amount},
    }
    if stage in cfg.placement.gpu_stages and cfg.placement.num_gpus > 0:
        opts["num_gpus"] = cfg.placement.num_gpus
    return opts


def _link_spec(cfg: PipelineConfig):
    if cfg.link.mode != "emulated":
        return None
    from pipeline.stream.link import resolve_link

    return resolve_link(cfg.link.profile, **link_spec_kwargs(cfg))


def build_graph(
    cfg: PipelineConfig,
    factory: Callable[[], tuple[Any, Any]],
    input_shape: list[int] | None = None,
) -> dict[str, list[Any]]:
    """Create every actor with its placement; returns handles per stage (incl. source).

    ``input_shape`` is the model's input shape, used for synthetic data without ``data.shape``.
    """
    import ray

    from actors import Decoder, Encoder, HeadModel, Sink, Source, TailModel, Transport

    shape = cfg.data.shape if cfg.data.shape is not None else input_shape
    spec = resolve_source(cfg.data.source, cfg.model.name, shape, cfg.model.input_size, cfg.seed)
    b = cfg.batching
    gpu = set(cfg.placement.gpu_stages)
    g: dict[str, list[Any]] = {}

    def remote(cls: type, stage: str) -> Any:
        return ray.remote(cls).options(**_options(cfg, stage))

    g["source"] = [
        remote(Source, "source").remote(
            spec,
            cfg.samples,
            b.max_batch_size,
            b.max_wait_ms,
            b.min_batch_size,
            b.adaptive,
            cfg.data.rate_sps,
        )
    ]
    g["head"] = [
        remote(HeadModel, "head").remote(factory, r, "head" in gpu)
        for r in range(cfg.replicas.head)
    ]
    c = cfg.codec
    g["encoder"] = [
        remote(Encoder, "encoder").remote(c.kind, c.bits, c.level, c.axis, r)
        for r in range(cfg.replicas.encoder)
    ]
    g["transport"] = [remote(Transport, "transport").remote(_link_spec(cfg))]
    g["decoder"] = [remote(Decoder, "decoder").remote(r) for r in range(cfg.replicas.decoder)]
    g["tail"] = [
        remote(TailModel, "tail").remote(factory, r, "tail" in gpu)
        for r in range(cfg.replicas.tail)
    ]
    ref_n = cfg.fidelity.reference_samples
    g["sink"] = [remote(Sink, "sink").remote(cfg.samples, spec, factory if ref_n > 0 else None)]
    return g


class _Executor:
    """Moves batches through the stages under per-hop credit windows."""

    def __init__(self, cfg: PipelineConfig, graph: dict[str, list[Any]], progress: bool) -> None:
        self.cfg = cfg
        self.graph = graph
        w, per = cfg.flow.window, cfg.flow.per_replica_inflight
        self.stages = [
            _Stage(name, graph[name], w if name == "transport" else per) for name in STAGE_ORDER
        ]
        # hops[i] = batches in flight into stage i (running at stage i-1 or queued before i)
        self.hops = [CreditWindow(w) for _ in STAGE_ORDER]
        self.source = graph["source"][0]
        self.source_pending: tuple[Any, Any] | None = None
        self.source_done = False
        self.seq = 0
        self.delivered = 0
        self.progress = progress
        self.peak_total = 0
        self.gauges = FlowGauges()
        self._gauge_t = 0.0

    def _submit(self, i: int) -> bool:
        st = self.stages[i]
        if not st.queue:
            return False
        r = st.free_replica()
        if r is None:
            return False
        if i + 1 < len(self.stages) and not self.hops[i + 1].try_acquire():
            st.blocked = True
            return False
        ref = st.queue.popleft()
        self.hops[i].release()
        h = st.handles[r]
        if st.name == "transport":
            out = h.send.remote(ref, self.seq)
            self.seq += 1
        elif st.name == "sink":
            out = h.receive.remote(ref)
        else:
            out = h.process.remote(ref)
        st.running[out] = r
        st.load[r] += 1
        return True

    def _account(self, dt: float) -> None:
        for st in self.stages:
            st.q_area += len(st.queue) * dt
            st.q_max = max(st.q_max, len(st.queue))
            if st.running:
                st.timer.set("busy")
            elif st.blocked:
                st.timer.set("backpressured")
            else:
                st.timer.set("idle")
        self.peak_total = max(self.peak_total, sum(h.in_flight for h in self.hops))
        now = time.monotonic()
        if now - self._gauge_t > 0.5:
            self._gauge_t = now
            self.gauges.update(
                {st.name: len(st.queue) for st in self.stages},
                {st.name: h.in_flight for st, h in zip(self.stages, self.hops, strict=True)},
            )

    def run(self, mem: MemorySampler) -> float:
        import ray
        from tqdm import tqdm

        bar = tqdm(total=self.cfg.samples, desc="stream", unit="sample", disable=not self.progress)
        t0 = last = time.monotonic()
        try:
            while True:
                for st in self.stages:
                    st.blocked = False
                for i in reversed(range(len(self.stages))):
                    while self._submit(i):
                        pass
                if (
                    not self.source_done
                    and self.source_pending is None
                    and self.hops[0].try_acquire()
                ):
                    meta, batch = self.source.next_batch.options(num_returns=2).remote()
                    self.source_pending = (meta, batch)
                now = time.monotonic()
                self._account(now - last)
                last = now
                mem.maybe_sample()
                watch = [ref for st in self.stages for ref in st.running]
                if self.source_pending is not None:
                    watch.append(self.source_pending[0])
                if not watch:
                    if self.source_done and not any(st.queue for st in self.stages):
                        break
                    raise PipelineError("pipeline stalled: nothing running but work queued")
                ready, _ = ray.wait(watch, num_returns=1, timeout=0.2, fetch_local=False)
                if ready:
                    more, _ = ray.wait(watch, num_returns=len(watch), timeout=0, fetch_local=False)
                    ready = list({*ready, *more})
                for ref in ready:
                    self._complete(ref, bar)
        finally:
            bar.close()
        for st in self.stages:
            st.timer.stop()
        return time.monotonic() - t0

    def _complete(self, ref: Any, bar: Any) -> None:
        import ray

        if self.source_pending is not None and ref == self.source_pending[0]:
            try:
                meta = ray.get(ref)
            except Exception as exc:
                raise PipelineError(f"the source failed: {exc}") from exc
            batch = self.source_pending[1]
            self.source_pending = None
            if meta["n"] > 0:
                self.stages[0].queue.append(batch)
            else:
                self.hops[0].release()
            self.source_done = bool(meta["done"])
            return
        for i, st in enumerate(self.stages):
            if ref in st.running:
                r = st.running.pop(ref)
                st.load[r] -= 1
                if st.name == "sink":
                    try:
                        n = ray.get(ref)
                    except Exception as exc:
                        raise PipelineError(f"a stage failed: {exc}") from exc
                    self.delivered += n
                    bar.update(n)
                else:
                    self.stages[i + 1].queue.append(ref)
                return


def run_pipeline(
    cfg: PipelineConfig,
    progress: bool = True,
    factory: Callable[[], tuple[Any, Any]] | None = None,
) -> dict[str, Any]:
    """Run the stream described by ``cfg`` and return the report dict.

    ``factory`` (a picklable zero-argument callable returning ``(head, tail)`` torch modules)
    replaces the model registry, e.g. for tests with a tiny model.
    """
    import ray

    model_info: dict[str, Any] = {
        "name": cfg.model.name,
        "split": cfg.model.split,
        "kind": "custom",
    }
    if factory is None:
        model_info = prepare_model(cfg)
        factory = model_factory(cfg)
    started = _init_ray(cfg)
    graph: dict[str, list[Any]] = {}
    try:
        _check_resources(cfg)
        graph = build_graph(cfg, factory, model_info.get("input_shape"))
        handles = [h for hs in graph.values() for h in hs]
        try:
            where = ray.get([h.ready.remote() for h in handles], timeout=300)
        except ray.exceptions.GetTimeoutError as exc:
            raise PipelineError("actors did not start within 300 s (placement resources?)") from exc
        mem = MemorySampler([w["pid"] for w in where])
        mem.maybe_sample(force=True)
        ex = _Executor(cfg, graph, progress)
        wall = ex.run(mem)
        mem.maybe_sample(force=True)
        report = _report(cfg, ex, graph, wall, mem)
        report["model"] = model_info
        return report
    finally:
        for hs in graph.values():
            for h in hs:
                ray.kill(h)
        if started:
            ray.shutdown()


def _report(
    cfg: PipelineConfig, ex: _Executor, graph: dict[str, list[Any]], wall: float, mem: MemorySampler
) -> dict[str, Any]:
    import ray

    sink = graph["sink"][0]
    summary = ray.get(sink.summary.remote(cfg.fidelity.reference_samples))
    link = ray.get(graph["transport"][0].link_stats.remote())
    batch_sizes = ray.get(graph["source"][0].batch_sizes.remote())
    stages: dict[str, Any] = {}
    for name in ("source", *STAGE_ORDER):
        snaps = ray.get([h.stats.remote() for h in graph[name]])
        stages[name] = summarize_stage(snaps)
    for i, st in enumerate(ex.stages):
        totals = st.timer.totals
        d = stages[st.name]
        d["queue_depth_mean"] = st.q_area / wall if wall > 0 else 0.0
        d["queue_depth_max"] = st.q_max
        d["backpressured_s"] = totals.get("backpressured", 0.0)
        d["idle_s"] = totals.get("idle", 0.0)
        d["backpressure_ratio"] = d["backpressured_s"] / wall if wall > 0 else 0.0
        d["inflight_peak"] = ex.hops[i + 1].peak if i + 1 < len(ex.hops) else None
    lat_ms = [x * 1000.0 for x in summary["latency_s"]]
    raw = stages["encoder"]["bytes_in"]
    payload = stages["encoder"]["bytes_out"]
    wire = sum(int(t["bytes"]) for t in link["tx"])
    # a real link is measured outside the runner (tc counters, scripts/netns_link.py): the transport's own
    # timestamps there only say when Ray handed the batch on
    real = cfg.link.mode == "real"
    good = {"goodput_mbps": None, "window_s": None} if real else link_goodput(link["tx"])
    lstats = link["link"] or {}
    if lstats:  # the transport's calls overlap (async): its busy time is the link's busy time
        stages["transport"]["call_s"] = stages["transport"]["busy_s"]
        stages["transport"]["busy_s"] = lstats.get("busy_s", 0.0)
    delivered = summary["delivered"]
    return {
        "samples": cfg.samples,
        "delivered": delivered,
        "elapsed_s": wall,
        "throughput_sps": delivered / wall if wall > 0 else 0.0,
        "latency_p50_ms": percentile(lat_ms, 50),
        "latency_p99_ms": percentile(lat_ms, 99),
        "raw_bytes": raw,
        "payload_bytes": payload,
        "wire_bytes": wire,
        "compression_ratio": raw / wire if wire else math.nan,
        "goodput_mbps": good["goodput_mbps"],
        "goodput_window_s": good["window_s"],
        "goodput_window_batches": good.get("window_batches", 0),
        "link_batches": len(link["tx"]),
        "link_utilization": lstats.get("utilization"),
        "link": lstats,
        "peak_inflight_batches": max(h.peak for h in ex.hops),
        "peak_inflight_total": ex.peak_total,
        "window": cfg.flow.window,
        "hops": {
            n: {"peak": h.peak, "refused": h.refused}
            for n, h in zip(STAGE_ORDER, ex.hops, strict=True)
        },
        "lost": summary["lost"],
        "duplicated": summary["duplicated"],
        "unexpected": summary["unexpected"],
        "batch_sizes": batch_sizes,
        "stages": stages,
        "fidelity": summary["fidelity"],
        "memory": mem.summary(),
        "config": config_to_dict(cfg),
    }
