"""Large fleets benchmark: 8, 16 and 32 edges sharing a 16 Mbit/s aggregate, and what one driver costs.

    python -m benchmarks.fleet [--quick] [--out DIR] [--json PATH]

The demo job (``configs/demo.yaml``: the digits ResNet split after ``layer1``, 8 bits) on a local
Ray instance of this machine's two cores, ``fleet.edges`` = 8, 16 and 32, each edge over its own
emulated link of 16 / edges Mbit/s (so every run carries the same 16 Mbit/s in all), with
``fleet.edges_per_process`` = edges / 4: four processes host the simulated edges, so the fleet
loads torch four times rather than once per edge (a real edge device keeps its own process). Every
edge streams ``SECONDS`` seconds' worth of its link.

Per run: samples delivered, lost and duplicated; the aggregate goodput against the 16 Mbit/s, and
the lowest edge's utilization of its own link (both measured at the receiver); and the driver's
cost from the report's ``driver`` section: CPU seconds over wall seconds (a share of one core, all
the driver's threads, also per edge), remote calls handled per second, and peak RSS with what each
edge beyond the smallest fleet added to it. The edges' RSS (their processes summed) is beside them. Writes ``fleet.json`` (stamped with the commit and
settings), ``fleet.md`` and ``fleet.png`` into ``--out`` (``fleet_quick*`` with ``--quick``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.common import (
    machine,
    provenance,
    results_markdown,
    results_parser,
    save_figure,
    table,
    write_results,
)

REPO = Path(__file__).resolve().parent.parent
BASE_CONFIG = REPO / "configs" / "demo.yaml"
FLEETS = (8, 16, 32)
AGGREGATE_MBPS = 16.0
PROCESSES = 4  # edge host processes
SECONDS = 25.0  # each edge streams about this long's worth of its link

COLUMNS = [
    ("edges", "edges"),
    ("edge_mbps", "Mbit/s per edge"),
    ("delivered", "delivered"),
    ("lost", "lost"),
    ("duplicated", "dup."),
    ("of_aggregate", "of 16 Mbit/s"),
    ("edge_util_min", "lowest edge utilization"),
    ("driver_core", "driver CPU (cores)"),
    ("driver_core_per_edge", "per edge"),
    ("calls_per_s", "driver calls/s"),
    ("driver_rss_mb", "driver RSS MiB"),
    ("driver_rss_per_added_edge_mb", "per edge added"),
    ("edge_rss_mb", "edge processes RSS MiB"),    ("load_1m", "machine load (1 min, before / after)"),
]


def _run(edges: int, samples: int, mbps: float) -> dict[str, Any]:
    from pipeline.stream.config import load_config
    from splitstream.runner import run_pipeline

    cfg = load_config(str(BASE_CONFIG), [
        f"samples={samples}", f"fleet.edges={edges}",
        f"fleet.edges_per_process={max(1, edges // PROCESSES)}",
        f"link.bandwidth_mbps={mbps:g}", "fidelity.reference_samples=0",
    ])  # fmt: skip
    return run_pipeline(cfg, progress=False)


def wire_bytes_per_sample() -> float:
    """The demo's wire bytes per sample, from a short one-edge run."""
    return float(_run(1, 200, 100.0)["wire_bytes_per_sample"])


def measure(edges: int, seconds: float, per_sample: float) -> dict[str, Any]:
    mbps = AGGREGATE_MBPS / edges
    samples = max(20, round(seconds * mbps * 1e6 / 8 / per_sample))
    load = os.getloadavg()[0]
    rep = _run(edges, samples, mbps)
    d = rep["driver"]
    aggregate = sum(e["goodput_mbps"] for e in rep["edges"])
    return {
        "load_1m": f"{load:.1f} / {os.getloadavg()[0]:.1f}",  # others' CPU use beside the run
        "edges": edges,
        "edge_mbps": mbps,
        "samples_per_edge": samples,
        "delivered": rep["delivered"],
        "lost": rep["lost"],
        "duplicated": rep["duplicated"],
        "aggregate_mbps": aggregate,
        "of_aggregate": aggregate / AGGREGATE_MBPS,
        "edge_util_min": min(e["link_utilization"] or 0.0 for e in rep["edges"]),
        "driver_core": d["cpu_share"],
        "driver_core_per_edge": d["cpu_share_per_edge"],
        "calls_per_s": d["calls_per_s"],
        "driver_rss_mb": d["rss_mb"],
        "edge_rss_mb": rep["memory"].get("edge_rss_mb"),
        "edge_processes": len({e["node"]["pid"] for e in rep["edges"]}),
        "elapsed_s": rep["elapsed_s"],
    }


