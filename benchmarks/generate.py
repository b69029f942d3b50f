"""Split generation benchmark: KV caches on both sides against recomputing the prefix, side by side.

    python -m benchmarks.generate [--quick] [--out DIR] [--json PATH]

For each model, prompt length and link, ``pipeline.generation.generate`` produces ``NEW_TOKENS``
tokens greedily through the split at ``BITS`` bits twice, back to back in one process: with a KV
cache on each side (one coded hidden vector up per token) and without (both sides recompute the
whole prefix and the edge sends every position's hidden state again, as the lm-eval adapter did
before). The two runs alternate which goes first, ``--repeats`` times; a figure is the median over
repeats of the mean over a run's decode steps (every step after the prefill), and the speed-up is
the median of the pairs' ratios, so a slow spell of a shared machine hits both sides of a pair
alike. The load average is recorded. Each step's time is measured in parts: compute (head and tail),
codec (encode and decode) and link (the sender waits for the emulated uplink and downlink), and its
bytes are the real message sizes. Agreement is the share of steps at which the unsplit model, given
the same prefix, picks the same token (first repeat). Models: ``llama-tiny`` (the registry's random
4-layer, 64-wide Llama) and ``llama-small``, a random 8-layer, 512-wide Llama built from the same
registry entry; random weights, so times and bytes are representative and agreement is a stress test
(logit margins are tiny). Links: ``none`` (no delay, unlimited) and ``lte`` (the uplink profile: 10
Mbit/s, 25 ms, 5 ms jitter; a 25 ms downlink). One CPU thread (the machine is small and shared).

Prints Markdown and writes ``generate.json`` (stamped with the commit and settings), ``generate.md``
and ``generate.png`` into ``--out`` (``generate_quick*`` with ``--quick``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    machine,
    provenance,
    results_markdown,
    results_parser,
    save_figure,
    table,
    write_results,
)

BITS = 8
NEW_TOKENS = 32
THREADS = 1
MODELS: dict[str, dict[str, Any]] = {
    "llama-tiny": {"config": {}, "split": 2, "prompts": (16, 64, 192)},
    "llama-small": {
        "config": {
            "hidden_size": 512,
            "intermediate_size": 1408,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "max_position_embeddings": 1024,
        },
        "split": 4,
        "prompts": (16, 128, 480),
    },
}
LINKS = ("none", "lte")
MODES = ("cache", "recompute")
PARTS = ("compute", "codec", "link", "total")
COLUMNS = [
    ("model", "model"),
    ("prompt_tokens", "prompt tokens"),
    ("link", "link"),
    ("cache_ms", "KV cache ms/token"),
    ("cache_parts", "= compute + codec + link"),
    ("recompute_ms", "recompute ms/token"),
    ("recompute_parts", "= compute + codec + link"),
    ("speedup", "speed-up"),
    ("cache_up_bytes", "KV cache B/token up"),
    ("recompute_up_bytes", "recompute B/token up"),
    ("cache_agreement", "agreement (cache)"),
    ("recompute_agreement", "agreement (recompute)"),
]


def links(name: str) -> tuple[Any, Any]:
    from pipeline.stream.link import LinkSpec, resolve_link

    if name == "none":
        return LinkSpec(), LinkSpec()
    up = resolve_link(name)
    return up, LinkSpec(delay_ms=up.delay_ms)


def prompt(length: int, vocab: int, seed: int) -> list[int]:
    """A deterministic prompt: BOS then random token ids."""
    rng = np.random.default_rng(seed)
    return [1, *rng.integers(3, vocab, length - 1).tolist()]


def measure(
    model: str, spec: dict[str, Any], link: str, length: int, repeats: int
) -> dict[str, Any]:
    """Both modes on one (model, prompt length, link): the table row and every run's figures."""
    from pipeline.generation.generate import SplitGenerator
    from pipeline.models import load_model

    lm = load_model("llama-tiny", **spec["config"]).raw
    up, down = links(link)
    gens = {
        mode: SplitGenerator(
            lm, spec["split"], BITS, uplink=up, downlink=down, cache=mode == "cache"
        )
        for mode in MODES
    }
    ids = prompt(length, int(lm.config.vocab_size), seed=length)
    gens["cache"].generate(ids[:8], 4, reference=False)  # warm-up, not counted
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for r in range(repeats):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            gen = gens[mode].generate(ids, NEW_TOKENS, reference=r == 0)
            rep = gen.report()
            runs[mode].append(
                {
                    "ms": {p: rep["ms_per_token"][p] for p in PARTS},
                    "prefill_ms": rep["prefill_ms"]["total"],
                    "uplink_bytes_per_token": rep["uplink_bytes_per_token"],
                    "bytes_per_token": rep["bytes_per_token"],
                    "agreement": rep.get("agreement"),
                    "sequence_agreement": rep.get("sequence_agreement"),
                    "unsplit_ms_per_token": rep.get("unsplit_ms_per_token"),
                    "tokens": gen.tokens,
                }
            )
    row: dict[str, Any] = {
        "model": model,
        "split": spec["split"],
        "prompt_tokens": length,
        "link": link,
    }
    for mode in MODES:
        ms = {p: float(np.median([run["ms"][p] for run in runs[mode]])) for p in PARTS}
        row[f"{mode}_ms"] = ms["total"]
        row[f"{mode}_parts"] = f"{ms['compute']:.2f} + {ms['codec']:.2f} + {ms['link']:.2f}"
        row[f"{mode}_ms_parts"] = ms
        row[f"{mode}_up_bytes"] = runs[mode][0]["uplink_bytes_per_token"]
        row[f"{mode}_bytes_per_token"] = runs[mode][0]["bytes_per_token"]
        row[f"{mode}_agreement"] = runs[mode][0]["agreement"]
        row[f"{mode}_sequence_agreement"] = runs[mode][0]["sequence_agreement"]
    pairs = zip(runs["cache"], runs["recompute"], strict=True)
    row["speedup"] = float(np.median([b["ms"]["total"] / a["ms"]["total"] for a, b in pairs]))
    row["unsplit_ms_per_token"] = runs["cache"][0]["unsplit_ms_per_token"]
    row["same_tokens"] = runs["cache"][0]["tokens"] == runs["recompute"][0]["tokens"]
    return {"row": row, "runs": runs}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Per model: ms per generated token and uplink bytes per token against the prompt's length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, ax = plt.subplots(2, len(models), figsize=(6 * len(models), 7.5), squeeze=False)
    colors = {"cache": "tab:blue", "recompute": "tab:red"}
    styles = {"none": "-", "lte": "--"}
    for j, model in enumerate(models):
        mine = [r for r in rows if r["model"] == model]
        for link in LINKS:
            pts = sorted((r for r in mine if r["link"] == link), key=lambda r: r["prompt_tokens"])
            x = [r["prompt_tokens"] for r in pts]
            for mode in MODES:
                label = f"{'KV cache' if mode == 'cache' else 'recompute'}, link {link}"
                ax[0][j].plot(
                    x,
                    [r[f"{mode}_ms"] for r in pts],
                    styles[link],
                    marker="o",
                    color=colors[mode],
                    label=label,
                )
                if link == LINKS[0]:
                    ax[1][j].plot(
                        x,
                        [r[f"{mode}_up_bytes"] for r in pts],
                        marker="o",
                        color=colors[mode],
                        label="KV cache" if mode == "cache" else "recompute",
                    )
            if link == LINKS[0]:
                ax[0][j].plot(
                    x,
                    [r["unsplit_ms_per_token"] for r in pts],
                    ":",
                    color="grey",
                    label="unsplit model, KV cache, no link",
                )
        split = mine[0]["split"]
        ax[0][j].set_title(
            f"{model} split after {split} layers, {BITS} bits, {NEW_TOKENS} new tokens"
        )
        ax[0][j].set_ylabel("ms per generated token (decode steps)")
        ax[1][j].set_ylabel("uplink bytes per generated token")
        ax[1][j].set_xlabel("prompt tokens")
        for a in ax[:, j]:
            a.set_yscale("log")
            a.yaxis.set_major_formatter(ScalarFormatter())
            a.yaxis.set_minor_formatter(NullFormatter())
            a.grid(alpha=0.3, which="both")
            a.legend(fontsize=7, loc="upper left", handlelength=3, framealpha=0.9)
        ax[0][j].set_ylim(top=ax[0][j].get_ylim()[1] * 3)  # room for the legend above the lines
    save_figure(fig, path)


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    """The README's Markdown block of a results document."""
    load = payload.get("load_average")
    note = (
        f"\n\nLoad average (1 minute) {load[0]:.1f} at the start and {load[1]:.1f} at the end, on "
        f"{payload['machine']['cores']} cores."
        if load
        else ""
    )
    return {"generate": table(payload["rows"], COLUMNS) + note}


