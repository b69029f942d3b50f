"""Small helpers shared by the benchmarks: timing, tables, JSON, machine and run provenance."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def paired_times(
    fn: Callable[[], Any], ref: Callable[[], Any], repeats: int, min_seconds: float = 0.0
) -> tuple[float, float, float]:
    """Time ``fn`` and ``ref`` back to back, ``repeats`` pairs or more until ``min_seconds`` have passed
    (one warm-up pair). Returns (median of the per-pair ratios ref_time / fn_time, median fn time, median
    ref time): on a shared, noisy machine a slow spell hits both sides of a pair alike."""
    fn(), ref()
    ratios, ta, tb = [], [], []
    deadline = time.perf_counter() + min_seconds
    while len(ratios) < max(repeats, 1) or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        ref()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
        ratios.append((t2 - t1) / max(t1 - t0, 1e-12))
    return float(np.median(ratios)), float(np.median(ta)), float(np.median(tb))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` with (key, header) ``columns``."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(k, "")) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def machine() -> dict[str, Any]:
    """Where the numbers were taken."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    """Output of ``git args`` in the repository, or None where git or the repository is missing."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def provenance(command: Sequence[str] | str, config: dict[str, Any]) -> dict[str, Any]:
    """Where a result came from: commit, whether tracked files differed from it (results and
    README.md aside: they do not shape a run), the command that produced it, the settings that
    shaped the run and when (UTC). Without git, commit and dirty are None."""
    commit = _git("rev-parse", "HEAD") or None
    outputs = [":(exclude)benchmarks/results", ":(exclude)README.md"]
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *outputs)
    status = status if commit else None
    return {
        "commit": commit,
        "dirty": None if status is None else bool(status),
        "command": command if isinstance(command, str) else shlex.join(command),
        "config": config,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def stamp(prov: dict[str, Any] | None, command: str) -> str:
    """One Markdown line naming the commit, command and date of a run; ``command`` is what to run
    where the result carries no provenance yet."""
    if not prov:
        return f"_(no provenance stamp: regenerate with `{command}`)_"
    commit = (prov.get("commit") or "unknown")[:7]
    dirty = " with uncommitted changes" if prov.get("dirty") else ""
    return f"_Commit `{commit}`{dirty}, `{prov.get('command')}`, {prov.get('date')}._"


def results_parser(prog: str, doc: str, quick: str) -> argparse.ArgumentParser:
    """The options every results-writing benchmark has: ``--quick`` (``quick`` says what it does),
    ``--out DIR`` (default ``benchmarks/results``) and ``--json PATH``; the description is the first
    paragraph of ``doc``."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="output directory")
    ap.add_argument("--json", default=None, help="output JSON path (default: in --out)")
    return ap


def results_markdown(
    title: str, payload: dict[str, Any], command: str, setup: str, body: str
) -> str:
    """A results document: title, provenance stamp, the machine (then ``setup``) and ``body``."""
    m = payload["machine"]
    return "\n".join(
        [
            f"# {title}",
            "",
            stamp(payload.get("provenance"), command),
            "",
            f"Machine: {m['cpu']} ({m['cores']} cores){setup}",
            "",
            body,
            "",
        ]
    )


def write_results(
    out: Path, stem: str, payload: dict[str, Any], markdown: str, json_path: str | None = None
) -> None:
    """Print ``markdown`` and write ``<out>/<stem>.json`` (or ``json_path``) and ``<stem>.md``."""
    print()
    print(markdown)
    write_json(json_path or out / f"{stem}.json", payload)
    (out / f"{stem}.md").write_text(markdown)


def save_figure(fig: Any, path: str | Path, dpi: int = 90) -> None:
    """Lay out, write and close a Matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    print(f"wrote {path}")


def write_json(path: str | Path | None, payload: dict[str, Any]) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float))
    print(f"wrote {path}")


def geomean(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if x > 0], np.float64)
    return float(np.exp(np.mean(np.log(v)))) if v.size else float("nan")
