"""Soak benchmark: a live stream for minutes while a random stage actor is SIGKILLed every 30-60 s.

    python -m benchmarks.soak [--quick] [--minutes M] [--out DIR] [--json PATH]

The demo stream (``configs/demo.yaml``: the digits ResNet split after ``layer1``, 8 bits, the
emulated 10 Mbit/s link) reads a camera-like paced source at ``RATE_SPS`` samples/s for
``--minutes`` (default 5) and writes every result to a Parquet output. A
:class:`splitstream.chaos.ChaosMonkey` (seeded) kills the process of a random stage actor of the
stream every 30 to 60 s. The run passes when every sample is in the output exactly once, nothing is
lost or duplicated, and the driver's RSS grows less than 10 % after warm-up; the table says so
with the measured figures, and the plot shows progress, latency and memory over the run with the
kills marked. Writes ``soak.json`` (stamped with the commit and settings), ``soak.md`` and
``soak.png`` into ``--out`` (``soak_quick*`` with ``--quick``: one minute, kills every 15-30 s).
The short version of the same check runs in the test suite (tests/test_soak.py).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
RATE_SPS = 100
SEED = 11

COLUMNS = [
    ("minutes", "minutes"),
    ("samples", "samples read"),
    ("kills", "kills"),
    ("killed", "killed (class x times)"),
    ("restarts", "restarts"),
    ("replayed", "replayed batches"),
    ("delivered", "delivered"),
    ("in_output_once", "in the output exactly once"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("driver_growth_pct", "driver RSS growth after warm-up %"),
    ("passed", "passed"),
]


def soak(minutes: float, every_s: tuple[float, float], out: Path) -> tuple[dict, dict, list]:
    """One soak run; the table's row, the report and the kills."""
    from pipeline.stream.config import load_config
    from pipeline.stream.output import read_results
    from splitstream.chaos import ChaosMonkey
    from splitstream.runner import run_pipeline

    samples = int(RATE_SPS * minutes * 60)
    cfg = load_config(str(BASE_CONFIG), [
        f"samples={samples}", f"data.rate_sps={RATE_SPS}", "flow.max_restarts=100",
        "fidelity.reference_samples=0", f"output.path={out}",
    ])  # fmt: skip
    with ChaosMonkey(every_s=every_s, seed=SEED) as monkey:
        rep = run_pipeline(cfg, progress=True)
    ids = read_results(out).column("id").to_pylist()
    once = sorted(ids) == list(range(samples))
    growth = rep["memory"]["driver_growth_after_warmup"]
    counts: dict[str, int] = {}
    for _, cls, _ in monkey.kills:
        counts[cls] = counts.get(cls, 0) + 1
    passed = (
        once and rep["lost"] == 0 and rep["duplicated"] == 0 and rep["delivered"] == samples
        and growth < 0.10 and rep["error"] is None
    )  # fmt: skip
    row = {
        "minutes": minutes,
        "samples": samples,
        "kills": len(monkey.kills),
        "killed": ", ".join(f"{c} x{n}" for c, n in sorted(counts.items())),
        "restarts": rep["restarts"],
        "replayed": rep["replayed_batches"],
        "delivered": rep["delivered"],
        "in_output_once": "yes" if once else "NO",
        "lost": rep["lost"],
        "duplicated": rep["duplicated"],
        "p50_ms": rep["latency_p50_ms"],
        "p99_ms": rep["latency_p99_ms"],
        "driver_growth_pct": 100.0 * growth,
        "passed": "yes" if passed else "NO",
    }
    t0 = rep["t0_wall"]  # the kills on the timeline's clock
    return row, rep, [(wall - t0, cls, pid) for wall, cls, pid in monkey.kills]


def plot(rep: dict[str, Any], kills: list, path: Path) -> None:
    """Settled samples, worst latency and driver RSS over the run; kills as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = rep["timeline"]
    fig, ax = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    ax[0].plot(tl["t"], tl["settled"], color="tab:blue")
    ax[0].set_ylabel("samples settled")
    ax[1].plot(tl["t"], tl["latency_ms"], color="tab:orange")
    ax[1].set_ylabel("worst latency per interval, ms")
    ax[2].plot(tl["t"], tl["driver_rss_mb"], color="tab:green", label="driver RSS")
    ax[2].set_ylabel("MiB")
    ax[2].set_ylim(bottom=0)
    ax[2].set_xlabel("seconds since the stream started")
    for i, (t, cls, _) in enumerate(kills):
        for a in ax:
            a.axvline(t, color="tab:red", lw=0.8, ls="--", label=None if i or a is not ax[0]
                      else "SIGKILL of a stage actor")  # fmt: skip
        ax[0].annotate(cls, (t, 0), rotation=90, fontsize=7, va="bottom", ha="right")
    ax[0].legend(loc="upper left", fontsize=8)
    ax[2].legend(loc="upper left", fontsize=8)
    ax[0].set_title("Soak: the demo stream with a stage actor killed every 30-60 s (measured)")
    save_figure(fig, path)


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    return {"soak": table([payload["row"]], COLUMNS)}


def render_markdown(payload: dict[str, Any]) -> str:
    kills = "\n".join(f"- {t:.1f} s: {cls} (pid {pid})" for t, cls, pid in payload["kills"])
    body = "\n".join([render_tables(payload)["soak"], "", "Kills:", "", kills])
    return results_markdown(
        "Soak benchmark", payload, "python -m benchmarks.soak",
        f"; base config `{payload['config']['base_config']}`.", body,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    ap = results_parser("python -m benchmarks.soak", __doc__, "one minute, kills every 15-30 s")
    ap.add_argument("--minutes", type=float, default=5.0, help="length of the soak")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from splitstream.runner import start_local_ray

    minutes = 1.0 if args.quick else args.minutes
    every_s = (15.0, 30.0) if args.quick else (30.0, 60.0)
    config = {
        "quick": args.quick,
        "base_config": str(BASE_CONFIG.relative_to(REPO)),
        "minutes": minutes,
        "rate_sps": RATE_SPS,
        "kill_every_s": list(every_s),
        "seed": SEED,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "soak_quick" if args.quick else "soak"
    prov = provenance(["python", "-m", "benchmarks.soak", *argv], config)
    t0 = time.time()
    start_local_ray(num_cpus=2, object_store_mb=256)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            row, rep, kills = soak(minutes, every_s, Path(tmp) / "soak.parquet")
    finally:
        ray.shutdown()
    payload = {
        "machine": machine(),
        "provenance": prov,
        "config": config,
        "row": row,
        "kills": [list(k) for k in kills],
        "timeline": {k: rep["timeline"][k] for k in ("t", "settled", "latency_ms", "driver_rss_mb")},
        "memory": rep["memory"],
        "seconds": round(time.time() - t0, 1),
    }
    write_results(out, stem, payload, render_markdown(payload), args.json)
    plot(rep, kills, out / f"{stem}.png")
    return 0 if row["passed"] == "yes" else 1


if __name__ == "__main__":
    sys.exit(main())
