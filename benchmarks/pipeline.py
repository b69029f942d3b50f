"""Pipeline benchmark: the stream against one core, against the link, and scaled out.

    python -m benchmarks.pipeline [--quick] [--json PATH] [--out DIR] [--skip-cluster] [--netns]
    python -m benchmarks.pipeline --only real-input [--quick] [--json PATH] [--out DIR]

1. **Speed vs one core** -- the in-process rate of the demo model on one core (head ->
   ``codec.encode`` -> ``codec.decode`` -> tail, batches of 32, one torch thread) and the demo stream
   over an unconstrained link (3,000 samples), fused and with one actor per stage, taken in
   alternating pairs on one local Ray instance; the ratios are medians of the per-pair ratios. RSS per
   side comes from the stream's own report.
2. **Bandwidth x codec** -- the demo stream over emulated links of 1, 10, 50 and 100 Mbit/s and
   unconstrained, for ``codec.kind`` fp32, fp16, zstd, int8-zstd and ours; each run carries about
   ``LINK_SECONDS`` of link time. ``e2e util`` is delivered samples/s x wire bytes per sample over
   the configured rate. ``int8-zstd`` is the honest baseline (what a user without splitstream
   would write: uint8 min..max quantization, then zstd -3, per batch); ``x int8-zstd`` is a row's
   samples/s over int8-zstd's on the same link, from the same run.
3. **Fleet scale-out** -- a ``ray.cluster_utils.Cluster`` with one node per edge and four cloud
   nodes; 1, 2, 4 and 8 edges, each over its own 2 Mbit/s emulated link, 200 samples per edge;
   aggregate goodput (measured at the receiver) and end-to-end rate against N x 2 Mbit/s. Every edge
   must run on its own node (checked).
4. **Cloud pool scale-out** -- on the same cluster, two unconstrained edges feeding 1, 2 and 4 cloud
   replicas, each on its own cloud node (checked). Then the same with the tail on a *simulated
   accelerator* (``model.tail_device_ms``: each batch held 3 ms per sample, waiting, not
   computing): ``DEVICE_EDGES`` unconstrained edges feeding 1, 2, 4 and 8 replicas on distinct cloud
   nodes, on a cluster of its own (4 edge and 8 cloud nodes). ``ideal`` is replicas x 1000 / 3 samples/s; the busy columns (each side's stage busy
   seconds over wall x actors: the cloud actor decodes, runs the tail, sinks; of that, the tail's
   share is the simulated device) say which side bounds the rate where it falls short.
5. **Real link** (``--netns``, root) -- the stream across a tc-shaped veth between two network
   namespaces.
6. **Real input** (``--only real-input`` runs it alone; ``--skip-inputs`` leaves it out) --
   ``INPUT_PHOTOS`` JPEG photographs (``pipeline.models.photos.write_jpeg_photos``: crops of the bundled
   photographs, quality 90, seed ``INPUT_SEED``) read from a folder (``data.source=images``) through
   the ImageNet MobileNetV2 split after ``features.6`` (8-bit codec) into a Parquet output, at
   10 Mbit/s and unconstrained, one run each on the local Ray instance. Per run: ``samples/s`` =
   delivered / the stream's wall time; ``decode share`` = the source stage's busy seconds (reading,
   decoding and preprocessing the JPEGs, on the edge's threads) over the busy seconds of the edge's
   compute stages, source + head + encoder (the transport is left out: its time is the link's);
   ``decode samples/s`` = samples / the source's busy seconds, the rate decoding alone could feed,
   set against the end-to-end rate (``decode headroom``); ``bound by`` = the stage (or the link)
   with the lowest such capacity; the output writer's cost = the driver's seconds inside
   ``ResultWriter.add``/``commit``/``close`` (Arrow conversion, Parquet parts, fsync), timed by
   wrapping those methods in this process, per row and as a share of the wall time. The output is
   read back and must hold one delivered row per photograph. Writes its own
   ``pipeline_inputs.json`` (``pipeline_quick_inputs.json`` with ``--quick``), ``.md`` and ``.png``.

All nodes of the cluster share this machine's cores, which the tables say. Prints Markdown tables,
writes JSON (default ``benchmarks/results/pipeline.json``, stamped with the commit and the settings),
``pipeline.md`` and PNG plots into ``--out``; ``--quick`` runs a smaller version and names its outputs
``pipeline_quick*``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.common import machine, provenance, stamp, table, write_json

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BASE_CONFIG = REPO / "configs" / "demo.yaml"
BANDWIDTHS: tuple[float | None, ...] = (1.0, 10.0, 50.0, 100.0, None)  # None = unconstrained
CODECS = ("fp32", "fp16", "zstd", "int8-zstd", "ours")
BASELINE = "int8-zstd"  # the baseline a user would write without splitstream (x int8-zstd column)
LINK_SECONDS = 6.0  # link time each bandwidth run carries ...
SWEEP_SAMPLES = (64, 3000)  # ... within these bounds on its sample count
SPEED_SAMPLES = 3000
REFERENCE_BATCH = 32
FLEET_EDGES = (1, 2, 4, 8)
FLEET_MBPS = 2.0
FLEET_SAMPLES = 200
CLOUD_REPLICAS = (1, 2, 4)
CLOUD_NODES = 4
DEVICE_REPLICAS = (1, 2, 4, 8)  # cloud pool with the tail on a simulated accelerator ...
DEVICE_TAIL_MS = 3.0  # ... of this many ms per sample (model.tail_device_ms)
DEVICE_EDGES = 4  # unconstrained edges feeding it
DEVICE_SAMPLES_PER_REPLICA = 1500  # samples of a run, per cloud replica
REAL_RATES = (4.0,)  # tbf Mbit/s of the real shaped link (--netns)
REAL_CODECS = ("fp32", "int8-zstd", "ours")
INPUT_PHOTOS = 2000  # JPEG photographs of the real-input section ...
INPUT_SEED = 0  # ... written by write_jpeg_photos with this seed ...
INPUT_QUALITY = 90  # ... at this JPEG quality
INPUT_LINKS: tuple[float | None, ...] = (10.0, None)  # Mbit/s; None = unconstrained
INPUT_MODEL = (
    "model.name=mobilenet_v2",
    "model.split=features.6",
    "model.weights=IMAGENET1K_V1",
    "codec.bits=8",
)
EDGE_COMPUTE = ("source", "head", "encoder")  # the edge's compute stages (transport: the link's)
COMPUTE_STAGES = (*EDGE_COMPUTE, "decoder", "tail", "sink")


def _bw_label(bw: float | None) -> str:
    return "unconstrained" if bw is None else f"{bw:g} Mbit/s"


def _row(report: dict[str, Any], mbps: float | None = None) -> dict[str, Any]:
    """The numbers one run contributes to the tables (``mbps``: the configured aggregate rate)."""
    fid = report.get("fidelity") or {}
    e2e = report["throughput_sps"] * report["wire_bytes_per_sample"] * 8 / 1e6
    mem = report.get("memory") or {}
    return {
        "samples": report["delivered"],
        "throughput_sps": report["throughput_sps"],
        "latency_p50_ms": report["latency_p50_ms"],
        "latency_p99_ms": report["latency_p99_ms"],
        "compression_ratio": report["compression_ratio"],
        "wire_bytes": report["wire_bytes"],
        # what arrived, measured at the receiver ...
        "goodput_mbps": report["goodput_mbps"],
        "e2e_mbps": e2e,
        "e2e_utilization": e2e / mbps if mbps else None,
        # ... and the emulated link's own schedule, apart (None on a real link)
        "link_mbps": (report.get("link") or {}).get("scheduled_mbps"),
        "agreement": fid.get("agreement"),
        "accuracy": fid.get("accuracy"),
        "lost": report["lost"],
        "duplicated": report["duplicated"],
        "rejected": report["rejected"],
        "restarts": report["restarts"],
        "elapsed_s": report["elapsed_s"],
        "edge_rss_mb": mem.get("edge_rss_mb_max"),
        "cloud_rss_mb": mem.get("cloud_rss_mb_max"),
        "driver_rss_mb": mem.get("driver_rss_mb_max"),
    }


def _run(overrides: Sequence[str]) -> dict[str, Any]:
    from pipeline.stream.config import load_config
    from splitstream.runner import run_pipeline

    return run_pipeline(load_config(BASE_CONFIG, list(overrides)), progress=False)


def inprocess_rate(samples: int = SPEED_SAMPLES, batch: int = REFERENCE_BATCH) -> float:
    """Samples/s of the demo model through the codec in this process, on one core: the head, one
    ``codec.encode`` and ``codec.decode`` per batch (the demo's codec settings), the tail."""
    import numpy as np
    import torch

    import codec
    from pipeline.stream.config import load_config
    from pipeline.stream.data import SampleSource
    from pipeline.stream.preflight import preflight

    cfg = load_config(BASE_CONFIG)
    pre = preflight(cfg)
    head, tail = pre.factory()
    head.eval()
    tail.eval()
    x, _ = SampleSource(pre.source).get(np.arange(samples))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for k in range(0, samples, batch):
                feat = head(torch.from_numpy(x[k : k + batch])).numpy()
                blob = codec.encode(feat, bits=cfg.codec.bits, level=cfg.codec.level)
                tail(torch.from_numpy(codec.decode(blob))).argmax(-1)
        return samples / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)


