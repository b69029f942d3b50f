"""Autoscaling cloud pool benchmark: a fleet whose load steps up fourfold and back.

    python -m benchmarks.autoscale [--quick] [--out DIR] [--json PATH]

A simulated cluster on this machine (``ray.cluster_utils.Cluster``): one node per edge and
``CLOUD_NODES`` cloud nodes. ``EDGES`` edges run the demo job (``configs/demo.yaml``: the digits ResNet
split after ``layer1``, 8 bits, each edge over its own emulated 10 Mbit/s link) from paced sources
whose rate steps from ``RATE_SPS`` to four times that and back (``data.arrival=steps``). The tail
runs on a SIMULATED accelerator (``model.tail_device_ms``): ``TAIL_MS`` ms a sample, about
``1000 / TAIL_MS`` samples/s a replica, so the fourfold load needs several replicas and this
machine's two cores are not what bounds them.

The same stream runs with ``replicas.tail: {min: 1, max: 4}`` (autoscaling, the default
``replicas.autoscale`` settings) and with a fixed pool of 4. Per run: every sample exactly once,
when the pool had 3 replicas serving after the step up and 1 after the step down (the report's
timeline, seconds since the stream started), the median time a new replica took from its start
to its first readiness answer (the pool's ``ready`` events), replica-seconds (the pool's cost), and the p99
latency of the samples that arrived in the high-load phase from ``SETTLE_S`` after the step up
(measured at the sink; each sample's arrival time from the source's schedule). Writes
``autoscale.json`` (stamped with the commit and settings), ``autoscale.md`` and ``autoscale.png``
into ``--out`` (``autoscale_quick*`` with ``--quick``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
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
EDGES = 4
CLOUD_NODES = 4
RATE_SPS = 15.0  # per edge at 1x
TAIL_MS = 10.0
# (start s, load factor): 30 s at 1x first, so that the step up meets a pool that has settled
# after the stream's start (the first calls' warm-up can grow it for a while)
STEPS = [(0.0, 1.0), (30.0, 4.0), (60.0, 1.0)]
END_S = 100.0  # the run's end (the last step runs to it)
SETTLE_S = 10.0  # the high-load p99 counts arrivals from this long after the step up
POOLS = {"autoscale 1-4": "{min: 1, max: 4}", "fixed 4": "4"}

COLUMNS = [
    ("pool", "replicas.tail"),
    ("delivered", "delivered"),
    ("lost", "lost"),
    ("duplicated", "dup."),
    ("peak", "peak replicas"),
    ("up3_s", "3 serving, s after step up"),
    ("down1_s", "1 serving, s after step down"),
    ("start_s", "replica start s (median)"),
    ("replica_s", "replica-seconds"),
    ("p99_high_ms", f"p99 ms, high load from +{SETTLE_S:g} s"),
    ("p99_step_ms", "p99 ms, whole high-load phase"),
    ("p99_ms", "p99 ms, run"),
    ("cloud_nodes", "cloud nodes used"),    ("load_1m", "machine load (1 min, before / after)"),
]


def samples_per_edge(steps: Sequence[tuple[float, float]], end_s: float, rate: float) -> int:
    """Samples one edge makes over the schedule, until ``end_s``."""
    starts = [t for t, _ in steps] + [end_s]
    return round(sum((b - a) * f * rate for (a, f), b in zip(steps, starts[1:], strict=False)))


def _run(pool: str, samples: int, out: Path, steps: list[tuple[float, float]]) -> dict[str, Any]:
    from pipeline.stream.config import load_config
    from splitstream.runner import run_pipeline

    cfg = load_config(str(BASE_CONFIG), [
        f"samples={samples}", f"fleet.edges={EDGES}", f"replicas.tail={pool}",
        f"model.tail_device_ms={TAIL_MS:g}", f"data.rate_sps={RATE_SPS:g}", "data.arrival=steps",
        f"data.load_steps={[list(s) for s in steps]}", "fidelity.reference_samples=0",
        f"output.path={out}",
    ])  # fmt: skip
    return run_pipeline(cfg, progress=False)


def _first(tl: dict[str, Any], key: str, pred: Any, after: float) -> float | None:
    """The first timeline time at or after ``after`` where ``pred(value)`` holds."""
    for t, v in zip(tl["t"], tl.get(key) or [], strict=False):
        if t >= after and v is not None and pred(v):
            return t
    return None


def _arrival_latencies(
    out: Path, samples: int, steps: list[tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Each delivered sample's arrival (s after its edge started, from the source's schedule) and
    latency (ms, measured at the sink), from the run's output rows."""
    import pyarrow.parquet as pq

    from pipeline.stream.data import arrival_offsets

    rows = pq.read_table(out, columns=["id", "latency_ms"]).to_pydict()
    offsets = arrival_offsets(samples, RATE_SPS, "steps", steps=steps)
    ids = np.asarray(rows["id"], dtype=np.int64)
    lat = np.asarray([np.nan if v is None else v for v in rows["latency_ms"]], np.float64)
    return offsets[ids % samples], lat


