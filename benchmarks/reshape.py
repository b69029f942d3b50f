"""Reshape / representation model check: the cost model's choice vs an exhaustive search, predicted vs actual.

    python -m benchmarks.reshape [--quick] [--json PATH]

For each suite tensor and bit width, every candidate (dense, packed, delta at each distance, sparse rows at
every width of a fine grid, each with its context options) is actually encoded. The table shows the cost
model's choice at level 9 (size only) and at the default level (which trades up to its speed margin), their
predicted and measured sizes, the exhaustive best, and the worst prediction error over all candidates.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm

from codec import api, costmodel
from codec.represent import MAX_WIDTH

from .common import machine, provenance, table, write_json
from .suite import build

BLOCK_LOG2 = 16


def exhaustive_widths(shape: tuple[int, ...]) -> list[int]:
    """Shape-aligned widths plus every multiple of 8 up to 255."""
    grid = costmodel.sparse_widths(shape, 9) + list(range(8, MAX_WIDTH, 8)) + [MAX_WIDTH]
    return sorted(set(grid))


def check(name: str, x, bits: int) -> dict[str, Any]:
    p = api.prepare(x, bits)
    cands = costmodel.candidates(p.info, 9, BLOCK_LOG2, widths=exhaustive_widths(p.shape))
    actual = {c.name: len(api.encode_prepared(p, c, BLOCK_LOG2)) for c in cands}
    errors = [abs(c.predicted_bytes - actual[c.name]) / actual[c.name] for c in cands]
    best_name = min(actual, key=actual.get)
    chosen9, _ = costmodel.choose(p.info, 9, BLOCK_LOG2)
    chosen_d, _ = costmodel.choose(p.info, costmodel.DEFAULT_LEVEL, BLOCK_LOG2)
    size9 = len(api.encode_prepared(p, chosen9, BLOCK_LOG2))
    size_d = len(api.encode_prepared(p, chosen_d, BLOCK_LOG2))
    return {
        "tensor": name,
        "bits": bits,
        "candidates": len(cands),
        "chosen_l9": chosen9.name,
        "predicted_l9": chosen9.predicted_bytes,
        "actual_l9": size9,
        "chosen_default": chosen_d.name,
        "actual_default": size_d,
        "best": best_name,
        "best_bytes": actual[best_name],
        "gap_l9": size9 / actual[best_name] - 1,
        "gap_default": size_d / actual[best_name] - 1,
        "prediction_error_chosen": abs(chosen9.predicted_bytes - size9) / size9,
        "prediction_error_max": max(errors),
    }


COLUMNS = [
    ("tensor", "tensor"),
    ("bits", "bits"),
    ("candidates", "cands"),
    ("chosen_l9", "L9 choice"),
    ("predicted_l9", "predicted B"),
    ("actual_l9", "actual B"),
    ("best", "exhaustive best"),
    ("best_bytes", "best B"),
    ("gap_l9", "L9 gap"),
    ("chosen_default", "L3 choice"),
    ("gap_default", "L3 gap"),
    ("prediction_error_max", "max pred err"),
]


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    """The README's Markdown blocks of a results document: choices (table) and summary."""
    summary = [f"- {k}: {100 * v:.2f}%" for k, v in payload["summary"].items()]
    return {"choices": table(payload["rows"], COLUMNS), "summary": "\n".join(summary)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.reshape", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bits", default="8,4")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    bits = [int(b) for b in args.bits.split(",")]
    config = {"quick": args.quick, "bits": bits, "block_log2": BLOCK_LOG2}
    argv = sys.argv[1:] if argv is None else list(argv)
    prov = provenance(["python", "-m", "benchmarks.reshape", *argv], config)
    tensors = list(build(quick=args.quick))
    rows = [
        check(t.name, t.x, b)
        for t, b in tqdm([(t, b) for t in tensors for b in bits], desc="reshape check")
    ]
    summary = {
        "max_gap_l9": max(r["gap_l9"] for r in rows),
        "max_gap_default": max(r["gap_default"] for r in rows),
        "max_prediction_error": max(r["prediction_error_max"] for r in rows),
        "max_prediction_error_chosen": max(r["prediction_error_chosen"] for r in rows),
    }
    payload = {"rows": rows, "summary": summary, "machine": machine(), "provenance": prov}
    md = render_tables(payload)
    print(md["choices"])
    print()
    print(md["summary"])
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
