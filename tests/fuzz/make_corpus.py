"""Regenerates the fuzzer's seed corpus (tests/fuzz/corpus/): small valid frames of every representation,
context model, bit width and dtype the encoder writes, a stored stream, and a few malformed frames.

    .venv/bin/python tests/fuzz/make_corpus.py

Deterministic: the same codec writes the same files.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

import codec
from codec.api import _block_log2, encode_prepared, prepare
from codec.contexts import ContextSpec
from codec.costmodel import RANS, STORED, Candidate, StreamPlan, candidates
from codec.represent import DENSE, KIND_NAMES, PACKED

CORPUS = Path(__file__).with_name("corpus")


def reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def tensors() -> dict[str, tuple[np.ndarray, int | None]]:
    """Small tensors that make the cost model consider every representation and context."""
    rng = np.random.default_rng(12)
    relu = np.maximum(rng.normal(size=(2, 8, 24, 24)) - 0.5, 0).astype(np.float32)
    smooth = np.cumsum(rng.normal(size=(1, 4, 32, 40)) * 0.1, axis=3).astype(np.float32)
    rows = np.repeat(rng.normal(size=(1, 6, 1, 96)), 12, axis=2).astype(np.float32)
    sparse = np.where(rng.random((3, 70, 50)) < 0.95, 0, rng.normal(size=(3, 70, 50)))
    return {
        "relu": (relu, 1),
        "smooth": (smooth, None),
        "rows": (rows, None),
        "sparse": (sparse.astype(np.float32), None),
    }


def shape_of(cand: Candidate) -> str:
    """A candidate's representation and context models, without their parameters."""
    ctxs = []
    for plan in cand.streams:
        if plan.coding == STORED:
            ctxs.append("stored")
        else:
            parts = (["groups"] if plan.ctx.group is not None else []) + (
                ["nb"] if plan.ctx.nb_dist else []
            )
            ctxs.append("+".join(parts) or "order0")
    return "-".join([KIND_NAMES[cand.kind], *ctxs])


def valid_frames() -> dict[str, bytes]:
    """The smallest frame of each representation and context combination the encoder considers, then
    a few special cases."""
    best: dict[str, tuple[str, bytes]] = {}
    for name, (x, axis) in tensors().items():
        for bits in (8, 4, 2, 1):
            p = prepare(x, bits, axis)
            blog = _block_log2(9, p.q.size)
            for cand in candidates(p.info, 9, blog):
                key = shape_of(cand)
                blob = encode_prepared(p, cand, blog)
                if key not in best or len(blob) < len(best[key][1]):
                    best[key] = (f"{key}-{name}-b{bits}", blob)
    out = dict(best.values())
    # what the cost model does not pick on these tensors: both context models at once, 2 symbols per
    # context step (packed), 14-bit probabilities (the decoder's wide tables), many small blocks
    relu, _ = tensors()["relu"]
    group = (np.arange(8) % 3).astype(np.uint8)
    both = ContextSpec(channels=8, inner=576, group=group, nb_dist=48, nbuckets=4, nb_ref=0)
    packed = ContextSpec(channels=8, inner=576, mult=2, group=group)
    nb = ContextSpec(nb_dist=32, nbuckets=2)
    special = [
        ("dense-groups+nb-relu-b8", 8, Candidate(DENSE, 0, [StreamPlan(RANS, both)]), 16),
        ("packed-groups-mult2-relu-b4", 4, Candidate(PACKED, 4, [StreamPlan(RANS, packed)]), 16),
        (
            "dense-order0-pb14-blocks256-relu-b4",
            4,
            Candidate(DENSE, 0, [StreamPlan(RANS, prob_bits=14)]),
            8,
        ),
        (
            "dense-nb-pb15-blocks1024-relu-b4",
            4,
            Candidate(DENSE, 0, [StreamPlan(RANS, nb, 15)]),
            10,
        ),
    ]
    for name, bits, cand, blog in special:
        out[name] = encode_prepared(prepare(relu, bits, 1), cand, blog)
    rng = np.random.default_rng(5)
    small = rng.normal(size=(3, 50)).astype(np.float32)
    p = prepare(small, 6)
    out["stored-b6"] = encode_prepared(p, Candidate(DENSE, 0, [StreamPlan(STORED)]))
    out["f16-b3"] = codec.encode(small.astype(np.float16), bits=3)
    out["f64-b5-axis0"] = codec.encode(small.astype(np.float64), bits=5, axis=0)
    out["scalar"] = codec.encode(np.float32(1.5))
    out["empty"] = codec.encode(np.zeros((0, 4), np.float32))
    out["zeros-b7"] = codec.encode(np.zeros((16, 16), np.float32), bits=7)
    return out


def malformed_frames(valid: dict[str, bytes]) -> dict[str, bytes]:
    base = next(v for k, v in valid.items() if k.startswith("dense-order0-"))
    body = bytearray(base[:-4])
    bumped = bytearray(body)
    bumped[4] += 1
    groups = next(v for k, v in valid.items() if k.startswith("dense-groups-"))
    forged = bytearray(groups[:-4])
    # the first stream's context channel count (after the fixed header, shape, scales, zeros, nnz and
    # stream count, the coding byte, prob_bits and block_log2), set to zero with channel groups left on
    ndim = forged[8]
    nq = struct.unpack_from("<I", forged, 13 + 4 * ndim)[0]
    at = 13 + 4 * ndim + 4 + 5 * nq + 5 + 3
    forged[at : at + 4] = struct.pack("<I", 0)
    return {
        "bad-truncated": base[: len(base) // 2],
        "bad-checksum": base[:-1] + bytes([base[-1] ^ 0x40]),
        "bad-version": reseal(bytes(bumped)),
        "bad-shape-lie": reseal(bytes(body[:13]) + struct.pack("<I", 2**31) + bytes(body[17:])),
        "bad-zero-channels-with-groups": reseal(bytes(forged)),
        # a libFuzzer finding (CI, Dec 2026): no elements, but a shape numpy cannot make an array of
        "bad-empty-huge-shape": reseal(_empty_with_shape(valid["empty"], (2181038083, 1476395008, 0))),
    }


def _empty_with_shape(empty: bytes, shape: tuple[int, ...]) -> bytes:
    """The body of an empty frame (axis -1) with ``shape`` in place of its own."""
    body = bytearray(empty[:-4])
    ndim = body[8]
    body[8] = len(shape)
    body[13 : 13 + 4 * ndim] = struct.pack(f"<{len(shape)}I", *shape)
    return bytes(body)


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    for old in CORPUS.glob("*.frame"):
        old.unlink()
    valid = valid_frames()
    frames = {**valid, **malformed_frames(valid)}
    for name, blob in sorted(frames.items()):
        (CORPUS / f"{name}.frame").write_bytes(blob)
    total = sum(len(b) for b in frames.values())
    print(f"{len(frames)} frames, {total} bytes in {CORPUS}")


if __name__ == "__main__":
    main()