def _p99(lat: np.ndarray) -> float | None:
    lat = lat[np.isfinite(lat)]
    return float(np.percentile(lat, 99)) if lat.size else None


def measure(pool: str, samples: int, steps: list[tuple[float, float]], tmp: Path) -> dict[str, Any]:
    """One run: its row and the timeline the plot needs."""
    out = tmp / f"out_{abs(hash(pool))}.parquet"
    load = os.getloadavg()[0]
    rep = _run(pool, samples, out, steps)
    up, down = steps[1][0], steps[2][0]
    tl = rep["timeline"]
    arrival, lat = _arrival_latencies(out, samples, steps)
    high = (arrival >= up) & (arrival < down)
    settled = (arrival >= up + SETTLE_S) & (arrival < down)
    key = "replicas" if "replicas" in tl else None
    t = np.asarray(tl["t"], np.float64)
    serving = np.asarray([v or 0 for v in tl[key]], np.float64) if key else None
    up3 = _first(tl, key, lambda n: n >= 3, up) if key else None
    down1 = _first(tl, key, lambda n: n <= 1, down) if key else None
    nodes = {p.get("node_id") for p in rep["stages"]["tail"]["placement"] if p.get("node_id")}
    fixed = rep["stages"]["tail"]["replicas"]
    events = (rep.get("pools") or {}).get("decoder+tail+sink", {}).get("events", [])
    row = {
        "load_1m": f"{load:.1f} / {os.getloadavg()[0]:.1f}",  # others' CPU use beside the run
        "pool": pool,
        "delivered": rep["delivered"],
        "lost": rep["lost"],
        "duplicated": rep["duplicated"],
        "peak": (rep.get("pools") or {}).get("decoder+tail+sink", {}).get("peak", fixed),
        "up3_s": None if up3 is None else up3 - up,
        "down1_s": None if down1 is None else down1 - down,
        "replica_s": float(np.trapezoid(serving, t))
        if serving is not None
        else fixed * rep["elapsed_s"],
        "p99_high_ms": _p99(lat[settled]),
        "p99_step_ms": _p99(lat[high]),
        "p99_ms": rep["latency_p99_ms"],
        "cloud_nodes": len(nodes),
        "samples": EDGES * samples,
        "events": events,
    }
    starts = [e["after_s"] for e in events if e["event"] == "ready"]
    row["start_s"] = float(np.median(starts)) if starts else None
    trace = {k: tl.get(k) for k in ("t", "replicas", "latency_ms")}
    return {"row": row, "timeline": trace}


