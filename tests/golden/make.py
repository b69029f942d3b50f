"""Golden frames: committed codec frames that pin the bitstream (tests/test_golden.py).

Each golden frame is the encoder's output for a tensor this file generates (integer hashing and float32
arithmetic only, so the same on every machine and NumPy), one per representation (dense, packed at 1, 2
and 4 bits a slot, sparse, delta, delta-packed, delta-nibble) and per stream context (order-0, neighbor
buckets, channel groups, both, stored bytes) and one per level 1..9 of ``codec.encode``; with per-channel
quantization, a clipped range and a float16 input among them. ``manifest.json`` records how each was
made (the candidate, fixed explicitly, or the level), the SHA-256 of its bytes, and the file of its
decoded tensor (``<quantization>.npy``, shared by the frames of one quantization).

The test decodes every frame and compares the tensor bit for bit, and encodes every input again and
compares the bytes' hash: a change of the format, of the encoder's output or of the decoder fails it.

Regenerate them only on purpose (a deliberate format or encoder change, with FRAME_VERSION bumped where
old frames no longer decode), from the repository root::

    python -m tests.golden.make        # or: python tests/golden/make.py

then look at ``git diff --stat tests/golden/`` (which frames changed, and their sizes in manifest.json)
and commit the new files with the reason. A level's frame also changes when the cost model chooses
another candidate; the candidate frames do not depend on the cost model's choices.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):  # run as a script: the repository root holds the codec package
    sys.path.insert(0, str(HERE.parent.parent))

from codec import api, costmodel, frame, represent  # noqa: E402
from codec.contexts import ContextSpec  # noqa: E402

MANIFEST = HERE / "manifest.json"
CANDIDATE_BLOCK_LOG2 = 11  # 2 Ki-symbol blocks: the 4 Ki-element tensors span two blocks or more
CANDIDATE_LEVEL = (
    9  # the level whose candidate list (every context the codec has) the set is drawn from
)

# name -> (shape, seed, ReLU): smooth maps, as a CNN's features are
INPUTS: dict[str, tuple[tuple[int, ...], int, bool]] = {
    "relu": ((1, 16, 16, 16), 1, True),
    "relu8k": ((1, 32, 16, 16), 4, True),  # at 4 bits, packed pairs enough for neighbor contexts
    "small": ((1, 4, 16, 18), 2, True),
    "signed": ((1, 4, 16, 18), 3, False),
}

# quantization -> (input, bits, axis, clip, dtype): each has one decoded tensor
QUANTS: dict[str, tuple[str, int, int | None, str | None, str]] = {
    "relu-b8": ("relu", 8, None, None, "float32"),
    "relu8k-b4-axis1-mse": ("relu8k", 4, 1, "mse", "float32"),
    "small-b2": ("small", 2, None, None, "float32"),
    "small-b1": ("small", 1, None, None, "float32"),
    "signed-b6-f16": ("signed", 6, None, None, "float16"),
}

LEVEL_QUANT = "relu-b8"  # codec.encode at every level


def _uniform(n: int, seed: int) -> np.ndarray:
    """n values in [0, 1) from a splitmix64 hash of (seed, index): exact, the same on every machine."""
    z = np.arange(n, dtype=np.uint64) + np.uint64(seed * 0x9E3779B97F4A7C15 % (1 << 64))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)


def make_input(name: str) -> np.ndarray:
    """The input tensor ``name``: a roughly normal field (four uniforms summed), smoothed along the last
    two axes, shifted and clipped at zero (ReLU) or not."""
    shape, seed, relu = INPUTS[name]
    n = int(np.prod(shape))
    u = [_uniform(n, seed * 4 + k) for k in range(4)]
    x = ((u[0] + u[1]) + (u[2] + u[3]) - np.float32(2.0)).reshape(shape) * np.float32(1.7)
    x = (x + np.roll(x, 1, -1) + np.roll(x, 1, -2)) / np.float32(3.0)
    if relu:
        x = np.maximum(x - np.float32(0.2), np.float32(0.0))
    return x.astype(np.float32)


def quant_input(quant: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The tensor a quantization encodes (in its dtype) and its keyword arguments."""
    name, bits, axis, clip, dtype = QUANTS[quant]
    return make_input(name).astype(dtype), {"bits": bits, "axis": axis, "clip": clip}


def context_name(ctx: ContextSpec) -> str:
    """A context's kind, without its sizes: order0, nb2, nb4, groups, groups+nb2, groups+nb4."""
    parts = (["groups"] if ctx.group is not None else []) + (
        [f"nb{ctx.nbuckets}"] if ctx.nb_dist else []
    )
    return "+".join(parts) or "order0"


def candidate_spec(c: costmodel.Candidate) -> dict[str, Any]:
    """A candidate as JSON (the full context of each stream, so that it is rebuilt without the cost model)."""
    streams = []
    for s in c.streams:
        if s.coding == costmodel.STORED:
            streams.append({"coding": "stored"})
            continue
        ctx = s.ctx
        streams.append(
            {
                "coding": "rans",
                "prob_bits": s.prob_bits,
                "channels": ctx.channels,
                "inner": ctx.inner,
                "mult": ctx.mult,
                "group": None if ctx.group is None else [int(g) for g in ctx.group],
                "nb_dist": ctx.nb_dist,
                "nbuckets": ctx.nbuckets,
                "nb_ref": int(ctx.nb_ref),
            }
        )
    return {"kind": represent.KIND_NAMES[c.kind], "param": c.param, "streams": streams}


