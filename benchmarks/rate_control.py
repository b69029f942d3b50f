"""Rate control benchmark: fixed bit widths against the adaptive controller on changing links.

    python -m benchmarks.rate_control [--quick] [--out DIR] [--json PATH]

The demo stream (digits ResNet split after ``layer1``) carries a camera's samples at
``RATE_SPS`` samples/s with a ``SLO_MS`` end-to-end latency target over two emulated uplinks: the
bundled LTE trace (1.5-16 Mbit/s) and a trace of step changes (10, 3, 6, 1.5, 12 Mbit/s, 3 s
each). On each, it runs ``codec.bits`` fixed at 8, 4 and 2 (per tensor, as the stream codes
without rate control) and ``rate.mode=adaptive`` (its profile measured at start-up on the stream's
first 64 samples). Every figure comes from the stream's own report: the share of delivered samples
within the SLO (``slo_met_ratio``), latency percentiles measured at the sink, top-1 agreement with
the uncompressed model over every sample of the run, accuracy against the digits' labels, and the
goodput measured at the receiver. The links' rates in the plot are the emulator's configured
schedules, labelled as such.

Prints Markdown tables and writes ``rate_control.json`` (stamped with the commit and settings),
``rate_control.md`` and ``rate_control.png`` into ``--out`` (``rate_control_quick*`` with
``--quick``, a shorter run).
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
TRACES = ("lte-trace", "steps-trace")
RATE_SPS = 100.0
SLO_MS = 1000.0
SAMPLES = 1500
MODES: dict[str, list[str]] = {
    "fixed 8": ["codec.bits=8"],
    "fixed 4": ["codec.bits=4"],
    "fixed 2": ["codec.bits=2"],
    "adaptive": ["rate.mode=adaptive"],
}
COLUMNS = [
    ("link", "link"),
    ("mode", "mode"),
    ("slo_met_pct", "within SLO %"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("agreement", "agreement"),
    ("accuracy", "accuracy"),
    ("kb_per_sample", "wire kB/sample"),
    ("goodput_mbps", "goodput Mbit/s"),
    ("settings", "settings (samples)"),
]


def run_one(link: str, mode: str, samples: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One stream run; the row for the table and the full report."""
    from pipeline.stream.config import load_config
    from splitstream.runner import run_pipeline

    overrides = [
        f"samples={samples}",
        f"data.rate_sps={RATE_SPS:g}",
        f"link.profile={link}",
        f"rate.latency_slo_ms={SLO_MS:g}",
        f"fidelity.reference_samples={samples}",
        *MODES[mode],
    ]
    rep = run_pipeline(load_config(str(BASE_CONFIG), overrides), progress=False)
    fid = rep.get("fidelity") or {}
    row = {
        "link": link,
        "mode": mode,
        "delivered": rep["delivered"],
        "lost": rep["lost"],
        "slo_met_pct": 100.0 * rep["slo_met_ratio"],
        "p50_ms": rep["latency_p50_ms"],
        "p99_ms": rep["latency_p99_ms"],
        "max_ms": rep["latency_max_ms"],
        "agreement": fid.get("agreement"),
        "accuracy": fid.get("accuracy"),
        "kb_per_sample": rep["wire_bytes"] / max(1, rep["delivered"]) / 1e3,
        "goodput_mbps": rep["goodput_mbps"],
        "settings": ", ".join(f"{k}: {v}" for k, v in rep["settings_histogram"].items()),
        "elapsed_s": rep["elapsed_s"],
    }
    return row, rep