def render_markdown(payload: dict[str, Any]) -> str:
    cfg = payload["provenance"]["config"]
    setup = (
        f", {cfg['threads']} torch thread; {cfg['bits']} bits, {cfg['new_tokens']} new tokens, "
        f"median of {cfg['repeats']} paired runs (speed-up: median of the pairs' ratios)."
    )
    return results_markdown(
        "Split generation: KV caches against recomputing the prefix",
        payload,
        "python -m benchmarks.generate",
        setup,
        render_tables(payload)["generate"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = results_parser("python -m benchmarks.generate", __doc__, "one repeat, llama-tiny only")
    ap.add_argument("--repeats", type=int, default=5, help="paired runs per setting (default 5)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    import torch

    torch.set_num_threads(THREADS)
    repeats = 1 if args.quick else args.repeats
    models = {"llama-tiny": MODELS["llama-tiny"]} if args.quick else MODELS
    config = {
        "quick": args.quick,
        "bits": BITS,
        "new_tokens": NEW_TOKENS,
        "threads": THREADS,
        "repeats": repeats,
        "models": models,
        "links": {name: [vars(s) for s in links(name)] for name in LINKS},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "generate_quick" if args.quick else "generate"
    prov = provenance(["python", "-m", "benchmarks.generate", *argv], config)
    t0, load0 = time.time(), os.getloadavg()[0]
    rows, runs = [], {}
    for model, spec in models.items():
        for link in LINKS:
            for length in spec["prompts"]:
                res = measure(model, spec, link, length, repeats)
                rows.append(res["row"])
                runs[f"{model}|{link}|{length}"] = res["runs"]
                r = res["row"]
                print(
                    f"{model} {link} prompt {length}: {r['cache_ms']:.2f} ms/token cached, "
                    f"{r['recompute_ms']:.2f} recomputed ({r['speedup']:.1f}x)",
                    flush=True,
                )
    payload = {
        "machine": machine(),
        "provenance": prov,
        "rows": rows,
        "runs": runs,
        "seconds": round(time.time() - t0, 1),
        "load_average": [load0, os.getloadavg()[0]],  # 1-minute, start and end: a shared machine
    }
    write_results(out, stem, payload, render_markdown(payload), args.json)
    plot(rows, out / f"{stem}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
