"""Pipeline benchmark: throughput and p99 latency vs link bandwidth and codec, and scale-out.

    python -m benchmarks.pipeline [--quick] [--json PATH] [--out DIR]

1. **Bandwidth sweep** -- one local Ray instance; the stream of ``configs/demo.yaml`` over an
   emulated link of 1, 10, 100 Mbit/s and unconstrained, for each ``codec.kind`` (fp32, fp16,
   zstd, ours).
2. **Scale-out** -- a simulated multi-node cluster (``ray.cluster_utils.Cluster``: two edge and
   two cloud nodes); throughput vs the number of encoder/decoder replicas on an
   unconstrained link, where the codec and models (not the link) bound the rate.

Prints Markdown tables, writes JSON (default ``benchmarks/results/pipeline.json``) and PNG plots
(``pipeline_bandwidth.png``, ``pipeline_scaleout.png``) and ``pipeline.md`` into ``--out``;
``--quick`` names them ``pipeline_quick*`` so the committed full results stay untouched.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.common import machine, provenance, stamp, table, write_json

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BASE_CONFIG = REPO / "configs" / "demo.yaml"
BANDWIDTHS: tuple[float | None, ...] = (1.0, 10.0, 100.0, None)  # None = unconstrained
CODECS = ("fp32", "fp16", "zstd", "ours")
REPLICAS = (1, 2, 4)
REAL_RATES = (4.0,)  # tbf Mbit/s of the real shaped link (--netns)
REAL_CODECS = ("fp32", "ours")


def _bw_label(bw: float | None) -> str:
    return "unconstrained" if bw is None else f"{bw:g} Mbit/s"


def _row(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers one run contributes to the tables."""
    fid = report.get("fidelity") or {}
    return {
        "samples": report["delivered"],
        "throughput_sps": report["throughput_sps"],
        "latency_p50_ms": report["latency_p50_ms"],
        "latency_p99_ms": report["latency_p99_ms"],
        "compression_ratio": report["compression_ratio"],
        "wire_bytes": report["wire_bytes"],
        # the emulated link's own schedule (None on a real link) ...
        "link_mbps": (report.get("link") or {}).get("scheduled_mbps"),
        # ... and what arrived, measured at the receiver
        "goodput_mbps": report["goodput_mbps"],
        "link_utilization": report["link_utilization"],
        "agreement": fid.get("agreement"),
        "accuracy": fid.get("accuracy"),
        "lost": report["lost"],
        "rejected": report["rejected"],
        "restarts": report["restarts"],
        "duplicated": report["duplicated"],
        "elapsed_s": report["elapsed_s"],
    }


def _run(overrides: Sequence[str]) -> dict[str, Any]:
    from pipeline.stream.config import load_config
    from splitstream.runner import run_pipeline

    cfg = load_config(BASE_CONFIG, list(overrides))
    return run_pipeline(cfg, progress=False)


def bandwidth_sweep(
    samples: int,
    batch: int,
    reference: int,
    bandwidths: Sequence[float | None] = BANDWIDTHS,
    codecs: Sequence[str] = CODECS,
    run: Callable[[Sequence[str]], dict[str, Any]] = _run,
) -> list[dict[str, Any]]:
    """Every (bandwidth, codec) pair on the already-initialized Ray instance."""
    rows = []
    pairs = [(bw, kind) for bw in bandwidths for kind in codecs]
    for bw, kind in tqdm(pairs, desc="bandwidth x codec", unit="run"):
        link = ["link.profile=unlimited"] if bw is None else [f"link.bandwidth_mbps={bw}"]
        overrides = [
            f"samples={samples}",
            f"codec.kind={kind}",
            f"batching.max_batch_size={batch}",
            f"fidelity.reference_samples={reference}",
            "link.mode=emulated",
            *link,
        ]
        row = {"bandwidth_mbps": bw, "link": _bw_label(bw), "codec": kind, **_row(run(overrides))}
        rows.append(row)
    return rows


