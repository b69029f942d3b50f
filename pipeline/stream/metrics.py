"""Pipeline metrics: per-call records in each stage, summaries, the end-to-end report and its table.

Stages record one :class:`CallRecord` per processed batch with :class:`StageRecorder`, which
also exports the numbers through ``ray.util.metrics`` (Counter / Gauge / Histogram) when it
runs inside Ray. The driver combines the records with its own flow-control observations
(queue depth, backpressured time, in-flight peaks) into the report dict.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


@dataclass
class CallRecord:
    """One batch processed by one stage replica (wall-clock ``time.time()`` seconds)."""

    start: float
    end: float
    samples: int
    bytes_in: int = 0
    bytes_out: int = 0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def where_am_i() -> dict[str, Any]:
    """Node id (when inside Ray), IP address, hostname and pid of the calling process."""
    info: dict[str, Any] = {"pid": os.getpid(), "hostname": socket.gethostname()}
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            info["node_id"] = ctx.get_node_id()
            info["ip"] = ray.util.get_node_ip_address()
    except Exception:  # pragma: no cover - best effort outside Ray
        pass
    return info


class StageRecorder:
    """Collects :class:`CallRecord` s for one stage replica and mirrors them to Ray metrics."""

    def __init__(self, stage: str, replica: int = 0, export: bool = True) -> None:
        self.stage = stage
        self.replica = replica
        self.records: list[CallRecord] = []
        self._metrics: tuple[Any, Any, Any] | None = None
        if export:
            self._metrics = _make_ray_metrics(stage, replica)

    def record(
        self, start: float, end: float, samples: int, bytes_in: int = 0, bytes_out: int = 0
    ) -> None:
        """Store one call and update the exported counters."""
        self.records.append(CallRecord(start, end, samples, bytes_in, bytes_out))
        if self._metrics is not None:
            counter, hist, gauge = self._metrics
            try:
                counter.inc(samples)
                hist.observe((end - start) * 1000.0)
                gauge.set(samples)
            except Exception:  # pragma: no cover - metrics export must never break the stream
                self._metrics = None

    def snapshot(self) -> dict[str, Any]:
        """Records plus placement info, as plain data for the driver."""
        return {
            "stage": self.stage,
            "replica": self.replica,
            "where": where_am_i(),
            "records": [asdict(r) for r in self.records],
        }


def _make_ray_metrics(stage: str, replica: int) -> tuple[Any, Any, Any] | None:
    try:
        import ray

        if not ray.is_initialized():
            return None
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = {"stage": stage, "replica": str(replica)}
        keys = ("stage", "replica")
        counter = Counter("splitstream_samples", "samples processed by a stage", tag_keys=keys)
        hist = Histogram(
            "splitstream_batch_latency_ms",
            "per-batch service time of a stage",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=keys,
        )
        gauge = Gauge("splitstream_batch_size", "size of the last batch of a stage", tag_keys=keys)
        for m in (counter, hist, gauge):
            m.set_default_tags(tags)
        return counter, hist, gauge
    except Exception:  # pragma: no cover - metrics unavailable
        return None


class FlowGauges:
    """Driver-side Ray gauges: input queue depth and in-flight batches per stage."""

    def __init__(self) -> None:
        self._g: tuple[Any, Any] | None = None
        try:
            import ray

            if ray.is_initialized():
                from ray.util.metrics import Gauge

                self._g = (
                    Gauge(
                        "splitstream_queue_depth",
                        "batches queued before a stage",
                        tag_keys=("stage",),
                    ),
                    Gauge(
                        "splitstream_inflight_batches",
                        "batches in flight into a stage",
                        tag_keys=("stage",),
                    ),
                )
        except Exception:  # pragma: no cover - metrics unavailable
            self._g = None

    def update(self, depths: dict[str, int], inflight: dict[str, int]) -> None:
        """Set both gauges for every stage (no-op outside Ray)."""
        if self._g is None:
            return
        queue, flight = self._g
        try:
            for name, d in depths.items():
                queue.set(d, tags={"stage": name})
                flight.set(inflight.get(name, 0), tags={"stage": name})
        except Exception:  # pragma: no cover - metrics export must never break the stream
            self._g = None


def summarize_stage(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Throughput, p50/p99 service latency, busy time, mean batch size and bytes of one stage."""
    snaps = list(snapshots)
    recs = [CallRecord(**r) for s in snaps for r in s["records"]]
    lat_ms = [(r.end - r.start) * 1000.0 for r in recs]
    samples = sum(r.samples for r in recs)
    span = (max(r.end for r in recs) - min(r.start for r in recs)) if recs else 0.0
    return {
        "replicas": len(snaps),
        "batches": len(recs),
        "samples": samples,
        "throughput_sps": samples / span if span > 0 else 0.0,
        "latency_p50_ms": percentile(lat_ms, 50),
        "latency_p99_ms": percentile(lat_ms, 99),
        "busy_s": sum(r.end - r.start for r in recs),
        "mean_batch_size": samples / len(recs) if recs else 0.0,
        "bytes_in": sum(r.bytes_in for r in recs),
        "bytes_out": sum(r.bytes_out for r in recs),
        "placement": [
            {"replica": s["replica"], **{k: s["where"].get(k) for k in ("node_id", "ip", "pid")}}
            for s in snaps
        ],
    }


