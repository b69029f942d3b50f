"""In-flight window benchmark: latency at the same throughput, and a window that follows the link.

    python -m benchmarks.inflight [--quick] [--out DIR] [--json PATH]

1. **The demo job** (``configs/demo.yaml``: the digits ResNet split after ``layer1``, 8 bits,
   1,000 samples from an unpaced source) over the emulated 10 Mbit/s link, with
   ``flow.inflight=auto`` (the window sized from the measured link) and with ``flow.inflight=8``
   (what the two hops in front of the cloud held before the window existed: ``flow.window`` 4
   each). The two alternate, ``REPEATS`` runs each, and the table gives medians with each run's
   values, so a slow spell of the shared machine hits both alike.
2. **A link that steps** from 10 to 2 Mbit/s and back (7 s each, a trace written by
   :func:`pipeline.stream.link.step_trace`, 100 ms delay), batches of at most 8 samples: the
   bandwidth-delay product spans several batches at 10 Mbit/s and about one at 2. The same stream
   runs with ``auto`` and with ``8``; the plot shows the window the driver chose over time, what
   was in flight, and the latency of each.

Every figure is the stream's own report (throughput and latency measured at the sink; the link
rate the window's estimate from deliveries). Writes ``inflight.json`` (stamped with the commit and
settings), ``inflight.md`` and ``inflight.png`` into ``--out`` (``inflight_quick*`` with
``--quick``).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
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
SAMPLES = 1000
REPEATS = 3
SETTINGS = ("auto", "8")
STEPS = [(10.0, 7.0), (2.0, 7.0), (10.0, 7.0)]  # (Mbit/s, seconds)
STEP_DELAY_MS = 100.0
STEP_BATCH = 8
STEP_SAMPLES = 2400

DEMO_COLUMNS = [
    ("inflight", "flow.inflight"),
    ("sps", "samples/s (median)"),
    ("sps_runs", "runs"),
    ("p50_ms", "p50 ms (median)"),
    ("p50_runs", "runs"),
    ("p99_ms", "p99 ms (median)"),
    ("window", "window (batches)"),
    ("rate_mbps", "link estimate Mbit/s"),
    ("fixed_ms", "fixed round ms"),
    ("lost", "lost"),
]
STEP_COLUMNS = [
    ("inflight", "flow.inflight"),
    ("sps", "samples/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("window_range", "window min-max (batches)"),
    ("probes", "round-trip probes"),
    ("lost", "lost"),
]


def _run(overrides: list[str]) -> dict[str, Any]:
    from pipeline.stream.config import load_config
    from splitstream.runner import run_pipeline

    cfg = load_config(str(BASE_CONFIG), ["fidelity.reference_samples=0", *overrides])
    return run_pipeline(cfg, progress=False)


def _window(rep: dict[str, Any]) -> dict[str, Any]:
    return rep["inflight"]["edges"][0]


def demo_rows(samples: int, repeats: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The demo job with each setting, alternating; rows of medians, and the last reports."""
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SETTINGS}
    plan = [s for _ in range(repeats) for s in SETTINGS]
    for setting in tqdm(plan, desc="demo job, 10 Mbit/s"):
        runs[setting].append(_run([f"samples={samples}", f"flow.inflight={setting}"]))
    rows = []
    for setting, reps in runs.items():
        sps = [r["throughput_sps"] for r in reps]
        p50 = [r["latency_p50_ms"] for r in reps]
        win = _window(reps[-1])
        rows.append({
            "inflight": setting,
            "sps": statistics.median(sps),
            "sps_runs": " / ".join(f"{v:.1f}" for v in sps),
            "p50_ms": statistics.median(p50),
            "p50_runs": " / ".join(f"{v:,.0f}" for v in p50),
            "p99_ms": statistics.median(r["latency_p99_ms"] for r in reps),
            "window": win["size"],
            "rate_mbps": win.get("rate_mbps"),
            "fixed_ms": win.get("fixed_ms"),
            "lost": sum(r["lost"] for r in reps),
            "runs": len(reps),
        })  # fmt: skip
    return rows, {s: runs[s][-1] for s in SETTINGS}