def link_schedule(link: str, horizon_s: float, step_s: float = 0.25) -> tuple[list, list]:
    """The emulator's configured rate of ``link`` (Mbit/s per ``step_s``) over ``horizon_s``."""
    import numpy as np

    from pipeline.stream.link import load_trace, resolve_link, trace_path

    times = load_trace(trace_path(resolve_link(link).trace))  # ms of each 1500-byte opportunity
    period = float(times[-1])
    edges = np.arange(0.0, horizon_s * 1e3 + step_s * 1e3, step_s * 1e3)
    looped = np.concatenate([times + k * period for k in range(int(horizon_s * 1e3 // period) + 2)])
    counts = np.histogram(looped, bins=edges)[0]
    mbps = counts * 1500 * 8 / (step_s * 1e6)
    return (edges[:-1] / 1e3).tolist(), mbps.tolist()


def plot(reports: dict[str, dict[str, Any]], path: Path) -> None:
    """One column per link: rate (schedule and goodput), bits chosen, latency against the SLO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    links = sorted({k.split("|")[0] for k in reports}, key=TRACES.index)
    fig, ax = plt.subplots(
        3, len(links), figsize=(6 * len(links), 8.5), sharex="col", squeeze=False
    )
    colors = {"fixed 8": "tab:blue", "fixed 4": "tab:green", "fixed 2": "tab:grey"}
    for j, link in enumerate(links):
        adaptive = reports[f"{link}|adaptive"]
        tl = adaptive["timeline"]
        t = [v or 0.0 for v in tl["t"]]
        st, sm = link_schedule(link, max(t) if t else 1.0)
        ax[0][j].step(
            st, sm, where="post", color="grey", alpha=0.6, label="link (emulator schedule)"
        )
        arrived = tl.get("arrived_mb", [])
        good = [
            (arrived[i + 1] - arrived[i]) * 8 * 2**20 / 1e6 / (t[i + 1] - t[i])
            if t[i + 1] > t[i] and None not in (arrived[i], arrived[i + 1])
            else 0.0
            for i in range(len(arrived) - 1)
        ]
        ax[0][j].step(
            t[1:], good, where="post", color="tab:red", label="adaptive: goodput at receiver"
        )
        ax[0][j].set_ylabel("Mbit/s")
        ax[0][j].set_title(f"{link}, {RATE_SPS:g} samples/s, SLO {SLO_MS:g} ms")
        ax[0][j].legend(fontsize=7, loc="upper right")
        ax[1][j].step(t, [v or 0 for v in tl["bits"]], where="post", color="tab:red")
        ax[1][j].set_ylabel("adaptive: bits chosen")
        ax[1][j].set_ylim(0, 9)
        for mode in MODES:
            rep = reports.get(f"{link}|{mode}")
            if rep is None:
                continue
            mt = rep["timeline"]
            ax[2][j].plot(
                [v or 0.0 for v in mt["t"]],
                [v if v else float("nan") for v in mt["latency_ms"]],  # gap: nothing arrived
                color=colors.get(mode, "tab:red"),
                lw=2 if mode == "adaptive" else 1,
                label=f"{mode}: {100 * rep['slo_met_ratio']:.1f} % within SLO",
            )
        ax[2][j].axhline(SLO_MS, color="black", ls="--", lw=1, label="SLO")
        ax[2][j].set_yscale("log")
        ax[2][j].set_ylabel("worst latency (ms)")
        ax[2][j].set_xlabel("time (s)")
        ax[2][j].legend(fontsize=7, loc="upper left")
    for a in ax.flat:
        a.grid(alpha=0.3)
    save_figure(fig, path)


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    """The README's Markdown block of a results document."""
    return {"rate_control": table(payload["rows"], COLUMNS)}


def render_markdown(payload: dict[str, Any]) -> str:
    return results_markdown(
        "Rate control benchmark",
        payload,
        "python -m benchmarks.rate_control",
        ".",
        render_tables(payload)["rate_control"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = results_parser(
        "python -m benchmarks.rate_control", __doc__, "300 samples per run (smoke test)"
    )
    ap.add_argument("--links", default=",".join(TRACES), help="comma-separated link profiles")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from splitstream.runner import start_local_ray

    samples = 300 if args.quick else SAMPLES
    links = [s.strip() for s in args.links.split(",") if s.strip()]
    config = {
        "quick": args.quick,
        "base_config": str(BASE_CONFIG.relative_to(REPO)),
        "links": links,
        "rate_sps": RATE_SPS,
        "slo_ms": SLO_MS,
        "samples": samples,
        "modes": MODES,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "rate_control_quick" if args.quick else "rate_control"
    prov = provenance(["python", "-m", "benchmarks.rate_control", *argv], config)
    rows: list[dict[str, Any]] = []
    reports: dict[str, dict[str, Any]] = {}
    t0 = time.time()
    start_local_ray(num_cpus=2, object_store_mb=256)
    try:
        runs = [(link, mode) for link in links for mode in MODES]
        for link, mode in tqdm(runs, desc="rate control runs"):
            row, rep = run_one(link, mode, samples)
            rows.append(row)
            reports[f"{link}|{mode}"] = rep
    finally:
        ray.shutdown()
    payload = {
        "machine": machine(),
        "provenance": prov,
        "rows": rows,
        "adaptive": {
            link: {
                "rate": reports[f"{link}|adaptive"]["rate"],
                "timeline": reports[f"{link}|adaptive"]["timeline"],
            }
            for link in links
        },
        "seconds": round(time.time() - t0, 1),
    }
    write_results(out, stem, payload, render_markdown(payload), args.json)
    plot(reports, out / f"{stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