def speed_vs_one_core(samples: int, rounds: int) -> list[dict[str, Any]]:
    """The unconstrained demo stream, fused and separate, against the in-process one-core rate."""
    modes = {"fused": ["placement.fuse=true"], "separate": ["placement.fuse=false"]}
    base = [f"samples={samples}", "link.profile=unlimited", "fidelity.reference_samples=0"]
    _run([*base[1:], "samples=300"])  # warm: the digits model is cached, the OS caches are hot
    refs: list[float] = []
    runs: dict[str, list[tuple[float, dict[str, Any]]]] = {m: [] for m in modes}
    for _ in tqdm(range(rounds), desc="speed vs one core", unit="round"):
        for mode, extra in modes.items():
            ref = inprocess_rate(samples)
            rep = _run([*base, *extra])
            refs.append(ref)
            runs[mode].append((rep["throughput_sps"] / ref, rep))
    rows: list[dict[str, Any]] = [
        {
            "mode": f"in-process, one core, batches of {REFERENCE_BATCH}",
            "throughput_sps": statistics.median(refs),
            "ratio": 1.0,
            "ratios": [1.0],
        }
    ]
    for mode, pairs in runs.items():
        ratios = [r for r, _ in pairs]
        rep = sorted(pairs, key=lambda p: p[0])[len(pairs) // 2][1]  # the median run
        row = _row(rep)
        row.update(mode=f"stream, {mode}", ratio=statistics.median(ratios), ratios=ratios)
        rows.append(row)
    return rows


def _sweep_samples(bw: float | None, frame_bytes: int) -> int:
    if bw is None:
        return SWEEP_SAMPLES[1]
    n = int(LINK_SECONDS * bw * 1e6 / 8 / max(frame_bytes, 1))
    return max(SWEEP_SAMPLES[0], min(SWEEP_SAMPLES[1], n))


def bandwidth_sweep(
    reference: int,
    bandwidths: Sequence[float | None] = BANDWIDTHS,
    codecs: Sequence[str] = CODECS,
    cap: int | None = None,
) -> list[dict[str, Any]]:
    """Every (bandwidth, codec) pair on the already-initialized Ray instance."""
    from pipeline.stream.config import load_config
    from pipeline.stream.preflight import preflight

    frame = {
        k: preflight(load_config(BASE_CONFIG, [f"codec.kind={k}"])).frame_bytes for k in codecs
    }
    rows = []
    pairs = [(bw, kind) for bw in bandwidths for kind in codecs]
    for bw, kind in tqdm(pairs, desc="bandwidth x codec", unit="run"):
        n = _sweep_samples(bw, frame[kind])
        n = min(n, cap) if cap else n
        link = ["link.profile=unlimited"] if bw is None else [f"link.bandwidth_mbps={bw}"]
        overrides = [
            f"samples={n}",
            f"codec.kind={kind}",
            f"fidelity.reference_samples={min(reference, n)}",
            "link.mode=emulated",
            *link,
        ]
        row = {
            "bandwidth_mbps": bw,
            "link": _bw_label(bw),
            "codec": kind,
            **_row(_run(overrides), bw),
        }
        rows.append(row)
    return rows


def start_cluster(edge_nodes: int, cloud_nodes: int, cpus: int = 1) -> Any:
    """A simulated multi-node Ray cluster on this machine: a head without CPUs, edge and cloud nodes."""
    from ray.cluster_utils import Cluster

    mem = 96 * 1024 * 1024
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": mem, "include_dashboard": False},
    )
    for _ in range(edge_nodes):
        cluster.add_node(num_cpus=cpus, resources={"edge": 100}, object_store_memory=mem)
    for _ in range(cloud_nodes):
        cluster.add_node(num_cpus=cpus, resources={"cloud": 100}, object_store_memory=mem)
    cluster.wait_for_nodes()
    return cluster