def step_rows(trace: str, samples: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The stepping link with each setting; rows and reports."""
    rows, reports = [], {}
    for setting in tqdm(SETTINGS, desc="10 -> 2 -> 10 Mbit/s"):
        rep = _run([
            f"samples={samples}", f"link.trace={trace}", f"link.delay_ms={STEP_DELAY_MS:g}",
            f"batching.max_batch_size={STEP_BATCH}", f"flow.inflight={setting}",
        ])  # fmt: skip
        win = _window(rep)
        rows.append({
            "inflight": setting,
            "sps": rep["throughput_sps"],
            "p50_ms": rep["latency_p50_ms"],
            "p99_ms": rep["latency_p99_ms"],
            "window_range": f"{win.get('min', win['size'])}-{win.get('max', win['size'])}",
            "probes": win.get("probes", 0),
            "lost": rep["lost"],
        })  # fmt: skip
        reports[setting] = rep
    return rows, reports


def plot(demo: dict[str, Any], step: dict[str, Any], payload: dict[str, Any], path: Path) -> None:
    """Left: the window and what was in flight over the stepping link. Right: the demo job's
    latency and throughput with each setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 4.4))
    colors = {"auto": "tab:blue", "8": "tab:grey"}
    for setting, rep in step.items():
        tl = rep["timeline"]
        label = f"flow.inflight={setting}"
        ax[0].step(tl["t"], tl["inflight"], where="post", color=colors[setting],
                   label=f"{label}: window")  # fmt: skip
        ax[0].plot(tl["t"], tl["aloft"], ":", color=colors[setting], label=f"{label}: in flight")
        ax[1].plot(tl["t"], tl["latency_ms"], color=colors[setting], label=label)
    ax[0].set_title(
        "Window over a link stepping 10 -> 2 -> 10 Mbit/s\n(configured schedule; 100 ms delay)"
    )
    ax[0].set_xlabel("seconds since the stream started")
    ax[0].set_ylabel("batches")
    ax[0].legend(fontsize=8)
    ax[1].set_title("Worst latency delivered per interval, same link\n(measured at the sink)")
    ax[1].set_xlabel("seconds since the stream started")
    ax[1].set_ylabel("ms")
    ax[1].set_yscale("log")
    ax[1].legend(fontsize=8)
    rows = payload["demo"]
    x = range(len(rows))
    ax[2].bar(x, [r["p50_ms"] for r in rows], color=[colors[r["inflight"]] for r in rows])
    for i, r in enumerate(rows):
        ax[2].annotate(f"{r['sps']:.1f} samples/s", (i, r["p50_ms"]), ha="center",
                       va="bottom", fontsize=9)  # fmt: skip
    ax[2].set_xticks(list(x), [f"flow.inflight={r['inflight']}" for r in rows])
    ax[2].set_ylabel("p50 latency, ms (median of runs)")
    ax[2].set_title(f"Demo job, 10 Mbit/s, {payload['config']['samples']} samples\n"
                    f"(median of {payload['config']['repeats']} runs each, measured)")  # fmt: skip
    save_figure(fig, path)


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    """The README's blocks: the demo job, and the stepping link."""
    return {
        "inflight_demo": table(payload["demo"], DEMO_COLUMNS),
        "inflight_steps": table(payload["steps"], STEP_COLUMNS),
    }


def render_markdown(payload: dict[str, Any]) -> str:
    t = render_tables(payload)
    body = "\n".join([
        "## Demo job, 10 Mbit/s", "", t["inflight_demo"], "",
        "## A link stepping 10 -> 2 -> 10 Mbit/s", "", t["inflight_steps"],
    ])  # fmt: skip
    return results_markdown(
        "In-flight window benchmark", payload, "python -m benchmarks.inflight",
        f"; base config `{payload['config']['base_config']}`.", body,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    ap = results_parser(
        "python -m benchmarks.inflight", __doc__, "300 samples, one run each (smoke test)"
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from pipeline.stream.link import step_trace
    from splitstream.runner import start_local_ray

    samples, repeats = (300, 1) if args.quick else (SAMPLES, REPEATS)
    step_samples = 600 if args.quick else STEP_SAMPLES
    config = {
        "quick": args.quick,
        "base_config": str(BASE_CONFIG.relative_to(REPO)),
        "samples": samples,
        "repeats": repeats,
        "settings": list(SETTINGS),
        "steps_mbps_s": STEPS,
        "step_delay_ms": STEP_DELAY_MS,
        "step_max_batch_size": STEP_BATCH,
        "step_samples": step_samples,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "inflight_quick" if args.quick else "inflight"
    prov = provenance(["python", "-m", "benchmarks.inflight", *argv], config)
    t0 = time.time()
    start_local_ray(num_cpus=2, object_store_mb=256)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "steps.trace"
            trace.write_text(step_trace(STEPS))
            demo, demo_reports = demo_rows(samples, repeats)
            steps, step_reports = step_rows(str(trace), step_samples)
    finally:
        ray.shutdown()
    payload = {
        "machine": machine(),
        "provenance": prov,
        "config": config,
        "demo": demo,
        "steps": steps,
        "windows": {s: _window(r) for s, r in step_reports.items()},
        "timelines": {
            s: {k: r["timeline"][k] for k in ("t", "inflight", "aloft", "latency_ms")}
            for s, r in step_reports.items()
        },
        "seconds": round(time.time() - t0, 1),
    }
    write_results(out, stem, payload, render_markdown(payload), args.json)
    plot(demo_reports, step_reports, payload, out / f"{stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