def plot(payload: dict[str, Any], path: Path) -> None:
    """Left: aggregate and lowest-edge utilization. Right: the driver's CPU and calls per edge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["rows"]
    x = [r["edges"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.4))
    ax[0].plot(x, [r["of_aggregate"] for r in rows], "o-", label="aggregate / 16 Mbit/s")
    ax[0].plot(x, [r["edge_util_min"] for r in rows], "s--", label="lowest edge / its link")
    ax[0].axhline(0.9, color="grey", ls=":", lw=1, label="0.90")
    ax[0].set_ylim(0, 1.1)
    ax[0].set_xticks(x)
    ax[0].set_xlabel("edges (16 Mbit/s shared evenly)")
    ax[0].set_ylabel("goodput at the receiver / configured")
    ax[0].set_title("Fleet goodput (measured at the receiver)")
    ax[0].legend(fontsize=8)
    ax[1].plot(
        x, [r["driver_core"] for r in rows], "o-", color="tab:red", label="driver CPU, cores"
    )
    ax[1].set_xticks(x)
    ax[1].set_xlabel("edges")
    ax[1].set_ylabel("cores (all the driver's threads)")
    ax[1].set_ylim(bottom=0)
    right = ax[1].twinx()
    right.plot(x, [r["calls_per_s"] for r in rows], "s--", color="tab:blue", label="calls/s")
    right.set_ylabel("remote calls handled per second")
    right.set_ylim(bottom=0)
    ax[1].set_title("The driver's cost (measured)")
    lines = ax[1].get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax[1].legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    save_figure(fig, path)


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    return {"fleet": table(payload["rows"], COLUMNS)}


def render_markdown(payload: dict[str, Any]) -> str:
    body = "\n".join(["## 16 Mbit/s over 8, 16 and 32 edges", "", render_tables(payload)["fleet"]])
    return results_markdown(
        "Large fleets benchmark", payload, "python -m benchmarks.fleet",
        f"; base config `{payload['config']['base_config']}`.", body,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    ap = results_parser("python -m benchmarks.fleet", __doc__, "8 and 16 edges, 8 s each (smoke)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from splitstream.runner import start_local_ray

    fleets, seconds = ((8, 16), 8.0) if args.quick else (FLEETS, SECONDS)
    config = {
        "quick": args.quick,
        "base_config": str(BASE_CONFIG.relative_to(REPO)),
        "fleets": list(fleets),
        "aggregate_mbps": AGGREGATE_MBPS,
        "edge_processes": PROCESSES,
        "seconds": seconds,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "fleet_quick" if args.quick else "fleet"
    prov = provenance(["python", "-m", "benchmarks.fleet", *argv], config)
    t0 = time.time()
    start_local_ray(num_cpus=2)
    try:
        per_sample = wire_bytes_per_sample()
        rows = [measure(n, seconds, per_sample) for n in tqdm(fleets, desc="fleets", unit="run")]
        for r in rows[1:]:  # the driver's RSS is mostly fixed: what each edge beyond the first adds
            grew = (r["driver_rss_mb"] or 0.0) - (rows[0]["driver_rss_mb"] or 0.0)
            r["driver_rss_per_added_edge_mb"] = grew / (r["edges"] - rows[0]["edges"])
    finally:
        ray.shutdown()
    config["wire_bytes_per_sample"] = per_sample
    payload = {
        "machine": machine(),
        "provenance": prov,
        "config": config,
        "rows": rows,
        "seconds": round(time.time() - t0, 1),
    }
    write_results(out, stem, payload, render_markdown(payload), args.json)
    plot(payload, out / f"{stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
