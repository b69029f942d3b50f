"""Tuning study for the fidelity benchmark's 4-bit rule: candidate range rules on the TUNING crops only.

``python -m benchmarks.clip_study [--quick]`` runs the real ImageNet MobileNetV2 at every registered split
on ``random_crops(TUNE_CROPS, TUNE_SEED)`` (the tuning set; the fidelity benchmark reports on other
seeds), quantizes each crop's feature per channel at 4 bits with each candidate rule, decodes, runs the
tail, and scores top-1 agreement (with its Wilson 95 % interval) and mean KL against the uncompressed
model. Writes ``clip_study.{json,md}``.

The candidates: the codec's clip modes (none, mse, wmse, wmse_ends) through ``codec.encode``, and range
rules that were tried as prototypes and not kept, computed per channel and per crop with the codec's
own parameter arithmetic: ACIQ-style clipping at ``k`` times the MSE-optimal threshold of a Laplace
(mean absolute deviation) or Gaussian (standard deviation) fit, and percentile clipping. The rule is the
candidate with the least mean KL over the splits (agreement moves by one crop in 252 at a time, KL is
smoother); candidates within a few percent of each other are a tie that this set cannot resolve.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .common import machine, provenance, results_markdown, results_parser, write_results
from .fidelity import RULE, TUNE_CROPS, TUNE_SEED, wilson

COMMAND = "python -m benchmarks.clip_study"
BITS = 4
ACIQ_LAPLACE = {2: 2.83, 3: 3.89, 4: 5.03, 5: 6.2, 6: 7.41, 7: 8.64, 8: 9.89}
"""MSE-optimal clipping thresholds in Laplace scales b (ACIQ's published values, per bit width)."""
ACIQ_GAUSS = {2: 1.71, 3: 2.15, 4: 2.55, 5: 2.94, 6: 3.29, 7: 3.61, 8: 3.92}
"""MSE-optimal clipping thresholds in standard deviations (ACIQ's published values)."""


def _dequantized(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """x (N, C, M) quantized per (crop, channel) to [lo, hi] (widened to contain 0) with the codec's
    parameter arithmetic (codec.quantize.params_from_range, multiply by 1/scale, round half to even)."""
    qmax = (1 << bits) - 1
    lo = np.minimum(lo, 0).astype(np.float32)
    hi = np.maximum(hi, 0).astype(np.float32)
    step = (hi.astype(np.float64) - lo) / qmax
    s = np.where(step > 0, np.maximum(step, 1e-30), 1.0).astype(np.float32)
    z = np.clip(np.rint(-lo.astype(np.float64) / s), 0, qmax).astype(np.float32)
    inv = (np.float32(1) / s).astype(np.float32)
    q = np.clip(np.rint(x * inv[..., None]) + z[..., None], 0, qmax)
    return ((q - z[..., None]) * s[..., None]).astype(np.float32)


def _aciq(k: float, fit: str) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    def rule(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
        mu = x.mean(-1)
        if fit == "laplace":
            a = k * ACIQ_LAPLACE[bits] * np.abs(x - mu[..., None]).mean(-1)
        else:
            a = k * ACIQ_GAUSS[bits] * x.std(-1)
        return np.maximum(x.min(-1), mu - a), np.minimum(x.max(-1), mu + a)

    return rule


def _percentile(p: float) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    def rule(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
        return np.quantile(x, p, axis=-1), np.quantile(x, 1 - p, axis=-1)

    return rule


CODEC_MODES: tuple[str | None, ...] = (None, "mse", "wmse", "wmse_ends")
PROTOTYPES = {
    "aciq-laplace k=1.0": _aciq(1.0, "laplace"),
    "aciq-laplace k=1.5": _aciq(1.5, "laplace"),
    "aciq-gauss k=1.0": _aciq(1.0, "gauss"),
    "aciq-gauss k=1.6": _aciq(1.6, "gauss"),
    "percentile 1e-4": _percentile(1e-4),
    "percentile 1e-3": _percentile(1e-3),
}


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    import codec
    from pipeline.models import load_model
    from pipeline.models.photos import random_crops

    n = 36 if quick else TUNE_CROPS
    config = {"quick": quick, "bits": BITS, "tune_seed": TUNE_SEED, "crops": n}
    prov = provenance(COMMAND + (" --quick" if quick else ""), config)  # before the run
    loaded = load_model("mobilenet_v2", "IMAGENET1K_V1")
    crops = random_crops(n, TUNE_SEED)
    names = ["none" if m is None else m for m in CODEC_MODES] + list(PROTOTYPES)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for split in loaded.split_points:
            head, tail = loaded.split(split)
            feats = torch.cat([head(crops.images[i : i + 16]) for i in range(0, n, 16)])
            ref = torch.cat([tail(feats[i : i + 16]) for i in range(0, n, 16)])
            f = feats.numpy()
            for name in names:
                if name in PROTOTYPES:
                    x = f.reshape(n, f.shape[1], -1)
                    lo, hi = PROTOTYPES[name](x, BITS)
                    deq = _dequantized(x, lo, hi, BITS).reshape(f.shape)
                else:
                    mode = None if name == "none" else name
                    deq = np.stack(
                        [
                            codec.decode(codec.encode(f[i : i + 1], bits=BITS, axis=1, clip=mode))[
                                0
                            ]
                            for i in range(n)
                        ]
                    )
                t = torch.cat([tail(torch.from_numpy(deq[i : i + 16])) for i in range(0, n, 16)])
                agree = int((t.argmax(-1) == ref.argmax(-1)).sum())
                lp, lq = torch.log_softmax(ref, -1), torch.log_softmax(t, -1)
                kl = float((lp.exp() * (lp - lq)).sum(-1).mean())
                lo95, hi95 = wilson(agree, n)
                rows.append(
                    {
                        "rule": name,
                        "split": split,
                        "samples": n,
                        "agreement": agree / n,
                        "ci95": [round(lo95, 4), round(hi95, 4)],
                        "kl": kl,
                    }
                )
    by_rule = {name: float(np.mean([r["kl"] for r in rows if r["rule"] == name])) for name in names}
    chosen = min(by_rule, key=by_rule.get)
    return {
        "meta": {
            "bits": BITS,
            "tune_seed": TUNE_SEED,
            "crops": n,
            "granularity": "per channel",
            "criterion": "least mean KL over the splits",
            "least_kl": chosen,
            "benchmark_rule": RULE,
            "seconds": round(time.perf_counter() - t0, 1),
        },
        "machine": machine(),
        "provenance": prov,
        "mean_kl": by_rule,
        "rows": rows,
    }


def _body(payload: dict[str, Any]) -> str:
    """The study's paragraph and table."""
    m = payload["meta"]
    splits = list(dict.fromkeys(r["split"] for r in payload["rows"]))
    head = "| rule | " + " | ".join(f"{s}: agreement (95% interval), KL" for s in splits)
    lines = [head + " | mean KL |", "|" + "---|" * (len(splits) + 2)]
    for name, mean_kl in payload["mean_kl"].items():
        cells = []
        for s in splits:
            (r,) = [r for r in payload["rows"] if r["rule"] == name and r["split"] == s]
            cells.append(
                f"{r['agreement']:.4f} ({r['ci95'][0]:.3f} - {r['ci95'][1]:.3f}), {r['kl']:.4f}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean_kl:.4f} |")
    body = (
        f"Tuning set: {m['crops']} random crops (seed {m['tune_seed']}) of the bundled photographs; "
        f"real ImageNet MobileNetV2, {m['bits']} bits, {m['granularity']}. Least mean KL: "
        f'`{m["least_kl"]}`; the fidelity benchmark runs `clip="{m["benchmark_rule"]}"`.\n\n'
        + "\n".join(lines)
    )
    return body


def render(payload: dict[str, Any]) -> str:
    return results_markdown("Clip rule tuning study", payload, COMMAND, "", _body(payload))


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    """The docs' block: summary (the study's table and what it chose)."""
    return {"summary": _body(payload)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = results_parser(COMMAND, __doc__, "36 crops instead of the tuning set's all")
    args = ap.parse_args(argv)
    payload = run(args.quick)
    stem = "clip_study_quick" if args.quick else "clip_study"
    write_results(Path(args.out), stem, payload, render(payload), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