def _distinct(nodes: Sequence[str | None], what: str) -> None:
    """The benchmark's placement claim: every one of ``nodes`` is its own node."""
    if None in nodes or len(set(nodes)) != len(nodes):
        raise RuntimeError(f"{what} did not run on distinct nodes: {list(nodes)}")


def fleet_scaleout(edges: Sequence[int], samples: int, mbps: float) -> list[dict[str, Any]]:
    """N edges, each over its own ``mbps`` link, on the connected cluster (one node per edge)."""
    rows = []
    for n in tqdm(edges, desc="fleet scale-out", unit="run"):
        rep = _run(
            [
                f"samples={samples}",
                f"fleet.edges={n}",
                f"link.bandwidth_mbps={mbps}",
                "fidelity.reference_samples=0",
            ]
        )
        nodes = [e["node"]["node_id"] for e in rep["edges"]]
        _distinct(nodes, f"the {n} edges")
        row = {"edges": n, "configured_mbps": n * mbps, **_row(rep, n * mbps)}
        row["edge_utilization_min"] = min(e["link_utilization"] or 0.0 for e in rep["edges"])
        row["edge_nodes"] = len(set(nodes))
        rows.append(row)
    return rows


def cloud_scaleout(replicas: Sequence[int], samples: int) -> list[dict[str, Any]]:
    """Two unconstrained edges feeding 1, 2, 4 cloud replicas, each on its own cloud node."""
    rows = []
    for r in tqdm(replicas, desc="cloud pool scale-out", unit="run"):
        rep = _run(
            [
                f"samples={samples}",
                "fleet.edges=2",
                f"replicas.decoder={r}",
                f"replicas.tail={r}",
                "link.profile=unlimited",
                "fidelity.reference_samples=0",
            ]
        )
        nodes = [p["node_id"] for p in rep["stages"]["decoder"]["placement"]]
        _distinct(nodes, f"the {r} cloud replicas")
        rows.append({"replicas": r, "cloud_nodes": len(set(nodes)), **_row(rep)})
    base = rows[0]["throughput_sps"] if rows else 0.0
    for row in rows:
        row["speedup"] = row["throughput_sps"] / base if base else None
    return rows


def device_pool_scaleout(replicas: Sequence[int], per_replica: int) -> list[dict[str, Any]]:
    """Edges feeding 1..8 cloud replicas whose tail is a simulated accelerator, one per node."""
    rows = []
    for r in tqdm(replicas, desc="cloud pool, simulated accelerator", unit="run"):
        per_edge = per_replica * r // DEVICE_EDGES
        rep = _run([
            f"samples={per_edge}", f"fleet.edges={DEVICE_EDGES}", f"replicas.decoder={r}",
            f"replicas.tail={r}", f"model.tail_device_ms={DEVICE_TAIL_MS:g}",
            "link.profile=unlimited", "fidelity.reference_samples=0",
        ])  # fmt: skip
        nodes = [p["node_id"] for p in rep["stages"]["tail"]["placement"]]
        _distinct(nodes, f"the {r} cloud replicas")
        wall, st = rep["elapsed_s"], rep["stages"]
        ideal = r * 1000.0 / DEVICE_TAIL_MS
        cloud = sum(st[k]["busy_s"] for k in ("decoder", "tail", "sink"))
        cloud_busy = cloud / (wall * r) if wall else None
        edge = sum(st[k]["busy_s"] for k in ("source", "head", "encoder"))
        edge_busy = edge / (wall * DEVICE_EDGES) if wall else None
        row = {"replicas": r, "cloud_nodes": len(set(nodes)), **_row(rep)}
        row.update(
            ideal_sps=ideal, of_ideal=row["throughput_sps"] / ideal, cloud_busy=cloud_busy,
            tail_busy=st["tail"]["busy_s"] / (wall * r) if wall else None, edge_busy=edge_busy,
            bound_by="cloud (simulated device)" if (cloud_busy or 0) >= 0.85 else "edges / CPU",
        )  # fmt: skip
        rows.append(row)
    base = rows[0]["throughput_sps"] if rows else 0.0
    for row in rows:
        row["speedup"] = row["throughput_sps"] / base if base else None
        row["efficiency"] = row["speedup"] / row["replicas"] if base else None
    return rows


