"""Pipeline benchmark: the stream against one core, against the link, and scaled out.

    python -m benchmarks.pipeline [--quick] [--json PATH] [--out DIR] [--skip-cluster] [--netns]

1. **Speed vs one core** -- the in-process rate of the demo model on one core (head ->
   ``codec.encode`` -> ``codec.decode`` -> tail, batches of 32, one torch thread) and the demo stream
   over an unconstrained link (3,000 samples), fused and with one actor per stage, taken in
   alternating pairs on one local Ray instance; the ratios are medians of the per-pair ratios. RSS per
   side comes from the stream's own report.
2. **Bandwidth x codec** -- the demo stream over emulated links of 1, 10, 50 and 100 Mbit/s and
   unconstrained, for ``codec.kind`` fp32, fp16, zstd and ours; each run carries about
   ``LINK_SECONDS`` of link time. ``e2e util`` is delivered samples/s x wire bytes per sample over
   the configured rate.
3. **Fleet scale-out** -- a ``ray.cluster_utils.Cluster`` with one node per edge and four cloud
   nodes; 1, 2, 4 and 8 edges, each over its own 2 Mbit/s emulated link, 200 samples per edge;
   aggregate goodput (measured at the receiver) and end-to-end rate against N x 2 Mbit/s. Every edge
   must run on its own node (checked).
4. **Cloud pool scale-out** -- on the same cluster, two unconstrained edges feeding 1, 2 and 4 cloud
   replicas, each on its own cloud node (checked).
5. **Real link** (``--netns``, root) -- the stream across a tc-shaped veth between two network
   namespaces.

All nodes of the cluster share this machine's cores, which the tables say. Prints Markdown tables,
writes JSON (default ``benchmarks/results/pipeline.json``, stamped with the commit and the settings),
``pipeline.md`` and PNG plots into ``--out``; ``--quick`` runs a smaller version and names its outputs
``pipeline_quick*``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.common import machine, provenance, stamp, table, write_json

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BASE_CONFIG = REPO / "configs" / "demo.yaml"
BANDWIDTHS: tuple[float | None, ...] = (1.0, 10.0, 50.0, 100.0, None)  # None = unconstrained
CODECS = ("fp32", "fp16", "zstd", "ours")
LINK_SECONDS = 6.0  # link time each bandwidth run carries ...
SWEEP_SAMPLES = (64, 3000)  # ... within these bounds on its sample count
SPEED_SAMPLES = 3000
REFERENCE_BATCH = 32
FLEET_EDGES = (1, 2, 4, 8)
FLEET_MBPS = 2.0
FLEET_SAMPLES = 200
CLOUD_REPLICAS = (1, 2, 4)
CLOUD_NODES = 4
REAL_RATES = (4.0,)  # tbf Mbit/s of the real shaped link (--netns)
REAL_CODECS = ("fp32", "ours")


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
    fleet: Sequence[dict[str, Any]], cloud: Sequence[dict[str, Any]], path: Path
) -> None:
    """Fleet: aggregate goodput vs edges (with N x link rate); cloud pool: throughput vs replicas."""
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
        axes[1].plot(xs, [r["throughput_sps"] for r in cloud], marker="o", label="measured")
        axes[1].set_xticks(xs)
        axes[1].set_xlabel("cloud replicas (decoder + tail), one per cloud node")
        axes[1].set_ylabel("samples/s")
        axes[1].set_title("cloud pool scale-out (all nodes share 2 cores)")
        axes[1].grid(True, alpha=0.3)
        axes[1].set_ylim(bottom=0)
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
REAL_COLUMNS = [
    ("tbf_rate_mbps", "tbf Mbit/s"),
    ("codec", "codec"),
    ("throughput_sps", "samples/s"),
    ("latency_p99_ms", "p99 ms"),
    ("tc_wire_mbps", "link Mbit/s (tc)"),
    ("payload_goodput_mbps", "payload Mbit/s (tc)"),
    ("goodput_mbps", "goodput Mbit/s (receiver)"),
    ("lost", "lost"),
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


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    """The README's Markdown blocks of a results document."""

    def block(key: str, columns: list[tuple[str, str]], missing: str) -> str:
        return (
            table(payload[key], columns)
            if payload.get(key)
            else f"_Not measured in this run ({missing})._"
        )

    return {
        "speed": block("speed", SPEED_COLUMNS, "`--skip-speed`"),
        "bandwidth": block("bandwidth_sweep", BW_COLUMNS, "no sweep"),
        "fleet": block("fleet", FLEET_COLUMNS, "`--skip-cluster`"),
        "cloud_pool": block("cloud_pool", CLOUD_COLUMNS, "`--skip-cluster`"),
        "real_link": block("real_link", REAL_COLUMNS, "needs `--netns` and root"),
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
        ("real_link", "Real link (network namespaces, veth shaped with tc tbf)"),
    ):
        parts += ["", f"## {title}", "", tables[key]]
    return "\n".join(parts) + "\n"


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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    quick = args.quick
    speed_samples, rounds = (600, 1) if quick else (SPEED_SAMPLES, 3)
    fleet_edges = (1, 2) if quick else FLEET_EDGES
    cloud_replicas = (1, 2) if quick else CLOUD_REPLICAS
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
    finally:
        ray.shutdown()
    print("\n## Throughput and latency vs link bandwidth and codec\n")
    print(table(bw_rows, BW_COLUMNS))
    plot_bandwidth(bw_rows, out / f"{stem}_bandwidth.png")

    fleet_rows: list[dict[str, Any]] = []
    cloud_rows: list[dict[str, Any]] = []
    if not args.skip_cluster:
        cluster = start_cluster(max(fleet_edges), CLOUD_NODES)
        try:
            ray.init(address=cluster.address, log_to_driver=False)
            fleet_rows = fleet_scaleout(fleet_edges, fleet_samples, FLEET_MBPS)
            cloud_rows = cloud_scaleout(cloud_replicas, speed_samples // 2)
        finally:
            ray.shutdown()
            cluster.shutdown()
        print("\n## Fleet scale-out\n")
        print(table(fleet_rows, FLEET_COLUMNS))
        print("\n## Cloud pool scale-out\n")
        print(table(cloud_rows, CLOUD_COLUMNS))
        plot_scaleout(fleet_rows, cloud_rows, out / f"{stem}_scaleout.png")

    real_rows: list[dict[str, Any]] = []
    if args.netns:
        real_rows = real_link(64, 8, rates=REAL_RATES, codecs=REAL_CODECS)
        if real_rows:
            print("\n## Real link: two network namespaces, veth shaped with tc tbf\n")
            print(table(real_rows, REAL_COLUMNS))

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