def link_goodput(tx: Sequence[dict[str, float]]) -> dict[str, float]:
    """Payload goodput of a link from per-batch records ``{"bytes", "tx_done"[, "queued"]}``.

    Measured from the observed end of the batch just before the first batch that found the
    link busy (the link is backlogged from there on: warm-up excluded) to the observed end of
    the last transmission (the propagation tail is excluded); idle gaps after that point
    count against goodput. Without any queued batch it falls back to the span from the
    first to the last ``tx_done``.
    """
    # the emulated link's own schedule (tx_done_planned) is exact; observed times are a fallback (real
    # links) and can bunch up when several awaits resume together, which would shrink the window
    key = "tx_done_planned" if tx and all("tx_done_planned" in t for t in tx) else "tx_done"
    done = sorted(tx, key=lambda t: t[key])
    first = next((i for i, t in enumerate(done) if t.get("queued") and i > 0), 1)
    if len(done) < 2 or first >= len(done):
        return {"goodput_mbps": math.nan, "window_s": 0.0, "window_bytes": 0}
    window = done[-1][key] - done[first - 1][key]
    nbytes = sum(t["bytes"] for t in done[first:])
    return {
        "goodput_mbps": nbytes * 8 / window / 1e6 if window > 0 else math.nan,
        "window_s": window,
        "window_bytes": nbytes,
        "window_batches": len(done) - first,
    }


class MemorySampler:
    """Periodic RSS samples of the driver and the stage processes on this host."""

    def __init__(self, pids: Sequence[int] = (), period_s: float = 0.5) -> None:
        self.pids = sorted(set(pids) | {os.getpid()})
        self.period_s = period_s
        self.samples: list[dict[str, float]] = []
        self._last = -math.inf
        self._t0 = time.monotonic()

    def maybe_sample(self, force: bool = False) -> None:
        """Take a sample if ``period_s`` has elapsed (or ``force``)."""
        now = time.monotonic()
        if not force and now - self._last < self.period_s:
            return
        self._last = now
        import psutil

        rss = 0
        for pid in self.pids:
            try:
                rss += psutil.Process(pid).memory_info().rss
            except (psutil.Error, OSError):
                continue
        self.samples.append({"t": now - self._t0, "rss_mb": rss / 2**20, **object_store_mb()})

    def summary(self) -> dict[str, Any]:
        """Samples plus first / max / last RSS for quick reading."""
        rss = [s["rss_mb"] for s in self.samples]
        return {
            "samples": self.samples,
            "rss_mb_first": rss[0] if rss else math.nan,
            "rss_mb_max": max(rss) if rss else math.nan,
            "rss_mb_last": rss[-1] if rss else math.nan,
        }


def object_store_mb() -> dict[str, float]:
    """Used object-store memory in MiB, from the cluster's resource view (best effort)."""
    try:
        import ray

        total = ray.cluster_resources().get("object_store_memory")
        free = ray.available_resources().get("object_store_memory")
        if total is None or free is None:
            return {}
        return {"object_store_used_mb": (total - free) / 2**20}
    except Exception:  # pragma: no cover - best effort
        return {}


def _fmt(v: Any, nd: int = 1) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{nd}f}"
    return str(v)