def real_link(
    samples: int, batch: int, rates: Sequence[float], codecs: Sequence[str]
) -> list[dict[str, Any]]:
    """The same stream across a tc-shaped veth between two network namespaces (root only)."""
    import tempfile

    sys.path.insert(0, str(REPO / "scripts"))
    import netns_link

    reason = netns_link.netns_supported()
    if reason:
        print(f"real shaped link skipped: {reason}")
        return []
    rows = []
    pairs = [(rate, kind) for rate in rates for kind in codecs]
    for rate, kind in tqdm(pairs, desc="real shaped link", unit="run"):
        args = ["--config", str(BASE_CONFIG), "--set", f"samples={samples}",
                "--set", f"codec.kind={kind}", "--set", f"batching.max_batch_size={batch}",
                "--set", "fidelity.reference_samples=0"]  # fmt: skip
        with (
            tempfile.TemporaryDirectory(prefix="ss_bench_") as tmp,
            netns_link.NetnsLink(rate) as link,
        ):
            res = netns_link.pipeline_goodput(link, args, tmp)
        row = {"tbf_rate_mbps": rate, "codec": kind, **_row(res["report"])}
        row.update(
            tc_wire_mbps=res["wire_mbps"],
            payload_goodput_mbps=res["goodput_mbps"],
            tc_sent_bytes=res["tc_sent_bytes"],
        )
        rows.append(row)
    return rows


class _Timer:
    """Seconds spent inside the wrapped methods (outermost calls only: ``close`` calls ``commit``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._depth = 0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1
                self._depth -= 1

        return timed


@contextlib.contextmanager
def timed_output() -> Iterator[tuple[_Timer, _Timer]]:
    """Time the driver's output path while the block runs: ``(writer, rows)``, where ``writer``
    is ``ResultWriter.add``/``commit``/``close`` (Arrow tables, Parquet parts, fsync) and ``rows``
    is ``ResultLog.delivered``/``rejected``/``commit`` (building the rows, the writer, the
    checkpoint). The methods are wrapped on their classes in this process, where the driver of an
    in-process ``run_pipeline`` writes, and restored afterwards."""
    from pipeline.stream.output import ResultWriter
    from pipeline.stream.results import ResultLog

    writer, rows = _Timer(), _Timer()
    wrapped = [(ResultWriter, n, writer) for n in ("add", "commit", "close")]
    wrapped += [(ResultLog, n, rows) for n in ("delivered", "rejected", "commit")]
    saved = [(cls, name, cls.__dict__[name]) for cls, name, _ in wrapped]
    for cls, name, timer in wrapped:
        setattr(cls, name, timer.wrap(cls.__dict__[name]))
    try:
        yield writer, rows
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)


def _jpeg_stats(paths: Sequence[Path]) -> dict[str, Any]:
    """Sizes of the photographs (headers only)."""
    from PIL import Image

    sizes = []
    for p in paths:
        with Image.open(p) as im:
            sizes.append(im.size)
    n = max(len(paths), 1)
    return {
        "files": len(paths),
        "bytes_mean": sum(p.stat().st_size for p in paths) / n,
        "megapixels_mean": sum(w * h for w, h in sizes) / n / 1e6,
        "long_side_min": min((max(s) for s in sizes), default=None),
        "long_side_max": max((max(s) for s in sizes), default=None),
        "quality": INPUT_QUALITY,
        "seed": INPUT_SEED,
    }


def _input_row(
    report: dict[str, Any], bw: float | None, writer: _Timer, rows_timer: _Timer, written: int
) -> dict[str, Any]:
    """One real-input run's figures: see the module docstring (section 6) for the definitions."""
    st = report["stages"]
    busy = {s: st[s]["busy_s"] for s in COMPUTE_STAGES}
    samples = {s: st[s]["samples"] for s in COMPUTE_STAGES}
    edge_busy = sum(busy[s] for s in EDGE_COMPUTE)
    capacity = {s: samples[s] / busy[s] if busy[s] > 0 else math.inf for s in COMPUTE_STAGES}
    wire = report["wire_bytes_per_sample"]
    if bw is not None and wire:
        capacity["link"] = bw * 1e6 / 8 / wire
    bound = min(capacity, key=lambda k: capacity[k])
    sps = report["throughput_sps"]
    n_rows = max(report["output"]["rows"], 1)
    row = _row(report, bw)
    row.update(
        bandwidth_mbps=bw,
        link=_bw_label(bw),
        wire_kb_per_sample=wire / 1e3,
        stage_busy_s=busy,
        transport_busy_s=st["transport"]["busy_s"],
        source_cpu_s=st["source"]["cpu_s"],
        edge_busy_s=edge_busy,
        decode_share=busy["source"] / edge_busy if edge_busy > 0 else None,
        capacity_sps={k: (None if math.isinf(v) else v) for k, v in capacity.items()},
        source_capacity_sps=capacity["source"],
        head_capacity_sps=capacity["head"],
        decode_headroom=capacity["source"] / sps if sps else None,
        bound_by=bound,
        writer_s=writer.seconds,
        writer_calls=writer.calls,
        writer_us_per_row=writer.seconds / n_rows * 1e6,
        writer_share=writer.seconds / report["elapsed_s"] if report["elapsed_s"] else None,
        rows_s=rows_timer.seconds,
        rows_us_per_row=rows_timer.seconds / n_rows * 1e6,
        rows=report["output"]["rows"],
        rows_read_back=written,
        checkpoints=report["output"]["checkpoints"],
    )
    return row


