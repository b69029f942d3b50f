"""Block-size study: frame size and CPU speed at each rANS block size, and the GPU's dependent steps.

    python -m benchmarks.blocks [--quick] [--out DIR] [--json PATH]

rANS streams are cut into blocks of 2^k symbols, each with its own 32 lane states (128 bytes) and a 4-byte
index entry, so blocks code in parallel: on CPU threads, and on a GPU one warp per block. A smaller block
costs bytes and gives more parallel work and fewer dependent steps per lane (2^k / 32: the length of the
serial chain a warp walks). Per suite tensor, bit width (8 and 4) and block size, at the default level
(the cost model choosing at that block size, as ``codec.encode`` does): the frame's bytes, relative to
today's 64 Ki blocks, the encode and decode speed on one thread and the decode speed on two (elements per
second, medians of repeats, the block sizes of one tensor timed in rotation), and the blocks and steps per
lane a GPU would run (a warp per block of each rANS-coded stream). GPU time is not measured here. Writes ``blocks.{json,md,png}`` under ``--out``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import codec
from codec import api, represent
from codec.costmodel import DEFAULT_LEVEL, LEAN_MAX_LEVEL, LEAN_MIN_SYMBOLS, RANS, choose
from codec.rans import LANES

from .common import (
    geomean,
    machine,
    provenance,
    results_markdown,
    results_parser,
    save_figure,
    table,
    write_results,
)
from .suite import build

COMMAND = "python -m benchmarks.blocks"
BLOCK_LOG2S = (12, 13, 14, 15, 16, 18)
TODAY = 16  # the default block size of levels 1-5 (codec/api.py _block_log2)
BITS = (8, 4)
THREADS = 2


def encode_at(x: np.ndarray, bits: int, level: int, blog: int) -> bytes:
    """``codec.encode(x, bits, level=level)`` with blocks of 2^blog symbols."""
    return _encode(x, bits, level, blog)[0]


def _encode(x: np.ndarray, bits: int, level: int, blog: int) -> tuple[bytes, list[int]]:
    """The frame and the symbol count of each of its rANS-coded streams."""
    sampled = level < LEAN_MAX_LEVEL and x.size >= LEAN_MIN_SYMBOLS
    p = api.prepare(x, bits, None, fast_stats=level == 1, histogram=not sampled)
    best, _ = choose(p.info, level, blog)
    streams = represent.split(p.q, best.kind, best.param, p.info.layout, bits)
    coded = [
        s.size
        for s, plan in zip(streams, best.streams, strict=True)
        if plan.coding == RANS and s.size
    ]
    return api.encode_prepared(p, best, blog), coded


def _rotated_medians(fns: list, repeats: int) -> list[float]:
    """Median seconds of each function, timed in rotation (a slow spell on a shared machine hits all)."""
    import time

    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def measure(name: str, x: np.ndarray, bits: int, level: int, repeats: int) -> list[dict[str, Any]]:
    """One row per block size for one tensor and bit width."""
    n = x.size
    coded = {b: _encode(x, bits, level, b) for b in BLOCK_LOG2S}
    blobs = {b: blob for b, (blob, _) in coded.items()}
    reference = codec.decode(blobs[TODAY])
    for blob in blobs.values():  # the block size changes the bytes, never the values
        assert np.array_equal(codec.decode(blob), reference)
    enc = _rotated_medians([lambda b=b: encode_at(x, bits, level, b) for b in BLOCK_LOG2S], repeats)
    dec = _rotated_medians([lambda b=b: codec.decode(blobs[b]) for b in BLOCK_LOG2S], repeats)
    dec_mt = _rotated_medians(
        [lambda b=b: codec.decode(blobs[b], threads=THREADS) for b in BLOCK_LOG2S], repeats
    )
    rows = []
    for k, b in enumerate(BLOCK_LOG2S):
        info = codec.inspect(blobs[b])
        rows.append(
            {
                "tensor": name,
                "bits": bits,
                "level": level,
                "elements": n,
                "block_log2": b,
                "block_symbols": 1 << b,
                "bytes": len(blobs[b]),
                "size_vs_64k": len(blobs[b]) / len(blobs[TODAY]),
                "config": f"{info.representation}[{','.join(info.streams)}]",
                "enc_eps": n / enc[k],
                "dec_eps": n / dec[k],
                f"dec_eps_{THREADS}t": n / dec_mt[k],
                "enc_vs_64k": enc[BLOCK_LOG2S.index(TODAY)] / enc[k],
                "dec_vs_64k": dec[BLOCK_LOG2S.index(TODAY)] / dec[k],
                # a warp per block: its lanes walk at most block / 32 dependent steps
                "gpu_blocks": sum(-(-m // (1 << b)) for m in coded[b][1]),
                "gpu_steps_per_lane": -(-min((1 << b), max(coded[b][1], default=0)) // LANES),
            }
        )
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per block size: geometric means over the tensors of size, encode and decode speed vs 64 Ki blocks."""
    out = []
    for b in BLOCK_LOG2S:
        for bits in BITS:
            sel = [r for r in rows if r["block_log2"] == b and r["bits"] == bits]
            if not sel:
                continue
            out.append(
                {
                    "block": f"{(1 << b) // 1024} Ki",
                    "block_log2": b,
                    "bits": bits,
                    "tensors": len(sel),
                    "size_vs_64k": geomean([r["size_vs_64k"] for r in sel]),
                    "size_vs_64k_max": max(r["size_vs_64k"] for r in sel),
                    "enc_vs_64k": geomean([r["enc_vs_64k"] for r in sel]),
                    "dec_vs_64k": geomean([r["dec_vs_64k"] for r in sel]),
                    "gpu_steps_per_lane": (1 << b) // LANES,
                }
            )
    return out