def candidate_from_spec(spec: dict[str, Any]) -> costmodel.Candidate:
    kinds = {name: kind for kind, name in represent.KIND_NAMES.items()}
    plans = []
    for s in spec["streams"]:
        if s["coding"] == "stored":
            plans.append(costmodel.StreamPlan(costmodel.STORED))
            continue
        group = None if s["group"] is None else np.array(s["group"], np.uint8)
        ctx = ContextSpec(
            s["channels"], s["inner"], s["mult"], group, s["nb_dist"], s["nbuckets"], s["nb_ref"]
        )
        plans.append(costmodel.StreamPlan(costmodel.RANS, ctx, s["prob_bits"]))
    return costmodel.Candidate(kinds[spec["kind"]], spec["param"], plans)


def signature(c: costmodel.Candidate) -> str:
    """What a golden frame stands for: the representation (packed: its slot) and each stream's context."""
    kind = represent.KIND_NAMES[c.kind] + (f"{c.param}" if c.kind == represent.PACKED else "")
    ctxs = [context_name(s.ctx) if s.coding == costmodel.RANS else "stored" for s in c.streams]
    return f"{kind}-{'-'.join(ctxs)}"


def encode_entry(entry: dict[str, Any]) -> bytes:
    """The encoder's output for a manifest entry, as make() produced it."""
    x, kw = quant_input(entry["quant"])
    if "level" in entry:
        return api.encode(x, level=entry["level"], **kw)
    p = api.prepare(x, **kw)
    return api.encode_prepared(p, candidate_from_spec(entry["candidate"]), entry["block_log2"])


def load_manifest() -> dict[str, Any]:
    return json.loads(MANIFEST.read_text())


def _candidates(p: api.Prepared) -> list[costmodel.Candidate]:
    """The level-9 candidates of a prepared tensor, and a dense (and packed) one for every context option
    the encoder measures (the cost model keeps only the best of them)."""
    out = costmodel.candidates(p.info, CANDIDATE_LEVEL, CANDIDATE_BLOCK_LOG2)
    ref = int(np.argmax(p.info.hist))
    options = costmodel._dense_options(p.info, p.q, CANDIDATE_LEVEL, CANDIDATE_BLOCK_LOG2, 1, ref)
    out += [costmodel.Candidate(represent.DENSE, 0, [plan]) for plan, _ in options]
    slot = represent.pack_slot(p.params.bits)
    if slot is not None:
        packed = represent.pack(p.q, slot)
        ref = int(np.argmax(np.bincount(packed, minlength=256)))
        per = 8 // slot
        options = costmodel._dense_options(
            p.info, packed, CANDIDATE_LEVEL, CANDIDATE_BLOCK_LOG2, per, ref
        )
        out += [costmodel.Candidate(represent.PACKED, slot, [plan]) for plan, _ in options]
    return out


def _entries() -> list[dict[str, Any]]:
    """One entry per signature met first in each quantization's candidates (at least one for each
    quantization), then one per level."""
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for quant in QUANTS:
        x, kw = quant_input(quant)
        p = api.prepare(x, **kw)
        cands = _candidates(p)
        fresh = [c for c in cands if signature(c) not in seen] or cands[:1]
        for c in fresh:
            sig = signature(c)
            if sig in seen and c is not cands[0]:
                continue
            seen.add(sig)
            entries.append(
                {
                    "name": f"{sig}.{quant}",
                    "quant": quant,
                    "candidate": candidate_spec(c),
                    "block_log2": CANDIDATE_BLOCK_LOG2,
                }
            )
    for level in range(costmodel.MIN_LEVEL, costmodel.MAX_LEVEL + 1):
        entries.append(
            {"name": f"level{level}.{LEVEL_QUANT}", "quant": LEVEL_QUANT, "level": level}
        )
    return entries


def make() -> dict[str, Any]:
    """Write the frames, decoded tensors and manifest.json afresh (removing the old frames)."""
    for old in [*HERE.glob("*.frame"), *HERE.glob("*.npy")]:
        old.unlink()
    manifest: dict[str, Any] = {
        "frame_version": int(api._kernels.FRAME_VERSION),
        "decoded": {},
        "entries": [],
    }
    written: dict[str, str] = {}
    for entry in _entries():
        blob = encode_entry(entry)
        info = frame.read(blob, api.MAX_ELEMENTS)
        digest = hashlib.sha256(blob).hexdigest()
        # one file per distinct frame (levels that choose alike share one)
        path = written.setdefault(digest, f"{entry['name']}.frame")
        if not (HERE / path).exists():
            (HERE / path).write_bytes(blob)
        decoded = f"{entry['quant']}.npy"
        if entry["quant"] not in manifest["decoded"]:
            np.save(HERE / decoded, api.decode(blob), allow_pickle=False)
            manifest["decoded"][entry["quant"]] = decoded
        entry |= {
            "frame": path,
            "representation": represent.KIND_NAMES[info.kind],
            "bytes": len(blob),
            "sha256": digest,
        }
        manifest["entries"].append(entry)
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


if __name__ == "__main__":
    m = make()
    total = sum(f.stat().st_size for f in HERE.iterdir() if f.suffix in (".frame", ".npy", ".json"))
    for e in m["entries"]:
        print(f"{e['name']:48} {e['bytes']:6d} B  {e['sha256'][:16]}")
    print(
        f"{len(m['entries'])} frames, {len(m['decoded'])} decoded tensors, {total / 1024:.0f} KiB in all"
    )