def scaleout(
    samples: int,
    batch: int,
    replicas: Sequence[int] = REPLICAS,
    codec_kind: str = "ours",
    run: Callable[[Sequence[str]], dict[str, Any]] = _run,
) -> list[dict[str, Any]]:
    """Throughput vs encoder/decoder replicas on the connected (multi-node) cluster."""
    rows = []
    for n in tqdm(replicas, desc="scale-out", unit="run"):
        overrides = [
            f"samples={samples}",
            f"codec.kind={codec_kind}",
            f"batching.max_batch_size={batch}",
            "fidelity.reference_samples=0",
            "link.mode=emulated",
            "link.profile=unlimited",
            f"replicas.encoder={n}",
            f"replicas.decoder={n}",
            f"flow.window={max(4, 2 * n)}",
        ]
        report = run(overrides)
        nodes = {
            stage: sorted(
                {p["ip"] + ":" + p["node_id"][:6] for p in report["stages"][stage]["placement"]}
            )
            for stage in ("encoder", "decoder")
        }
        rows.append({"replicas": n, "codec": codec_kind, **_row(report), "nodes": nodes})
    return rows


def real_link(
    samples: int, batch: int, rates: Sequence[float], codecs: Sequence[str]
) -> list[dict[str, Any]]:
    """The same stream across a tc-shaped veth between two network namespaces (root only)."""
    import sys
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