def format_report(report: dict[str, Any]) -> str:
    """A readable plain-text table of the end-to-end numbers and the per-stage metrics."""
    lines = ["splitstream run report", "=" * 78]
    model = report.get("model") or {}
    label = f"{model.get('name')} @ {model.get('split')}"
    if model.get("trained") is False:
        label += " (UNTRAINED weights)"
    elif model.get("weights_source"):
        label += f" ({model['weights_source']})"
    codec = (report.get("config") or {}).get("codec") or {}
    e2e = [
        ("model", label),
        ("codec", f"{codec.get('kind')} {codec.get('bits')}-bit" if codec else None),
        ("samples delivered", report.get("delivered")),
        ("throughput (samples/s)", report.get("throughput_sps")),
        (
            "latency p50 / p99 (ms)",
            f"{_fmt(report.get('latency_p50_ms'))} / {_fmt(report.get('latency_p99_ms'))}",
        ),
        ("raw -> wire bytes", f"{report.get('raw_bytes')} -> {report.get('wire_bytes')}"),
        ("compression ratio", _fmt(report.get("compression_ratio"), 2)),
        ("link goodput (Mbit/s)", _fmt(report.get("goodput_mbps"), 3)),
        ("link utilization", _fmt(report.get("link_utilization"), 3)),
        ("peak in-flight batches", report.get("peak_inflight_batches")),
        ("lost / duplicated", f"{report.get('lost')} / {report.get('duplicated')}"),
    ]
    fid = report.get("fidelity") or {}
    if fid.get("accuracy") is not None:
        e2e.append(("accuracy (vs labels)", _fmt(100 * fid["accuracy"], 2) + " %"))
    if fid.get("agreement") is not None:
        e2e.append(
            (
                f"top-1 agreement (n={fid.get('reference_samples')})",
                _fmt(100 * fid["agreement"], 2) + " %",
            )
        )
    mem = report.get("memory") or {}
    if mem:
        e2e.append(
            (
                "RSS first / max / last (MiB)",
                f"{_fmt(mem.get('rss_mb_first'))} / {_fmt(mem.get('rss_mb_max'))} / {_fmt(mem.get('rss_mb_last'))}",
            )
        )
    width = max(len(k) for k, _ in e2e)
    lines += [f"{k.ljust(width)}  {_fmt(v)}" for k, v in e2e]
    lines.append("-" * 78)
    head = f"{'stage':<10}{'sps':>9}{'p50ms':>9}{'p99ms':>9}{'busy_s':>8}{'bp_s':>7}{'q_mean':>8}{'q_max':>6}{'batch':>7}  node"
    lines.append(head)
    for name, st in (report.get("stages") or {}).items():
        nodes = ",".join(
            sorted({str(p.get("ip") or p.get("node_id") or "?") for p in st.get("placement", [])})
        )
        lines.append(
            f"{name:<10}{_fmt(st.get('throughput_sps')):>9}{_fmt(st.get('latency_p50_ms'), 2):>9}"
            f"{_fmt(st.get('latency_p99_ms'), 2):>9}{_fmt(st.get('busy_s'), 2):>8}"
            f"{_fmt(st.get('backpressured_s', 0.0), 2):>7}{_fmt(st.get('queue_depth_mean', 0.0), 2):>8}"
            f"{_fmt(st.get('queue_depth_max', 0)):>6}{_fmt(st.get('mean_batch_size'), 1):>7}  {nodes}"
        )
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: str) -> str:
    """Write a 2x2 PNG: stage throughput, stage latency p50/p99, memory over time, batch sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = report.get("stages") or {}
    names = list(stages)
    fig, ax = plt.subplots(2, 2, figsize=(11, 7))
    ax[0, 0].bar(names, [stages[n].get("throughput_sps", 0.0) for n in names], color="tab:blue")
    ax[0, 0].set_title("stage throughput (samples/s)")
    xs = range(len(names))
    p50 = [stages[n].get("latency_p50_ms", math.nan) for n in names]
    p99 = [stages[n].get("latency_p99_ms", math.nan) for n in names]
    ax[0, 1].bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
    ax[0, 1].bar([x + 0.2 for x in xs], p99, width=0.4, label="p99")
    ax[0, 1].set_xticks(list(xs), names)
    ax[0, 1].set_yscale("log")
    ax[0, 1].set_title("per-batch service latency (ms)")
    ax[0, 1].legend()
    for a in (ax[0, 0], ax[0, 1]):
        a.tick_params(axis="x", rotation=30)
    mem = (report.get("memory") or {}).get("samples") or []
    ax[1, 0].plot([m["t"] for m in mem], [m["rss_mb"] for m in mem], label="RSS of stage processes")
    store = [m.get("object_store_used_mb") for m in mem]
    if any(s is not None for s in store):
        ax2 = ax[1, 0].twinx()
        ax2.plot(
            [m["t"] for m in mem],
            [s or 0.0 for s in store],
            color="tab:orange",
            label="object store",
        )
        ax2.set_ylabel("object store used (MiB)")
    ax[1, 0].set_xlabel("time (s)")
    ax[1, 0].set_ylabel("RSS (MiB)")
    ax[1, 0].set_title("memory during the run")
    sizes = report.get("batch_sizes") or []
    ax[1, 1].step(range(len(sizes)), sizes, where="post")
    ax[1, 1].set_xlabel("batch #")
    ax[1, 1].set_ylabel("samples")
    ax[1, 1].set_title("adaptive batch size")
    goodput = report.get("goodput_mbps")
    fig.suptitle(
        f"{report.get('delivered')} samples, {_fmt(report.get('throughput_sps'))} samples/s, "
        f"ratio {_fmt(report.get('compression_ratio'), 2)}, goodput {_fmt(goodput, 2)} Mbit/s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
