"""Codec sessions against independent frames, on streams of small frames.

``python -m benchmarks.session [--quick] [--out benchmarks/results]`` codes, at 8 bits:

- one real sentence per frame: all-MiniLM-L6-v2 (packaged weights) hidden states of every sentence
  the repository ships (the evaluation's, the text source's and the Zen of Python), in order, per tensor
  and per channel, each as ``codec.encode`` frames (default level) and through one ``codec.Session``
  (per tensor with ``headroom`` 0 and 0.25; per channel each frame keeps its own ranges, and headroom
  does not apply);
- split generation on llama-tiny (random weights: the figures speak of frame overheads, not of a
  trained model's features): uplink bytes per generated token with and without ``--session``.

Bytes are the frames' own lengths; error is the summed squared error over the summed squared values,
and the error ratio is the session's over the independent frames'.
Writes ``session.json``, ``session.md`` and ``session.png`` under ``--out`` and prints the tables.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    machine,
    provenance,
    results_markdown,
    results_parser,
    save_figure,
    table,
    write_results,
)

BITS = 8
SPLITS = ("encoder.layer.3", "encoder.layer.1")
HEADROOMS = (0.0, 0.25)
GRANULARITY = {"tensor": None, "channel": -1}
GEN_PROMPTS = 4
GEN_TOKENS = 32
COMMAND = "python -m benchmarks.session"


def sentences() -> list[str]:
    """Every English sentence the repository and Python ship:
    ``pipeline.evaluation.evaluate.SENTENCES``, the text source's defaults and the Zen of Python
    (``this``, which prints itself on import)."""
    from pipeline.evaluation.evaluate import SENTENCES
    from pipeline.stream.data import DEFAULT_TEXTS

    with contextlib.redirect_stdout(io.StringIO()):
        import this
    zen = [ln for ln in codecs.decode(this.s, "rot13").splitlines()[2:] if ln.strip()]
    return [*SENTENCES, *DEFAULT_TEXTS, *zen]


def minilm_features(split: str, texts: Sequence[str]) -> list[np.ndarray]:
    """One (1, tokens, 384) hidden-state tensor per sentence, no padding."""
    import torch

    from pipeline.models import feature_of, load_model

    loaded = load_model("minilm")
    head, _ = loaded.split(split)
    out = []
    with torch.no_grad():
        for s in texts:
            enc = loaded.tokenizer([s], return_tensors="pt")
            out.append(feature_of(head(enc["input_ids"], enc["attention_mask"])).float().numpy())
    return out


def measure_stream(xs: Sequence[np.ndarray], axis: int | None, headroom: float) -> dict[str, Any]:
    """Independent frames against one session over the same tensors, in order."""
    import codec

    tx, rx = codec.Session(BITS, axis, headroom=headroom), codec.Session()
    ind = ses = 0
    err_ind = err_ses = energy = 0.0
    for x in xs:
        blob = codec.encode(x, bits=BITS, axis=axis)
        frame = tx.encode(x)
        ind, ses = ind + len(blob), ses + len(frame)
        err_ind += float(np.sum((codec.decode(blob) - x).astype(np.float64) ** 2))
        err_ses += float(np.sum((rx.decode(frame) - x).astype(np.float64) ** 2))
        energy += float(np.sum(x.astype(np.float64) ** 2))
    n = len(xs)
    return {
        "frames": n,
        "elements_per_frame": sum(x.size for x in xs) / n,
        "independent_bytes": ind / n,
        "session_bytes": ses / n,
        "ratio": ses / ind,
        "keyframes": tx.keyframes,
        "independent_error": err_ind / energy,
        "session_error": err_ses / energy,
        "error_ratio": err_ses / err_ind if err_ind else float("nan"),
    }


def measure_generation(prompts: Sequence[str]) -> list[dict[str, Any]]:
    """Uplink bytes per generated token on llama-tiny with and without a session, per tensor."""
    from pipeline.generation.generate import load_generator

    rows = []
    for session in (False, True):
        gen = load_generator("llama-tiny", 2, bits=BITS, session=session)
        rep = gen.run(list(prompts), max_new_tokens=GEN_TOKENS, stop_at_eos=False)
        rows.append(
            {
                "session": "on" if session else "off",
                "uplink_bytes_per_token": rep["uplink_bytes_per_token"],
                "raw_uplink_bytes_per_token": rep["raw_uplink_bytes_per_token"],
                "bytes_per_token": rep["bytes_per_token"],
                "agreement": rep["agreement"],
            }
        )
    return rows


STREAM_COLUMNS = [
    ("split", "split"),
    ("granularity", "granularity"),
    ("headroom", "headroom"),
    ("elements_per_frame", "elements / frame"),
    ("independent_bytes", "independent B / frame"),
    ("session_bytes", "session B / frame"),
    ("ratio", "session / independent"),
    ("keyframes", "keyframes"),
    ("independent_error", "error, independent"),
    ("session_error", "error, session"),
    ("error_ratio", "error ratio"),
]
GEN_COLUMNS = [
    ("session", "session"),
    ("uplink_bytes_per_token", "uplink B / token"),
    ("raw_uplink_bytes_per_token", "raw fp32 B / token"),
    ("agreement", "agreement per step"),
]


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    n = payload["rows"][0]["frames"] if payload["rows"] else 0
    gen = (
        f"\n\nSplit generation, llama-tiny (random weights), split after 2 layers, {BITS} bits per "
        f"tensor, {payload['generation_prompts']} prompts x {GEN_TOKENS} tokens:\n\n"
        + table(payload["generation"], GEN_COLUMNS)
    )
    head = (
        f"One MiniLM sentence per frame ({n} sentences, {BITS} bits, default level); error: summed "
        "squared error over summed squared values; error ratio: session over independent. Headroom "
        "applies per tensor only: per channel, each session frame keeps its own ranges.\n\n"
    )
    return {"session": head + table(payload["rows"], STREAM_COLUMNS) + gen}


def render_markdown(payload: dict[str, Any]) -> str:
    return results_markdown(
        "Codec sessions against independent frames",
        payload,
        COMMAND,
        "",
        render_tables(payload)["session"],
    )


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["rows"]
    labels = [
        f"{r['split'].removeprefix('encoder.')} {r['granularity']}"
        + (f" h={r['headroom']:g}" if r["granularity"] == "tensor" else "")
        for r in rows
    ]
    x = np.arange(len(rows))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    a.bar(x - 0.2, [r["independent_bytes"] for r in rows], 0.4, label="independent frames")
    a.bar(x + 0.2, [r["session_bytes"] for r in rows], 0.4, label="session")
    a.set_xticks(x, labels, fontsize=7, rotation=30, ha="right")
    a.set_ylabel("bytes per frame (measured)")
    a.set_title("MiniLM layer output, one sentence per frame, 8 bits")
    a.legend(fontsize=8)
    b.bar(x - 0.2, [r["independent_error"] for r in rows], 0.4, label="independent frames")
    b.bar(x + 0.2, [r["session_error"] for r in rows], 0.4, label="session")
    b.set_yscale("log")
    b.set_xticks(x, labels, fontsize=7, rotation=30, ha="right")
    b.set_ylabel("relative squared error")
    b.set_title("error of the same frames")
    b.legend(fontsize=8)
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = results_parser(COMMAND, __doc__, "one split, one headroom, 12 sentences, 1 prompt")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = sentences()[:12] if args.quick else sentences()
    splits = SPLITS[:1] if args.quick else SPLITS
    headrooms = HEADROOMS[:1] if args.quick else HEADROOMS
    prompts = texts[: 1 if args.quick else GEN_PROMPTS]
    config = {
        "quick": args.quick,
        "bits": BITS,
        "splits": list(splits),
        "headrooms": list(headrooms),
        "sentences": len(texts),
        "generation": {
            "model": "llama-tiny",
            "split": 2,
            "prompts": len(prompts),
            "tokens": GEN_TOKENS,
        },
    }
    prov = provenance(["python", "-m", "benchmarks.session", *argv], config)
    t0 = time.time()
    rows = []
    for split in splits:
        xs = minilm_features(split, texts)
        for gran, axis in GRANULARITY.items():
            for h in headrooms if axis is None else headrooms[:1]:
                r = {
                    "split": split,
                    "granularity": gran,
                    "headroom": h,
                    **measure_stream(xs, axis, h),
                }
                rows.append(r)
                print(
                    f"{split} {gran} headroom {h}: {r['independent_bytes']:.0f} -> "
                    f"{r['session_bytes']:.0f} B/frame ({r['ratio']:.3f}), error x{r['error_ratio']:.2f}",
                    flush=True,
                )
    payload = {
        "machine": machine(),
        "provenance": prov,
        "rows": rows,
        "generation_prompts": len(prompts),
        "generation": measure_generation(prompts),
        "seconds": time.time() - t0,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "session_quick" if args.quick else "session"
    write_results(out, stem, payload, render_markdown(payload), args.json)
    plot(payload, out / f"{stem}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
