"""Decode a few hundred mutated frames on the GPU (run under ``compute-sanitizer`` by
``scripts/gpu_check.sh``): every frame must decode to what the CPU decodes, or raise the CodecError the
CPU raises; any other outcome, or a memory error the sanitizer reports, fails the check.

    compute-sanitizer --error-exitcode 3 python scripts/gpu_sanitize.py [--frames 300] [--seed 0]

Mutations: a flipped bit in a stream payload with the checksum rewritten (so the header and CRC checks
pass and the kernels see the damage), a flipped header or payload byte, and a truncated frame.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import codec  # noqa: E402
from codec import api, frame  # noqa: E402


def base_frames(rng: np.random.Generator) -> list[bytes]:
    """Order-0 frames of several representations, levels and bit widths (the GPU path's frames)."""
    relu = np.maximum(rng.normal(size=(2, 16, 12, 12)), 0).astype(np.float32)
    walk = np.cumsum(rng.normal(size=(1, 8, 40)), axis=-1).astype(np.float32)
    noise = rng.normal(size=(3, 700)).astype(np.float32)
    out = []
    for x in (relu, walk, noise):
        for level, bits in ((1, 8), (3, 4), (2, 2), (1, 6)):
            out.append(codec.encode(x, bits=bits, level=level))
    return out


def mutants(blob: bytes, rng: np.random.Generator) -> Iterator[bytes]:
    """Four damaged copies of ``blob``: a re-checksummed payload bit flip, a raw byte flip, a cut."""
    f = frame.read(blob, api.MAX_ELEMENTS)
    coded = [s for s in f.streams if len(s.payload)]
    if coded:
        s = coded[int(rng.integers(len(coded)))]
        p = bytearray(s.payload)
        p[int(rng.integers(len(p)))] ^= 1 << int(rng.integers(8))
        s.payload = bytes(p)
        for other in f.streams:
            other.payload = bytes(other.payload)
        yield frame.write(f)
    for _ in range(2):
        b = bytearray(blob)
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        yield bytes(b)
    yield blob[: int(rng.integers(1, len(blob)))]


def outcome(fn) -> tuple[str, bytes | str]:
    try:
        y = fn()
    except codec.CodecError as exc:
        return "CodecError", str(exc)
    return "ok", np.asarray(y).tobytes()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=300, help="mutated frames to decode")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    bases = base_frames(rng)
    checked = errors = bad = 0
    while checked < args.frames:
        for blob in mutants(bases[checked % len(bases)], rng):
            cpu = outcome(lambda b=blob: codec.decode(b))
            gpu = outcome(lambda b=blob: codec.api.device_to_host(codec.decode(b, device="cuda")))
            same = gpu == cpu if cpu[0] == "ok" else gpu[0] == cpu[0]
            if not same:
                bad += 1
                print(f"frame {checked}: cpu {cpu[0]}, gpu {gpu[0]}", file=sys.stderr)
            errors += cpu[0] == "CodecError"
            checked += 1
    print(
        f"gpu_sanitize: {checked} mutated frames, {errors} rejected, {bad} differing from the CPU"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