def real_input(
    photos: int = INPUT_PHOTOS, links: Sequence[float | None] = INPUT_LINKS, warm: int = 64
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``photos`` JPEG photographs through the MobileNetV2 split to Parquet, once per link, on the
    already-initialized Ray instance (after an unrecorded warm-up run of ``warm`` photographs).
    Returns the rows and the photographs' statistics; raises if an output lacks a row."""
    import tempfile

    from pipeline.models.photos import write_jpeg_photos
    from pipeline.stream.output import read_results

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ss_bench_inputs_") as tmp:
        folder = Path(tmp) / "photos"
        paths = write_jpeg_photos(folder, photos, seed=INPUT_SEED, quality=INPUT_QUALITY)
        stats = _jpeg_stats(paths)
        names = sorted(p.name for p in paths)
        base = [*INPUT_MODEL, "data.source=images", f"data.path={folder}", "link.mode=emulated"]
        if warm:  # the model file in the OS cache, the imports done; not recorded
            other = Path(tmp) / "warm"
            write_jpeg_photos(other, warm, seed=INPUT_SEED + 1, quality=INPUT_QUALITY)
            _run([*INPUT_MODEL, "data.source=images", f"data.path={other}",
                  "link.profile=unlimited", "fidelity.reference_samples=0",
                  f"samples={warm}", f"output.path={Path(tmp) / 'warm.parquet'}"])  # fmt: skip
        for k, bw in enumerate(tqdm(links, desc="real input", unit="run")):
            out = Path(tmp) / f"out-{k}.parquet"
            link = ["link.profile=unlimited"] if bw is None else [f"link.bandwidth_mbps={bw}"]
            load = os.getloadavg()[0]
            with timed_output() as (writer, rows_timer):
                rep = _run([*base, f"samples={photos}", f"output.path={out}", *link])
            table = read_results(out)
            keys = sorted(table.column("key").to_pylist())
            statuses = set(table.column("status").to_pylist())
            if table.num_rows != photos or keys != names or statuses != {"delivered"}:
                raise RuntimeError(
                    f"real input, {_bw_label(bw)}: {table.num_rows} rows for {photos} photographs "
                    f"(statuses {sorted(statuses)}, every file once: {keys == names})"
                )
            row = _input_row(rep, bw, writer, rows_timer, table.num_rows)
            row["load_avg_1m"] = [load, os.getloadavg()[0]]  # before and after: others' CPU use
            rows.append(row)
    return rows, stats


def plot_bandwidth(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Throughput and p99 latency vs bandwidth, one line per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bws = sorted({r["bandwidth_mbps"] for r in rows if r["bandwidth_mbps"] is not None})
    top = max(bws) * 10 if bws else 1000.0
    xs_of = {bw: (top if bw is None else bw) for bw in {r["bandwidth_mbps"] for r in rows}}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind in dict.fromkeys(r["codec"] for r in rows):
        sel = sorted(
            (r for r in rows if r["codec"] == kind), key=lambda r: xs_of[r["bandwidth_mbps"]]
        )
        xs = [xs_of[r["bandwidth_mbps"]] for r in sel]
        axes[0].plot(xs, [r["throughput_sps"] for r in sel], marker="o", label=kind)
        axes[1].plot(xs, [r["latency_p99_ms"] for r in sel], marker="o", label=kind)
    for ax, ylabel in zip(axes, ("throughput (samples/s)", "p99 latency (ms)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted(xs_of.values())
        ax.set_xticks(ticks)
        ax.set_xticklabels(["unconstr." if t == top and None in xs_of else f"{t:g}" for t in ticks])
        ax.set_xlabel("link bandwidth (Mbit/s)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="codec.kind")
    fig.suptitle("splitstream: digits-resnet split at layer1, emulated link (2-core machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scaleout(
    fleet: Sequence[dict[str, Any]],
    cloud: Sequence[dict[str, Any]],
    path: Path,
    device: Sequence[dict[str, Any]] = (),
) -> None:
    """Fleet: aggregate goodput vs edges (with N x link rate); cloud pool: throughput vs replicas,
    CPU-bound tail and tail on a simulated accelerator (with its ideal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if fleet:
        xs = [r["edges"] for r in fleet]
        axes[0].plot(xs, [r["goodput_mbps"] for r in fleet], marker="o", label="goodput (receiver)")
        axes[0].plot(xs, [r["e2e_mbps"] for r in fleet], marker="s", label="end to end")
        axes[0].plot(
            xs, [r["configured_mbps"] for r in fleet], ls="--", color="grey", label="N x link"
        )
        axes[0].set_xticks(xs)
        axes[0].set_xlabel(f"edges (each over its own {FLEET_MBPS:g} Mbit/s link, own node)")
        axes[0].set_ylabel("aggregate Mbit/s")
        axes[0].set_title("fleet scale-out")
        axes[0].legend()
        axes[0].grid(True, alpha=0.3)
    if cloud:
        xs = [r["replicas"] for r in cloud]
        axes[1].plot(xs, [r["throughput_sps"] for r in cloud], marker="o",
                     label="tail on the CPU (measured)")  # fmt: skip
        if device:
            xd = [r["replicas"] for r in device]
            axes[1].plot(xd, [r["throughput_sps"] for r in device], marker="s",
                         label=f"tail on a SIMULATED accelerator, {DEVICE_TAIL_MS:g} ms/sample "
                         "(measured)")  # fmt: skip
            axes[1].plot(xd, [r["ideal_sps"] for r in device], ls="--", color="grey",
                         label="replicas x 1000 / ms (ideal)")  # fmt: skip
            axes[1].legend(fontsize=8)
            xs = sorted(set(xs) | set(xd))
        axes[1].set_xticks(xs)
        axes[1].set_xlabel("cloud replicas (decoder + tail), one per cloud node")
        axes[1].set_ylabel("samples/s")
        axes[1].set_title("cloud pool scale-out (all nodes share 2 cores)")
        axes[1].grid(True, alpha=0.3)
        axes[1].set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_inputs(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Per link: the end-to-end rate against what the source (decoding) and the head could each
    sustain alone; and how the edge's busy time splits between decoding, head and encoder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [r["link"] for r in rows]
    xs = list(range(len(rows)))
    bars = (
        ("throughput_sps", "end to end (delivered / wall)"),
        ("source_capacity_sps", "decoding alone (source busy)"),
        ("head_capacity_sps", "head alone (head busy)"),
    )
    width = 0.26
    for k, (key, label) in enumerate(bars):
        vals = [r[key] for r in rows]
        pos = [x + (k - 1) * width for x in xs]
        axes[0].bar(pos, vals, width, label=label)
        for x, v in zip(pos, vals, strict=True):
            axes[0].text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    axes[0].set_yscale("log")
    axes[0].set_ylim(top=max(r["source_capacity_sps"] for r in rows) * 4)
    axes[0].set_xticks(xs)
    axes[0].set_xticklabels(labels)
    axes[0].set_ylabel("samples/s")
    axes[0].set_title(f"{rows[0]['samples']:,} JPEG photographs, MobileNetV2 @ features.6")
    axes[0].legend(fontsize=8, loc="upper left", ncols=2)
    axes[0].grid(True, axis="y", which="both", alpha=0.3)
    bottom = [0.0] * len(rows)
    for stage in EDGE_COMPUTE:
        shares = [r["stage_busy_s"][stage] / r["edge_busy_s"] for r in rows]
        axes[1].bar(xs, shares, 0.5, bottom=bottom, label=stage)
        for x, b, v in zip(xs, bottom, shares, strict=True):
            if v > 0.03:
                axes[1].text(x, b + v / 2, f"{v:.0%}", ha="center", va="center", fontsize=9)
        bottom = [b + v for b, v in zip(bottom, shares, strict=True)]
    for x, r in zip(xs, rows, strict=True):
        axes[1].text(
            x, 1.02, f"writer {r['writer_us_per_row']:.0f} µs/row", ha="center", fontsize=8
        )
    axes[1].set_xticks(xs)
    axes[1].set_xticklabels(labels)
    axes[1].set_ylim(0, 1.12)
    axes[1].set_ylabel("share of the edge's busy time")
    axes[1].set_title("edge busy time: decoding (source) vs model")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("splitstream: real input, photos folder -> Parquet (2-core machine, shared)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


SPEED_COLUMNS = [
    ("mode", "mode"),
    ("throughput_sps", "samples/s"),
    ("ratio", "x one core"),
    ("latency_p99_ms", "p99 ms"),
    ("edge_rss_mb", "edge RSS MiB"),
    ("cloud_rss_mb", "cloud RSS MiB"),
    ("lost", "lost"),
]
BW_COLUMNS = [
    ("link", "link"),
    ("codec", "codec"),
    ("samples", "samples"),
    ("throughput_sps", "samples/s"),
    ("latency_p50_ms", "p50 ms"),
    ("latency_p99_ms", "p99 ms"),
    ("compression_ratio", "ratio"),
    ("vs_baseline", f"x {BASELINE}"),
    ("goodput_mbps", "goodput Mbit/s (receiver)"),
    ("e2e_utilization", "e2e util"),
    ("link_mbps", "link schedule Mbit/s"),
    ("agreement", "agreement"),
    ("lost", "lost"),
]
FLEET_COLUMNS = [
    ("edges", "edges"),
    ("edge_nodes", "edge nodes"),
    ("configured_mbps", "N x link Mbit/s"),
    ("goodput_mbps", "goodput Mbit/s (receiver)"),
    ("e2e_mbps", "end-to-end Mbit/s"),
    ("e2e_utilization", "e2e util"),
    ("edge_utilization_min", "worst edge util"),
    ("latency_p99_ms", "p99 ms"),
    ("edge_rss_mb", "edge RSS MiB"),
    ("lost", "lost"),
]
CLOUD_COLUMNS = [
    ("replicas", "cloud replicas"),
    ("cloud_nodes", "cloud nodes"),
    ("throughput_sps", "samples/s"),
    ("speedup", "speedup"),
    ("latency_p99_ms", "p99 ms"),
    ("cloud_rss_mb", "cloud RSS MiB"),
    ("lost", "lost"),
]
DEVICE_COLUMNS = [
    ("replicas", "cloud replicas"),
    ("cloud_nodes", "cloud nodes"),
    ("samples", "samples"),
    ("throughput_sps", "samples/s"),
    ("ideal_sps", "ideal samples/s"),
    ("of_ideal", "of ideal"),
    ("speedup", "speedup"),
    ("efficiency", "speedup / replicas"),
    ("cloud_busy", "cloud busy"),
    ("tail_busy", "of it the device"),
    ("edge_busy", "edge busy"),
    ("bound_by", "bound by"),
    ("latency_p99_ms", "p99 ms"),
    ("lost", "lost"),
]
REAL_COLUMNS = [
    ("tbf_rate_mbps", "tbf Mbit/s"),
    ("codec", "codec"),
    ("throughput_sps", "samples/s"),
    ("vs_baseline", f"x {BASELINE}"),
    ("latency_p99_ms", "p99 ms"),
    ("tc_wire_mbps", "link Mbit/s (tc)"),
    ("payload_goodput_mbps", "payload Mbit/s (tc)"),
    ("goodput_mbps", "goodput Mbit/s (receiver)"),
    ("lost", "lost"),
]
INPUT_COLUMNS = [
    ("link", "link"),
    ("samples", "photos"),
    ("throughput_sps", "samples/s"),
    ("latency_p99_ms", "p99 ms"),
    ("compression_ratio", "ratio"),
    ("decode_share", "decode share of edge busy"),
    ("source_capacity_sps", "decode samples/s"),
    ("decode_headroom", "decode headroom"),
    ("head_capacity_sps", "head samples/s"),
    ("bound_by", "bound by"),
    ("writer_us_per_row", "writer µs/row"),
    ("writer_share", "writer share of wall"),
    ("agreement", "agreement"),
    ("rows_read_back", "rows written"),
    ("load_1m", "load (1 min)"),
]


def _clean(value: Any) -> Any:
    """NaN -> None recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def vs_baseline(rows: Sequence[dict[str, Any]], link_key: str) -> list[dict[str, Any]]:
    """``rows`` with ``vs_baseline``: samples/s over the :data:`BASELINE` row's on the same link
    (``link_key``); left out where that link has no baseline row (results from before it)."""
    base = {r[link_key]: r["throughput_sps"] for r in rows if r.get("codec") == BASELINE}
    out = []
    for r in rows:
        ref = base.get(r[link_key])
        out.append({**r, "vs_baseline": r["throughput_sps"] / ref} if ref else dict(r))
    return out


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    """The README's Markdown blocks of a results document."""

    def block(key: str, columns: list[tuple[str, str]], missing: str) -> str:
        return (
            table(payload[key], columns)
            if payload.get(key)
            else f"_Not measured in this run ({missing})._"
        )

    # the machine's 1-minute load average, the higher of before and after the run (2 cores)
    loads = [r.get("load_avg_1m") for r in payload.get("real_input") or []]
    payload = {
        **payload,
        "bandwidth_sweep": vs_baseline(payload.get("bandwidth_sweep") or [], "link"),
        "real_link": vs_baseline(payload.get("real_link") or [], "tbf_rate_mbps"),
        "real_input": [
            {**r, "load_1m": max(v) if v else None}
            for r, v in zip(payload.get("real_input") or [], loads, strict=True)
        ],
    }

    return {
        "speed": block("speed", SPEED_COLUMNS, "`--skip-speed`"),
        "bandwidth": block("bandwidth_sweep", BW_COLUMNS, "no sweep"),
        "fleet": block("fleet", FLEET_COLUMNS, "`--skip-cluster`"),
        "cloud_pool": block("cloud_pool", CLOUD_COLUMNS, "`--skip-cluster`"),
        "cloud_pool_device": block("cloud_pool_device", DEVICE_COLUMNS, "`--skip-cluster`"),
        "real_link": block("real_link", REAL_COLUMNS, "needs `--netns` and root"),
        "real_input": block("real_input", INPUT_COLUMNS, "`--skip-inputs`"),
    }


def render_markdown(payload: dict[str, Any]) -> str:
    """The benchmark's tables as one Markdown document (written next to the JSON)."""
    tables = render_tables(payload)
    parts = [
        "# Pipeline benchmark",
        "",
        stamp(payload.get("provenance"), "python -m benchmarks.pipeline"),
        "",
        f"Machine: {payload['machine']['cpu']} ({payload['machine']['cores']} cores); "
        f"base config `{payload['base_config']}`.",
    ]
    for key, title in (
        ("speed", "Speed against one core (unconstrained link)"),
        ("bandwidth", "Throughput and latency vs link bandwidth and codec"),
        ("fleet", f"Fleet scale-out ({FLEET_MBPS:g} Mbit/s per edge, one node per edge)"),
        ("cloud_pool", "Cloud pool scale-out (one node per replica)"),
        (
            "cloud_pool_device",
            f"Cloud pool scale-out, tail on a SIMULATED accelerator ({DEVICE_TAIL_MS:g} ms/sample)",
        ),
        ("real_link", "Real link (network namespaces, veth shaped with tc tbf)"),
    ):
        parts += ["", f"## {title}", "", tables[key]]
    return "\n".join(parts) + "\n"


def render_inputs_markdown(payload: dict[str, Any]) -> str:
    """The real-input section's document (written next to its JSON)."""
    photos = payload["photos"]
    return "\n".join(
        [
            "# Pipeline benchmark: real input",
            "",
            stamp(payload.get("provenance"), "python -m benchmarks.pipeline --only real-input"),
            "",
            f"Machine: {payload['machine']['cpu']} ({payload['machine']['cores']} cores); "
            f"{photos['files']:,} JPEG photographs (quality {photos['quality']}, seed "
            f"{photos['seed']}, {photos['bytes_mean'] / 1e3:.0f} kB and "
            f"{photos['megapixels_mean']:.2f} Mpx on average); overrides "
            f"`{' '.join(payload['overrides'])}` on `{payload['base_config']}`.",
            "",
            render_tables(payload)["real_input"],
            "",
        ]
    )


def _inputs_payload(
    rows: list[dict[str, Any]], stats: dict[str, Any], prov: dict[str, Any], wall: float
) -> dict[str, Any]:
    return {
        "benchmark": "pipeline_inputs",
        "machine": machine(),
        "provenance": prov,
        "base_config": str(BASE_CONFIG.relative_to(REPO)),
        "overrides": [*INPUT_MODEL, "data.source=images", "output.path=<tmp>/out.parquet"],
        "photos": stats,
        "real_input": rows,
        "wall_s": wall,
    }


def _write_inputs(payload: dict[str, Any], out: Path, stem: str, json_path: str | None) -> None:
    """``<stem>.json`` (or ``json_path``), ``<stem>.md`` and ``<stem>.png`` in ``out``."""
    png = out / f"{stem}.png"
    if payload["real_input"]:
        plot_inputs(payload["real_input"], png)
        payload["plots"] = [str(png)]
    write_json(json_path or out / f"{stem}.json", _clean(payload))
    md = out / f"{stem}.md"
    md.write_text(render_inputs_markdown(payload))
    print(f"wrote {md}")


def _inputs_config(quick: bool) -> dict[str, Any]:
    return {
        "quick": quick,
        "base_config": str(BASE_CONFIG.relative_to(REPO)),
        "photos": 120 if quick else INPUT_PHOTOS,
        "seed": INPUT_SEED,
        "quality": INPUT_QUALITY,
        "links": list(INPUT_LINKS),
        "overrides": list(INPUT_MODEL),
    }


def main_inputs(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``--only real-input``: the real-input section alone, on its own local Ray instance."""
    import ray

    from splitstream.runner import start_local_ray

    config = _inputs_config(args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prov = provenance(["python", "-m", "benchmarks.pipeline", *argv], config)
    t0 = time.time()
    start_local_ray(num_cpus=2, object_store_mb=256)
    try:
        rows, stats = real_input(config["photos"], INPUT_LINKS, warm=16 if args.quick else 64)
    finally:
        ray.shutdown()
    print("\n## Real input: JPEG photographs through MobileNetV2 to Parquet\n")
    print(table(rows, INPUT_COLUMNS))
    stem = "pipeline_quick_inputs" if args.quick else "pipeline_inputs"
    _write_inputs(_inputs_payload(rows, stats, prov, time.time() - t0), out, stem, args.json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="a smaller run (smoke test)")
    ap.add_argument("--json", default=None, help="output JSON path (default: in --out)")
    ap.add_argument("--out", default=str(RESULTS), help="directory for the PNG plots")
    ap.add_argument("--skip-speed", action="store_true", help="skip the one-core comparison")
    ap.add_argument("--skip-cluster", action="store_true", help="skip the fleet and cloud pool")
    ap.add_argument(
        "--netns", action="store_true", help="also run across a real tc-shaped veth (root only)"
    )
    ap.add_argument(
        "--only",
        choices=("real-input",),
        default=None,
        help="run one section alone (real-input: writes pipeline_inputs.json/.md/.png)",
    )
    ap.add_argument(
        "--skip-inputs", action="store_true", help="skip the real-input section (JPEG photographs)"
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.only == "real-input":
        return main_inputs(args, argv)
    import ray

    quick = args.quick
    speed_samples, rounds = (600, 1) if quick else (SPEED_SAMPLES, 3)
    fleet_edges = (1, 2) if quick else FLEET_EDGES
    cloud_replicas = (1, 2) if quick else CLOUD_REPLICAS
    device_replicas = (1, 2) if quick else DEVICE_REPLICAS
    device_per_replica = 300 if quick else DEVICE_SAMPLES_PER_REPLICA
    fleet_samples = 40 if quick else FLEET_SAMPLES
    reference = 16 if quick else 32
    config = {
        "quick": quick,
        "base_config": str(BASE_CONFIG.relative_to(REPO)),
        "speed": {"samples": speed_samples, "rounds": rounds, "reference_batch": REFERENCE_BATCH},
        "bandwidths": list(BANDWIDTHS),
        "codecs": list(CODECS),
        "link_seconds": LINK_SECONDS,
        "sweep_samples": list(SWEEP_SAMPLES),
        "fleet": {"edges": list(fleet_edges), "mbps": FLEET_MBPS, "samples": fleet_samples},
        "cloud_pool": {"replicas": list(cloud_replicas), "nodes": CLOUD_NODES},
        "cloud_pool_device": {
            "replicas": list(device_replicas), "tail_device_ms": DEVICE_TAIL_MS,
            "edges": DEVICE_EDGES, "samples_per_replica": device_per_replica,
        },
        "real_link": {"rates": list(REAL_RATES), "codecs": list(REAL_CODECS)}
        if args.netns
        else None,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "pipeline_quick" if quick else "pipeline"
    json_path = args.json or str(out / f"{stem}.json")
    prov = provenance(["python", "-m", "benchmarks.pipeline", *argv], config)
    t0 = time.time()

    from splitstream.runner import start_local_ray

    speed_rows: list[dict[str, Any]] = []
    start_local_ray(num_cpus=2, object_store_mb=256)
    try:
        if not args.skip_speed:
            speed_rows = speed_vs_one_core(speed_samples, rounds)
            print("\n## Speed against one core\n")
            print(table(speed_rows, SPEED_COLUMNS))
        bw_rows = bandwidth_sweep(reference, cap=200 if quick else None)
        if not args.skip_inputs:
            t_in = time.time()
            in_config = _inputs_config(quick)
            in_prov = provenance(["python", "-m", "benchmarks.pipeline", *argv], in_config)
            in_rows, in_stats = real_input(in_config["photos"], INPUT_LINKS, 16 if quick else 64)
            print("\n## Real input: JPEG photographs through MobileNetV2 to Parquet\n")
            print(table(in_rows, INPUT_COLUMNS))
            _write_inputs(
                _inputs_payload(in_rows, in_stats, in_prov, time.time() - t_in),
                out,
                f"{stem}_inputs",
                None,
            )
    finally:
        ray.shutdown()
    print("\n## Throughput and latency vs link bandwidth and codec\n")
    print(table(vs_baseline(bw_rows, "link"), BW_COLUMNS))
    plot_bandwidth(bw_rows, out / f"{stem}_bandwidth.png")

    fleet_rows: list[dict[str, Any]] = []
    cloud_rows: list[dict[str, Any]] = []
    device_rows: list[dict[str, Any]] = []
    if not args.skip_cluster:
        cluster = start_cluster(max(fleet_edges), CLOUD_NODES)
        try:
            ray.init(address=cluster.address, log_to_driver=False)
            fleet_rows = fleet_scaleout(fleet_edges, fleet_samples, FLEET_MBPS)
            cloud_rows = cloud_scaleout(cloud_replicas, speed_samples // 2)
        finally:
            ray.shutdown()
            cluster.shutdown()
        # a cluster of its own, with only the nodes it needs: every idle raylet on this machine
        # takes CPU from the runs
        cluster = start_cluster(DEVICE_EDGES, max(device_replicas))
        try:
            ray.init(address=cluster.address, log_to_driver=False)
            device_rows = device_pool_scaleout(device_replicas, device_per_replica)
        finally:
            ray.shutdown()
            cluster.shutdown()
        print("\n## Fleet scale-out\n")
        print(table(fleet_rows, FLEET_COLUMNS))
        print("\n## Cloud pool scale-out\n")
        print(table(cloud_rows, CLOUD_COLUMNS))
        print("\n## Cloud pool scale-out, tail on a simulated accelerator\n")
        print(table(device_rows, DEVICE_COLUMNS))
        plot_scaleout(fleet_rows, cloud_rows, out / f"{stem}_scaleout.png", device_rows)

    real_rows: list[dict[str, Any]] = []
    if args.netns:
        real_rows = real_link(64, 8, rates=REAL_RATES, codecs=REAL_CODECS)
        if real_rows:
            print("\n## Real link: two network namespaces, veth shaped with tc tbf\n")
            print(table(vs_baseline(real_rows, "tbf_rate_mbps"), REAL_COLUMNS))

    payload = {
        "benchmark": "pipeline",
        "quick": quick,
        "machine": machine(),
        "provenance": prov,
        "base_config": str(BASE_CONFIG.relative_to(REPO)),
        "speed": speed_rows,
        "bandwidth_sweep": bw_rows,
        "fleet": fleet_rows,
        "cloud_pool": cloud_rows,
        "cloud_pool_device": device_rows,
        "real_link": real_rows,
        "plots": [str(out / f"{stem}_bandwidth.png")]
        + ([str(out / f"{stem}_scaleout.png")] if fleet_rows else []),
        "wall_s": time.time() - t0,
    }
    write_json(json_path, _clean(payload))
    md = out / f"{stem}.md"
    md.write_text(render_markdown(payload))
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