def start_cluster(edge_nodes: int = 2, cloud_nodes: int = 2, cpus: int = 2) -> Any:
    """A simulated multi-node Ray cluster on this machine (edge and cloud nodes)."""
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
    fig.suptitle("splitstream pipeline: digits-resnet split at layer1, emulated link")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scaleout(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Throughput vs encoder/decoder replicas."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    xs = [r["replicas"] for r in rows]
    ax.plot(xs, [r["throughput_sps"] for r in rows], marker="o", label="measured")
    if rows:
        base = rows[0]["throughput_sps"] / rows[0]["replicas"]
        ax.plot(xs, [base * x for x in xs], ls="--", color="grey", label="linear")
    ax.set_xticks(xs)
    ax.set_xlabel("encoder = decoder replicas")
    ax.set_ylabel("throughput (samples/s)")
    ax.set_title("scale-out on a simulated 2 edge + 2 cloud node cluster")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


BW_COLUMNS = [
    ("link", "link"),
    ("codec", "codec"),
    ("throughput_sps", "samples/s"),
    ("latency_p50_ms", "p50 ms"),
    ("latency_p99_ms", "p99 ms"),
    ("compression_ratio", "ratio"),
    ("goodput_mbps", "goodput Mbit/s (receiver)"),
    ("link_utilization", "util (measured)"),
    ("link_mbps", "link schedule Mbit/s"),
    ("agreement", "agreement"),
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
SCALE_COLUMNS = [
    ("replicas", "enc=dec replicas"),
    ("throughput_sps", "samples/s"),
    ("latency_p50_ms", "p50 ms"),
    ("latency_p99_ms", "p99 ms"),
    ("speedup", "speedup"),
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
    """The README's Markdown blocks of a results document: bandwidth, scaleout, real_link."""
    return {
        "bandwidth": table(payload["bandwidth_sweep"], BW_COLUMNS),
        "scaleout": table(payload["scaleout"], SCALE_COLUMNS)
        if payload.get("scaleout")
        else "_Not measured in this run (`--skip-scaleout`)._",
        "real_link": table(payload["real_link"], REAL_COLUMNS)
        if payload.get("real_link")
        else "_Not measured in this run (needs `--netns` and root)._",
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
        f"base config `{payload['base_config']}`, {payload['samples_per_run']} samples per run, "
        f"max batch {payload['max_batch_size']}.",
        "",
        "## Throughput and latency vs link bandwidth and codec",
        "",
        tables["bandwidth"],
    ]
    if payload.get("scaleout"):
        parts += ["", "## Scale-out (2 edge + 2 cloud simulated nodes)", "", tables["scaleout"]]
    if payload.get("real_link"):
        parts += ["", "## Real link (network namespaces, veth shaped with tc tbf)", ""]
        parts.append(tables["real_link"])
    return "\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="fewer samples per run (smoke test)")
    ap.add_argument("--json", default=None, help="output JSON path (default: in --out)")
    ap.add_argument("--out", default=str(RESULTS), help="directory for the PNG plots")
    ap.add_argument("--skip-scaleout", action="store_true", help="only the bandwidth sweep")
    ap.add_argument(
        "--netns", action="store_true", help="also run across a real tc-shaped veth (root only)"
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    samples, batch = (24, 8) if args.quick else (64, 8)
    reference = 16 if args.quick else 32
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "pipeline_quick" if args.quick else "pipeline"
    json_path = args.json or str(out / f"{stem}.json")
    config = {
        "quick": args.quick,
        "base_config": str(BASE_CONFIG.relative_to(REPO)),
        "samples_per_run": samples,
        "max_batch_size": batch,
        "reference_samples": reference,
        "bandwidths_mbps": list(BANDWIDTHS),
        "codecs": list(CODECS),
        "replicas": [] if args.skip_scaleout else list(REPLICAS),
        "netns": args.netns,
        "netns_rates_mbps": list(REAL_RATES) if args.netns else [],
        "netns_codecs": list(REAL_CODECS) if args.netns else [],
    }
    argv = sys.argv[1:] if argv is None else list(argv)
    prov = provenance(["python", "-m", "benchmarks.pipeline", *argv], config)
    t0 = time.time()

    from splitstream.runner import start_local_ray

    start_local_ray(num_cpus=2, object_store_mb=256)
    try:
        bw_rows = bandwidth_sweep(samples, batch, reference)
    finally:
        ray.shutdown()
    print("\n## Throughput and latency vs link bandwidth and codec\n")
    print(table(bw_rows, BW_COLUMNS))
    plot_bandwidth(bw_rows, out / f"{stem}_bandwidth.png")

    scale_rows: list[dict[str, Any]] = []
    if not args.skip_scaleout:
        cluster = start_cluster()
        try:
            ray.init(address=cluster.address, log_to_driver=False)
            scale_rows = scaleout(samples * 2, batch)
        finally:
            ray.shutdown()
            cluster.shutdown()
        for r in scale_rows:
            r["speedup"] = r["throughput_sps"] / scale_rows[0]["throughput_sps"]
        print("\n## Scale-out: encoder/decoder replicas on 2 edge + 2 cloud simulated nodes\n")
        print(table(scale_rows, SCALE_COLUMNS))
        plot_scaleout(scale_rows, out / f"{stem}_scaleout.png")

    real_rows: list[dict[str, Any]] = []
    if args.netns:
        real_rows = real_link(samples, batch, rates=REAL_RATES, codecs=REAL_CODECS)
        if real_rows:
            print("\n## Real link: two network namespaces, veth shaped with tc tbf\n")
            print(table(real_rows, REAL_COLUMNS))

    payload = {
        "benchmark": "pipeline",
        "quick": args.quick,
        "machine": machine(),
        "provenance": prov,
        "base_config": str(BASE_CONFIG.relative_to(REPO)),
        "samples_per_run": samples,
        "max_batch_size": batch,
        "bandwidth_sweep": bw_rows,
        "scaleout": scale_rows,
        "real_link": real_rows,
        "plots": [str(out / f"{stem}_bandwidth.png")]
        + ([str(out / f"{stem}_scaleout.png")] if scale_rows else []),
        "wall_s": time.time() - t0,
    }
    write_json(json_path, _clean(payload))
    md = out / f"{stem}.md"
    md.write_text(render_markdown(payload))
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