def plot(payload: dict[str, Any], path: Path) -> None:
    """Left: serving replicas over time against the load. Right: worst latency per interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(14, 4.6))
    cfg = payload["config"]
    steps, end = cfg["steps"], cfg["end_s"]
    xs = [s[0] for s in steps] + [end]
    load = [EDGES * cfg["rate_sps"] * s[1] for s in steps] + [
        EDGES * cfg["rate_sps"] * steps[-1][1]
    ]
    right = ax[0].twinx()
    right.step(xs, load, where="post", color="lightgrey", lw=6, label="offered load (schedule)")
    right.set_ylabel("offered samples/s (configured schedule)")
    colors = {"autoscale 1-4": "tab:green", "fixed 4": "tab:grey"}
    for name, run in payload["timelines"].items():
        tl = run
        if tl.get("replicas"):
            ax[0].step(tl["t"], tl["replicas"], where="post", color=colors.get(name, "tab:blue"),
                       lw=2, label=f"{name}: replicas serving (measured)")  # fmt: skip
        ax[1].plot(tl["t"], [v if v else np.nan for v in tl["latency_ms"]],
                   color=colors.get(name, "tab:blue"), label=name)  # fmt: skip
    for row in payload["rows"]:
        if row["pool"] == "fixed 4":
            ax[0].axhline(4, color="tab:grey", ls="--", lw=1, label="fixed 4: replicas")
    ax[0].set_zorder(right.get_zorder() + 1)
    ax[0].patch.set_visible(False)
    ax[0].set_ylim(0, 5)
    ax[0].set_xlabel("seconds since the stream started")
    ax[0].set_ylabel("cloud replicas")
    ax[0].set_title(f"Pool size as the load steps x4 and back\n({EDGES} edges, tail on a "
                    f"SIMULATED accelerator, {TAIL_MS:g} ms/sample)")  # fmt: skip
    lines = ax[0].get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax[0].legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper right")
    for a in ax:
        for t, _ in steps[1:]:
            a.axvline(t, color="black", ls=":", lw=1)
    ax[1].set_yscale("log")
    ax[1].set_xlabel("seconds since the stream started")
    ax[1].set_ylabel("ms")
    ax[1].set_title("Worst end-to-end latency delivered per interval (measured at the sink)")
    ax[1].legend(fontsize=8)
    save_figure(fig, path)


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    return {"autoscale": table(payload["rows"], COLUMNS)}


def render_markdown(payload: dict[str, Any]) -> str:
    body = "\n".join(["## Load x4 and back", "", render_tables(payload)["autoscale"]])
    return results_markdown(
        "Autoscaling cloud pool benchmark", payload, "python -m benchmarks.autoscale",
        f"; base config `{payload['config']['base_config']}`.", body,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    ap = results_parser(
        "python -m benchmarks.autoscale", __doc__, "a schedule a third as long (smoke test)"
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from benchmarks.pipeline import start_cluster

    scale = 1 / 3 if args.quick else 1.0
    steps = [(t * scale, f) for t, f in STEPS]
    end = END_S * scale
    samples = samples_per_edge(steps, end, RATE_SPS)
    config = {
        "quick": args.quick,
        "base_config": str(BASE_CONFIG.relative_to(REPO)),
        "edges": EDGES,
        "cloud_nodes": CLOUD_NODES,
        "rate_sps": RATE_SPS,
        "tail_device_ms": TAIL_MS,
        "steps": [list(s) for s in steps],
        "end_s": end,
        "samples_per_edge": samples,
        "settle_s": SETTLE_S,
        "pools": POOLS,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "autoscale_quick" if args.quick else "autoscale"
    prov = provenance(["python", "-m", "benchmarks.autoscale", *argv], config)
    t0 = time.time()
    cluster = start_cluster(EDGES, CLOUD_NODES)
    ray.init(address=cluster.address)
    rows, timelines = [], {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, pool in tqdm(POOLS.items(), desc="autoscaling pool", unit="run"):
                got = measure(pool, samples, steps, Path(tmp))
                got["row"]["pool"] = name
                rows.append(got["row"])
                timelines[name] = got["timeline"]
    finally:
        ray.shutdown()
        cluster.shutdown()
    payload = {
        "machine": machine(),
        "provenance": prov,
        "config": config,
        "rows": rows,
        "timelines": timelines,
        "seconds": round(time.time() - t0, 1),
    }
    write_results(out, stem, payload, render_markdown(payload), args.json)
    plot(payload, out / f"{stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
