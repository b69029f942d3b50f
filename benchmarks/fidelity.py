"""Fidelity table: rate vs task fidelity of every registered model through the codec.

``python -m benchmarks.fidelity [--quick] [--out benchmarks/results]`` evaluates the
seven torchvision architectures (untrained, synthetic inputs: agreement / KL against the
uncompressed model), MiniLM (real weights: embedding cosine, retrieval agreement), a
random tiny Llama (next-token agreement, KL, perplexity) and the trained digits ResNet
(real top-1 on held-out digits). Writes ``fidelity.md``, ``fidelity.json`` and
``fidelity.png`` under ``--out`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .common import machine, provenance, stamp

FULL = {"bits": [8, 6, 4, 2], "size": 128, "samples": 8, "digits_samples": 450, "lm_samples": 16}
QUICK = {"bits": [8, 4, 2], "size": 64, "samples": 4, "digits_samples": 150, "lm_samples": 8}
MAX_VISION_SPLITS = 3


def _jobs(p: dict[str, Any]) -> list[dict[str, Any]]:
    from pipeline.models import TORCHVISION_MODELS

    jobs = [{"model": "digits-resnet", "samples": p["digits_samples"]}]
    for name in TORCHVISION_MODELS:
        jobs.append({"model": name, "samples": p["samples"], "size": p["size"]})
    jobs.append({"model": "minilm", "samples": 16})
    jobs.append({"model": "llama-tiny", "samples": p["lm_samples"]})
    return jobs


def summary(rows: Sequence[dict[str, Any]], bits: int = 8) -> list[dict[str, Any]]:
    """Per model, the split with the best fidelity at ``bits`` (ties: higher ratio)."""
    from pipeline.evaluate import primary_metric

    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        cands = [r for r in rows if r["model"] == name and r["bits"] == bits]
        if not cands:
            continue
        key = primary_metric(cands[0])
        best = max(cands, key=lambda r: (round(r[key], 4), r["ratio"]))
        out.append(
            {
                "model": name,
                "trained": best["trained"],
                "best_split": best["split"],
                "bits": bits,
                "metric": key,
                "value": best[key],
                "baseline": best.get("top1_baseline"),
                "ratio": best["ratio"],
                "ratio_fp16": best["ratio_fp16"],
                "granularity": best["granularity"],
            }
        )
    return out


def summary_markdown(summ: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| model | trained | best split | bits | metric | value | baseline | ratio vs fp32 | "
        "ratio vs fp16 | quantization |",
        "|" + "---|" * 10,
    ]
    for s in summ:
        base = "" if s["baseline"] is None else f"{s['baseline']:.4f}"
        lines.append(
            f"| {s['model']} | {s['trained']} | {s['best_split']} | {s['bits']} | {s['metric']} "
            f"| {s['value']:.{6 if s['metric'] == 'cosine' else 4}f} | {base} | {s['ratio']:.2f} | {s['ratio_fp16']:.2f} | "
            f"per-{s['granularity']} |"
        )
    return "\n".join(lines)


def intro(doc: dict[str, Any]) -> str:
    """Which models are untrained (scored against the uncompressed model) and which are trained."""
    untrained = ", ".join(doc["meta"]["untrained_models"]) or "none"
    return (
        f"Untrained (random weights, synthetic inputs, fidelity vs the uncompressed model): "
        f"{untrained}. Trained: digits-resnet (real top-1 on held-out digits), minilm (real "
        "all-MiniLM-L6-v2 weights)."
    )


def render_tables(doc: dict[str, Any]) -> dict[str, str]:
    """The README's Markdown blocks of a results document: models (which are trained), best_split."""
    return {"models": intro(doc), "best_split": summary_markdown(doc["summary"])}


def run(
    quick: bool = False,
    out: str | Path = "benchmarks/results",
    models: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate all jobs, write ``fidelity.{md,json,png}`` under ``out``; returns the JSON document."""
    import torch

    from pipeline.evaluate import evaluate, plot_rate_fidelity, rows_to_markdown
    from pipeline.models import load_model

    p = QUICK if quick else FULL
    jobs = [j for j in _jobs(p) if not models or j["model"] in models]
    if models and len(jobs) != len(models):
        known = [j["model"] for j in _jobs(p)]
        raise ValueError(f"unknown model(s) in {list(models)}; choose from {known}")
    command = ["python", "-m", "benchmarks.fidelity", *(["--quick"] if quick else [])]
    command += ["--out", str(out), *(["--models", ",".join(models)] if models else [])]
    config = {"quick": quick, "models": list(models) if models else None, **p}
    prov = provenance(command, {**config, "max_vision_splits": MAX_VISION_SPLITS})
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for job in tqdm(jobs, desc="fidelity models", disable=not progress):
        loaded = load_model(job["model"])
        splits = loaded.split_points[:MAX_VISION_SPLITS]
        rows += evaluate(
            loaded, splits, p["bits"], job["samples"], size=job.get("size"), progress=progress
        )
    doc = {
        "meta": {
            "quick": quick,
            "bits": p["bits"],
            "vision_size": p["size"],
            "vision_samples": p["samples"],
            "seconds": round(time.perf_counter() - t0, 1),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "untrained_models": sorted({r["model"] for r in rows if not r["trained"]}),
            "notes": "one codec frame per sample; ratio = fp32 bytes / wire bytes; untrained models "
            "are scored against the uncompressed model on synthetic inputs (agreement, KL)",
        },
        "machine": machine(),
        "provenance": prov,
        "summary": summary(rows),
        "rows": rows,
    }
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "fidelity.json").write_text(json.dumps(doc, indent=1))
    md = (
        f"# Fidelity table{' (quick)' if quick else ''}\n\n"
        f"{stamp(prov, prov['command'])}\n\n{intro(doc)}\n\n"
        "## Best split per model at 8 bits\n\n"
        + summary_markdown(doc["summary"])
        + "\n\n## All rows\n\n"
        + rows_to_markdown(rows)
        + "\n"
    )
    (dest / "fidelity.md").write_text(md)
    plot_rate_fidelity(rows, dest / "fidelity.png", title="splitstream codec: rate vs fidelity")
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.fidelity", description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "--quick", action="store_true", help="smaller inputs, fewer samples and bit widths"
    )
    ap.add_argument("--out", default="benchmarks/results", help="output directory")
    ap.add_argument("--models", default=None, help="comma-separated subset of models")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    try:
        doc = run(args.quick, args.out, models, not args.quiet)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_markdown(doc["summary"]))
    print()
    from pipeline.evaluate import rows_to_markdown

    print(rows_to_markdown(doc["rows"]))
    print(
        f"\nwrote {args.out}/fidelity.md, fidelity.json, fidelity.png ({doc['meta']['seconds']} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