SUMMARY_COLUMNS = [
    ("block", "block"),
    ("bits", "bits"),
    ("tensors", "tensors"),
    ("size_vs_64k", "size / 64 Ki (geomean)"),
    ("size_vs_64k_max", "size / 64 Ki (max)"),
    ("enc_vs_64k", "encode speed / 64 Ki"),
    ("dec_vs_64k", "decode speed / 64 Ki"),
    ("gpu_steps_per_lane", "GPU steps per lane"),
]
ROW_COLUMNS = [
    ("tensor", "tensor"),
    ("bits", "bits"),
    ("block_symbols", "block"),
    ("bytes", "bytes"),
    ("size_vs_64k", "size / 64 Ki"),
    ("enc_eps", "enc elem/s"),
    ("dec_eps", "dec elem/s"),
    (f"dec_eps_{THREADS}t", f"dec elem/s ({THREADS} threads)"),
    ("gpu_blocks", "GPU blocks"),
    ("gpu_steps_per_lane", "GPU steps/lane"),
]


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    """The docs' Markdown blocks of a results document: the summary per block size."""
    return {"summary": table(payload["summary"], SUMMARY_COLUMNS)}


def render_markdown(payload: dict[str, Any]) -> str:
    setup = (
        f"; level {payload['provenance']['config']['level']}, one thread unless said, medians of "
        f"{payload['provenance']['config']['repeats']} rotations"
    )
    body = "\n".join(
        [
            "## Summary (geometric means over the suite)",
            "",
            table(payload["summary"], SUMMARY_COLUMNS),
            "",
            "## Per tensor",
            "",
            table(payload["rows"], ROW_COLUMNS),
        ]
    )
    return results_markdown("rANS block size", payload, COMMAND, setup, body)


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for bits, marker in zip(BITS, ("o", "s"), strict=True):
        sel = [s for s in payload["summary"] if s["bits"] == bits]
        blocks = [1 << s["block_log2"] for s in sel]
        axes[0].plot(blocks, [s["size_vs_64k"] for s in sel], marker=marker, label=f"{bits}-bit")
        axes[1].plot(
            blocks, [s["enc_vs_64k"] for s in sel], marker=marker, label=f"{bits}-bit encode"
        )
        axes[1].plot(
            blocks,
            [s["dec_vs_64k"] for s in sel],
            marker=marker,
            ls="--",
            label=f"{bits}-bit decode",
        )
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("block (symbols)")
        ax.axvline(1 << TODAY, color="gray", lw=0.8)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("frame size / 64 Ki blocks (geomean)")
    axes[1].set_ylabel("CPU speed / 64 Ki blocks (geomean)")
    axes[0].set_title("Bytes: 132 per block")
    axes[1].set_title("CPU speed, one thread (measured)")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = results_parser(COMMAND, __doc__, "the quick suite, 3 repeats")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    repeats = 3 if args.quick else 7
    config = {
        "quick": args.quick,
        "level": DEFAULT_LEVEL,
        "bits": list(BITS),
        "block_log2": list(BLOCK_LOG2S),
        "repeats": repeats,
        "threads": THREADS,
    }
    prov = provenance(["python", "-m", "benchmarks.blocks", *argv], config)
    tensors = list(build(quick=args.quick))
    rows: list[dict[str, Any]] = []
    for t, bits in tqdm([(t, b) for t in tensors for b in BITS], desc="block sizes"):
        rows += measure(t.name, t.x, bits, DEFAULT_LEVEL, repeats)
    payload = {
        "rows": rows,
        "summary": summarize(rows),
        "machine": machine(),
        "provenance": prov,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "blocks_quick" if args.quick else "blocks"
    write_results(out, stem, payload, render_markdown(payload), args.json)
    plot(payload, out / f"{stem}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
