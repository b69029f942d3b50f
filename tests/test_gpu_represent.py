"""codec.gpu's representation kernels (undoing and building dense, packed, delta, delta-packed,
delta-nibble and sparse) and the whole-frame device decode against the CPU codec, without a GPU.

Simulator tests run in a subprocess with NUMBA_ENABLE_CUDASIM=1 and tests/gpu_sim_shim.py: this file is
also the worker (``python tests/test_gpu_represent.py GROUP``), printing one JSON result per case. Symbols
and streams must equal the CPU's byte for byte, decoded frames ``codec.decode``'s array bit for bit;
inconsistent streams must raise CodecError, never an index error or a hang. Compile tests build PTX for
every kernel signature at sm_80 and sm_90 and run ``ptxas -v`` on it. Inputs are tiny: the simulator runs
about a thousand element-steps a second."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from gpu_harness import (
    assert_all,
    assert_assembles,
    compile_ptx_files,
    kernel_jobs,
    mutant_kernel,
    needs_numba,
    ptxas_path,
    run_worker,
    worker_main,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SIM = {"threads": 32, "max_blocks": 2}
"""Launch sizes for the simulator: one-warp CTAs (the scans then have several levels on small inputs),
at most two per grid-stride launch (its CTAs cost more than their steps)."""

# (name, kind, param, n, bits, values, channels, launch options)
CASES = [
    ("dense_empty", "dense", 0, 0, 8, "uniform", 1, {}),
    ("dense_one", "dense", 0, 1, 8, "uniform", 1, {}),
    ("dense_37", "dense", 0, 37, 5, "uniform", 1, {}),
    ("packed1_empty", "packed", 1, 0, 1, "uniform", 1, {}),
    ("packed1_one", "packed", 1, 1, 1, "uniform", 1, {}),
    ("packed1_partial_byte", "packed", 1, 13, 1, "uniform", 1, {}),
    ("packed2_partial_byte", "packed", 2, 39, 2, "uniform", 1, {}),
    ("packed4_b3_partial_byte", "packed", 4, 41, 3, "uniform", 1, {}),
    ("packed4_b4_whole_bytes", "packed", 4, 64, 4, "uniform", 1, {}),
    ("delta_empty", "delta", 1, 0, 8, "smooth", 1, {}),
    ("delta_one", "delta", 1, 1, 8, "smooth", 1, {}),
    (
        "delta_d1_multilevel_scan",
        "delta",
        1,
        150,
        8,
        "uniform",
        1,
        {"rows_per_tile": 1, "items": 1},
    ),
    (
        "delta_d1_two_warp_scan",
        "delta",
        1,
        150,
        8,
        "uniform",
        1,
        {"rows_per_tile": 1, "threads": 64, "items": 2},
    ),
    ("delta_d1_tiles_of_4", "delta", 1, 101, 6, "smooth", 1, {"rows_per_tile": 4}),
    ("delta_d1_default_tiling", "delta", 1, 90, 8, "uniform", 1, {}),
    ("delta_d7_b3", "delta", 7, 75, 3, "uniform", 1, {"rows_per_tile": 2}),
    ("delta_d16_partial_row", "delta", 16, 70, 8, "smooth", 1, {"rows_per_tile": 1}),
    ("delta_distance_over_n", "delta", 50, 20, 8, "uniform", 1, {}),
    ("delta_distance_n", "delta", 20, 20, 4, "uniform", 1, {"rows_per_tile": 1}),
    ("delta_packed_b1", "delta-packed", 1, 45, 1, "uniform", 1, {"rows_per_tile": 3}),
    ("delta_packed_b2_d5", "delta-packed", 5, 38, 2, "smooth", 1, {}),
    ("delta_packed_b3", "delta-packed", 3, 29, 3, "uniform", 1, {"rows_per_tile": 2}),
    ("delta_packed_b4_one", "delta-packed", 1, 1, 4, "uniform", 1, {}),
    ("nibble_b8_smooth", "delta-nibble", 1, 81, 8, "smooth", 1, {"chunk": 2, "rows_per_tile": 2}),
    ("nibble_b5_d4", "delta-nibble", 4, 40, 5, "uniform", 1, {"chunk": 4}),
    ("nibble_b8_no_escapes", "delta-nibble", 1, 33, 8, "constant", 1, {"chunk": 6}),
    ("nibble_b8_all_escapes", "delta-nibble", 1, 30, 8, "jumps", 1, {"chunk": 2}),
    ("nibble_b6_one", "delta-nibble", 1, 1, 6, "uniform", 1, {}),
    ("nibble_empty", "delta-nibble", 1, 0, 8, "uniform", 1, {}),
    ("sparse_empty", "sparse", 8, 0, 8, "relu", 1, {}),
    ("sparse_one_zero", "sparse", 8, 1, 8, "zeros", 1, {}),
    ("sparse_one_nonzero", "sparse", 255, 1, 8, "uniform", 1, {}),
    ("sparse_relu_w7", "sparse", 7, 60, 8, "relu", 1, {}),
    ("sparse_width1", "sparse", 1, 20, 4, "relu", 1, {}),
    ("sparse_w255_partial_row", "sparse", 255, 70, 8, "relu", 1, {}),
    ("sparse_all_zero", "sparse", 9, 40, 8, "zeros", 1, {}),
    ("sparse_all_nonzero", "sparse", 9, 40, 8, "nonzero", 1, {}),
    ("sparse_four_warps", "sparse", 3, 60, 8, "relu", 1, {"threads": 128, "items": 1}),
    ("nibble_multilevel_scan", "delta-nibble", 1, 90, 8, "smooth", 1, {"chunk": 2, "items": 1}),
    ("sparse_per_channel_zero", "sparse", 6, 48, 4, "relu", 4, {}),
]
DEFAULT_ITEMS = 8  # codec.gpu.represent.SCAN_ITEMS; "items" in a case's options lowers it
KINDS = {"dense": 1, "packed": 2, "sparse": 3, "delta": 4, "delta-packed": 5, "delta-nibble": 6}


# ---------------------------------------------------------------- worker (runs in the subprocess)


def _symbols(n: int, bits: int, values: str, z, seed: int):
    """``n`` test symbols of ``bits`` bits; ``z``: each element's zero point."""
    import numpy as np

    rng = np.random.default_rng(seed)
    top = (1 << bits) - 1
    if values == "uniform":
        return rng.integers(0, top + 1, n).astype(np.uint8)
    if values == "smooth":  # a random walk: small residuals, now and then a jump
        steps = rng.integers(-3, 4, n) + np.where(rng.random(n) < 0.1, 40, 0)
        return (np.cumsum(steps) % (top + 1)).astype(np.uint8)
    if values == "constant":
        return np.full(n, top // 3, np.uint8)
    if values == "jumps":  # every residual at least 8 away from zero
        return ((np.arange(n) * 100) % (top + 1)).astype(np.uint8)
    if values == "zeros":
        return z.astype(np.uint8)
    if values == "nonzero":
        return ((z.astype(np.int64) + 1 + rng.integers(0, top, n)) % (top + 1)).astype(np.uint8)
    # relu: about two thirds at the zero point
    v = rng.integers(0, top + 1, n)
    return np.where(rng.random(n) < 0.65, z, v).astype(np.uint8)


def _case(n: int, bits: int, values: str, channels: int, seed: int):
    """(symbols, Layout): per-channel zero points as ``outer=2 x channels x inner`` when channels > 1."""
    import numpy as np

    from codec.represent import Layout

    rng = np.random.default_rng(seed + 100)
    zero = rng.integers(0, 1 << bits, channels).astype(np.uint8)
    inner = n // (2 * channels) if channels > 1 else max(1, n)
    z = zero[(np.arange(n) // inner) % channels]
    return _symbols(n, bits, values, z, seed), Layout(zero, channels, inner)


def _outcome(fn):
    """('ok', hex of the outputs) / ('CodecError', message) / ('crash', repr) of a call."""
    from codec import CodecError

    try:
        out = fn()
    except CodecError as exc:
        return ["CodecError", str(exc)]
    except Exception as exc:  # an indexing error, a broken barrier, ...: never acceptable
        return ["crash", f"{type(exc).__name__}: {exc}"[:300]]
    if isinstance(out, list):
        return ["ok", [a.tobytes().hex() for a in out]]
    return ["ok", out.tobytes().hex()]


def _work_merge_and_split() -> dict:
    """Every representation: the GPU undoes the CPU's streams to the CPU's symbols, and builds the CPU's
    streams from the symbols."""
    from codec import represent as cpu
    from codec.gpu import represent as gpu

    res = {}
    for seed, (name, kind_name, param, n, bits, values, channels, opts) in enumerate(CASES):
        kind = KINDS[kind_name]
        q, lay = _case(n, bits, values, channels, seed)
        streams = [s.copy() for s in cpu.split(q, kind, param, lay, bits)]
        want = cpu.merge(streams, kind, param, n, lay, bits)
        assert want.tobytes() == q.tobytes(), name
        kw = {**SIM, **opts}
        gpu.SCAN_ITEMS = kw.pop("items", DEFAULT_ITEMS)
        got = _outcome(lambda: gpu.merge(streams, kind, param, n, lay, bits, **kw))  # noqa: B023
        res[f"{name}/merge"] = got == ["ok", q.tobytes().hex()] or got
        kw.pop("rows_per_tile", None)
        got = _outcome(lambda: gpu.split(q, kind, param, lay, bits, **kw))  # noqa: B023
        res[f"{name}/split"] = got == ["ok", [s.tobytes().hex() for s in streams]] or got
    gpu.SCAN_ITEMS = DEFAULT_ITEMS
    return res


def _sparse_streams():
    import numpy as np

    from codec import represent as cpu
    from codec.represent import Layout

    lay = Layout(np.array([3], np.uint8), 1, 1)
    q = np.full(30, 3, np.uint8)
    q[[0, 4, 9, 10, 17, 23, 29]] = [1, 9, 200, 7, 0, 5, 6]
    return q, lay, [s.copy() for s in cpu.split(q, cpu.SPARSE, 10, lay, 8)]


def _work_corrupt() -> dict:
    """Inconsistent streams: the GPU raises the CPU's CodecError (never an index error or a hang)."""
    import numpy as np

    from codec import represent as cpu
    from codec.gpu import represent as gpu

    res = {}
    q, lay, (counts, gaps, vals) = _sparse_streams()
    bad = {}
    c = counts.copy()
    c[0] = 11  # more than the row's 10 columns
    bad["count_over_row"] = [c, gaps, vals]
    c = counts.copy()
    c[1] += 1  # one more than the non-zeros
    bad["counts_over_nnz"] = [c, gaps, vals]
    c = counts.copy()
    c[2] -= 1  # one fewer
    bad["counts_under_nnz"] = [c, gaps, vals]
    c = counts.copy()
    c[0], c[2] = c[0] + 1, c[2] - 1  # the same total, a row reading its neighbour's entries
    bad["counts_shifted"] = [c, gaps, vals]
    g = gaps.copy()
    g[1] = 250  # a column far past its row
    bad["gap_past_row"] = [counts, g, vals]
    g = gaps.copy()
    g[-1] += 1  # the last column of the last row one past it
    bad["gap_one_past_last_column"] = [counts, g, vals]
    c = counts.copy()
    c[:] = 255
    bad["counts_all_255"] = [c, gaps, vals]
    for label, streams in bad.items():
        cpu_out = _outcome(lambda: cpu.merge(streams, cpu.SPARSE, 10, q.size, lay, 8))  # noqa: B023
        got = _outcome(lambda: gpu.merge(streams, cpu.SPARSE, 10, q.size, lay, 8, **SIM))  # noqa: B023
        res[f"sparse_{label}"] = (cpu_out[0] == "CodecError" and got == cpu_out) or {
            "cpu": cpu_out,
            "gpu": got,
        }
    # delta-nibble: escape nibbles against the escape stream
    steps = np.random.default_rng(7).integers(-3, 4, 40)
    steps[[5, 17, 30]] = 60  # three escapes
    q = (np.cumsum(steps) % 256).astype(np.uint8)
    pairs, esc = (s.copy() for s in cpu.split(q, cpu.DELTA_NIBBLE, 1, lay, 8))
    first_small = next(k for k in range(40) if (pairs[k >> 1] >> ((k & 1) * 4)) & 15 != 15)
    more = pairs.copy()
    more[first_small >> 1] |= 15 << ((first_small & 1) * 4)  # one more escape nibble
    first_esc = next(k for k in range(40) if (pairs[k >> 1] >> ((k & 1) * 4)) & 15 == 15)
    fewer = pairs.copy()
    fewer[first_esc >> 1] &= ~(15 << ((first_esc & 1) * 4)) & 0xFF  # one fewer
    nib = {
        "escape_nibble_added": [more, esc],
        "escape_nibble_removed": [fewer, esc],
        "all_escape_nibbles": [np.full(20, 0xFF, np.uint8), esc],
    }
    for label, streams in nib.items():
        cpu_out = _outcome(lambda: cpu.merge(streams, cpu.DELTA_NIBBLE, 1, 40, lay, 8))  # noqa: B023
        got = _outcome(lambda: gpu.merge(streams, cpu.DELTA_NIBBLE, 1, 40, lay, 8, **SIM, chunk=4))  # noqa: B023
        res[f"nibble_{label}"] = (cpu_out[0] == "CodecError" and got == cpu_out) or {
            "cpu": cpu_out,
            "gpu": got,
        }
    # stream lengths that do not fit the representation, and parameters off the wire
    for label, (streams, kind, param, n, bits) in {
        "packed_short": ([np.zeros(3, np.uint8)], cpu.PACKED, 2, 13, 2),
        "sparse_counts_short": ([np.zeros(2, np.uint8), gaps, vals], cpu.SPARSE, 10, 30, 8),
        "nibble_pairs_short": ([np.zeros(3, np.uint8), esc], cpu.DELTA_NIBBLE, 1, 40, 8),
        "delta_distance_zero": ([np.zeros(5, np.uint8)], cpu.DELTA, 0, 5, 8),
        "packed_slot_3": ([np.zeros(5, np.uint8)], cpu.PACKED, 3, 13, 2),
        "sparse_width_256": ([np.zeros(1, np.uint8), gaps, vals], cpu.SPARSE, 256, 30, 8),
        "nibble_4_bits": ([np.zeros(3, np.uint8), esc], cpu.DELTA_NIBBLE, 1, 6, 4),
    }.items():
        got = _outcome(lambda: gpu.merge(streams, kind, param, n, lay, bits, **SIM))  # noqa: B023
        res[f"rejected_{label}"] = got[0] == "CodecError" or got
    return res


def _candidate(kind: str, param: int, codings: list[str]):
    from codec import costmodel

    plans = [
        costmodel.StreamPlan(costmodel.RANS if c == "rans" else costmodel.STORED) for c in codings
    ]
    return costmodel.Candidate(KINDS[kind], param, plans)


def _frame(x, kind: str, param: int, codings: list[str], bits: int, axis=None, blog: int = 6):
    """A frame of ``x`` in one representation, each stream order-0 rANS or stored."""
    from codec import api

    p = api.prepare(x, bits=bits, axis=axis)
    return api.encode_prepared(p, _candidate(kind, param, codings), blog)


def _frames() -> list:
    import numpy as np

    rng = np.random.default_rng(11)
    relu = np.maximum(rng.normal(size=(2, 3, 4, 5)), 0).astype(np.float32)
    walk = np.cumsum(rng.normal(size=(1, 2, 6, 7)) * 0.3, axis=-1).astype(np.float32)
    out = [
        ("dense_rans_b8", _frame(relu, "dense", 0, ["rans"], 8)),
        ("dense_stored_per_channel_b5", _frame(relu, "dense", 0, ["stored"], 5, axis=1)),
        ("dense_f16", _frame(walk.astype(np.float16), "dense", 0, ["rans"], 6)),
        ("dense_empty", _frame(np.zeros((0, 4), np.float32), "dense", 0, ["rans"], 8)),
        ("dense_one_element", _frame(np.array([1.5], np.float32), "dense", 0, ["rans"], 8)),
        ("packed1_rans", _frame(relu, "packed", 1, ["rans"], 1)),
        ("packed2_stored", _frame(relu, "packed", 2, ["stored"], 2)),
        ("packed4_rans_per_channel", _frame(relu, "packed", 4, ["rans"], 3, axis=1)),
        ("delta_d1_rans_b8", _frame(walk, "delta", 1, ["rans"], 8, blog=5)),
        ("delta_d7_stored_b6", _frame(walk, "delta", 7, ["stored"], 6)),
        ("delta_packed_d1_b4", _frame(walk, "delta-packed", 1, ["rans"], 4)),
        ("delta_packed_d7_b2_stored", _frame(walk, "delta-packed", 7, ["stored"], 2)),
        ("delta_nibble_rans_stored", _frame(walk, "delta-nibble", 1, ["rans", "stored"], 8)),
        ("delta_nibble_rans_rans_b6", _frame(walk, "delta-nibble", 7, ["rans", "rans"], 6)),
        ("sparse_rans_x3", _frame(relu, "sparse", 5, ["rans", "rans", "rans"], 8)),
        ("sparse_stored_per_channel", _frame(relu, "sparse", 20, ["stored"] * 3, 4, axis=1)),
        ("sparse_all_zero", _frame(np.zeros((3, 10), np.float32), "sparse", 10, ["rans"] * 3, 8)),
        ("sparse_w255_rans", _frame(relu, "sparse", 255, ["rans", "stored", "rans"], 2)),
    ]
    return out


GOLDEN = [
    "packed1-order0.small-b1",
    "packed2-stored.small-b2",
    "sparse-stored-stored-stored.small-b1",
    "sparse-stored-stored-order0.small-b2",
    "dense-order0.signed-b6-f16",
]


def _work_frames() -> dict:
    """Whole frames decoded on the device (streams, representation, dequantize) equal codec.decode bit
    for bit, context-modelled frames included."""
    import codec
    from codec.gpu import frame as gpu_frame

    res = {}
    golden = [(f"golden_{g}", (HERE / "golden" / f"{g}.frame").read_bytes()) for g in GOLDEN]
    for name, blob in _frames() + golden:
        want = codec.decode(blob)
        arrays = []
        got = _outcome(lambda: arrays.append(gpu_frame.decode(blob, **SIM)) or arrays[0])  # noqa: B023
        ok = got == ["ok", want.tobytes().hex()]
        ok = ok and (arrays[0].dtype, arrays[0].shape) == (want.dtype, want.shape)
        res[name] = ok or {"gpu": got, "cpu": [str(want.dtype), want.shape, want.tobytes().hex()]}
    # into a given device vector (as a torch CUDA tensor would be passed), and a wrong one refused
    import numpy as np
    from numba import cuda

    blob = _frames()[0][1]
    want = codec.decode(blob)
    out = cuda.device_array(want.size, np.float32)
    got, _ = gpu_frame.decode_device(blob, out=out, **SIM)
    res["into_given_vector"] = (
        got is out and out.copy_to_host().tobytes() == want.tobytes()
    ) or "differs"
    try:
        gpu_frame.decode_device(blob, out=cuda.device_array(want.size + 1, np.float32))
        res["wrong_vector_refused"] = "accepted"
    except ValueError as exc:
        res["wrong_vector_refused"] = "float32 device vector" in str(exc) or str(exc)
    ctx = (HERE / "golden" / "dense-nb2.relu-b8.frame").read_bytes()  # neighbour-context tables
    want = codec.decode(ctx)
    got = _outcome(lambda: gpu_frame.decode(ctx, **SIM))
    res["context_frame"] = got == ["ok", want.tobytes().hex()] or got
    return res


def _work_corrupt_frames() -> dict:
    """Frames whose streams were changed and whose checksum was then rewritten (so the header and CRC
    checks pass): the device decode does what codec.decode does (same array, or CodecError), never
    crashes."""
    import numpy as np

    import codec
    from codec import api, frame
    from codec.gpu import frame as gpu_frame

    rng = np.random.default_rng(5)
    relu = np.maximum(rng.normal(size=(2, 30)), 0).astype(np.float32)
    walk = np.cumsum(rng.normal(size=(2, 30)), axis=-1).astype(np.float32)
    bases = {
        "sparse_stored": _frame(relu, "sparse", 6, ["stored"] * 3, 8),
        "sparse_rans": _frame(relu, "sparse", 6, ["rans", "rans", "stored"], 8),
        "nibble": _frame(walk, "delta-nibble", 1, ["stored", "stored"], 8),
        "delta_rans": _frame(walk, "delta", 1, ["rans"], 8, blog=5),
    }
    res = {}
    errors = 0
    for base, blob in bases.items():
        for k in range(4):
            f = frame.read(blob, api.MAX_ELEMENTS)
            s = f.streams[k % len(f.streams)]
            p = bytearray(s.payload)
            if not p:
                continue
            pos = int(rng.integers(0, len(p)))
            p[pos] ^= 1 << int(rng.integers(0, 8))
            s.payload = bytes(p)
            for other in f.streams:
                other.payload = bytes(other.payload)
            bad = frame.write(f)
            cpu = _outcome(lambda: codec.decode(bad))  # noqa: B023
            got = _outcome(lambda: gpu_frame.decode(bad, **SIM))  # noqa: B023
            errors += cpu[0] == "CodecError"
            same = got == cpu if cpu[0] == "ok" else got[0] == cpu[0]
            res[f"{base}_flip{k}"] = same or {"cpu": cpu, "gpu": got}
    res["some_mutants_are_errors"] = errors >= 4 or errors
    return res


def _work_encode() -> dict:
    """Whole frames encoded on the device for a given candidate (quantize, streams, counts, rANS) are
    the CPU encoder's bytes for that candidate."""
    import numpy as np

    from codec import api
    from codec.gpu import frame as gpu_frame

    rng = np.random.default_rng(13)
    relu = np.maximum(rng.normal(size=(2, 3, 4, 5)), 0).astype(np.float32)
    walk = np.cumsum(rng.normal(size=(1, 2, 6, 7)) * 0.3, axis=-1).astype(np.float32)
    cases = [
        ("dense_rans_b8", relu, 8, None, None, ("dense", 0, ["rans"])),
        ("dense_stored_per_channel", relu, 5, 1, None, ("dense", 0, ["stored"])),
        ("dense_f16_b6", walk.astype(np.float16), 6, None, None, ("dense", 0, ["rans"])),
        ("dense_empty", np.zeros((0, 3), np.float32), 8, None, None, ("dense", 0, ["rans"])),
        ("packed1", relu, 1, None, None, ("packed", 1, ["rans"])),
        ("packed4_b3_per_channel_mse", relu, 3, 1, "mse", ("packed", 4, ["rans"])),
        ("delta_d1", walk, 8, None, None, ("delta", 1, ["rans"])),
        ("delta_packed_d7_b2", walk, 2, None, None, ("delta-packed", 7, ["rans"])),
        ("delta_nibble", walk, 8, None, None, ("delta-nibble", 1, ["rans", "rans"])),
        ("delta_nibble_b6_stored", walk, 6, None, None, ("delta-nibble", 7, ["rans", "stored"])),
        ("sparse_rans_x3", relu, 8, None, None, ("sparse", 5, ["rans", "rans", "rans"])),
        ("sparse_per_channel", relu, 4, 1, None, ("sparse", 20, ["stored", "rans", "rans"])),
        (
            "sparse_all_zero",
            np.zeros((3, 10), np.float32),
            8,
            None,
            None,
            ("sparse", 10, ["rans"] * 3),
        ),
    ]
    res = {}
    for name, x, bits, axis, clip, cand in cases:
        c = _candidate(*cand)
        want = api.encode_prepared(api.prepare(x, bits, axis, clip=clip), c, 6)
        got = _outcome(
            lambda: np.frombuffer(  # noqa: B023
                gpu_frame.encode_candidate(x, c, bits, axis, clip=clip, block_log2=6, **SIM),  # noqa: B023
                np.uint8,
            )
        )
        res[name] = got == ["ok", want.hex()] or {"gpu": got, "cpu": want.hex()}
    return res


def _mutant_kernel(name: str, old: str, new: str):
    return mutant_kernel("codec.gpu.represent_kernels", name, old, new)


MUTANTS = {
    # label: (kernel, site, mutation, the input that must catch it)
    "scan_inclusive": (
        "scan_tiles",
        "vals[i] = run & mask",
        "vals[i] = (run + v) & mask",
        "delta",
    ),
    "scan_warp_base_off_by_one": (
        "scan_tiles",
        "incl += wsum[warp - 1]",
        "incl += wsum[warp]",
        "delta",
    ),
    "scan_add_wrong_tile": (
        "scan_add",
        "+ offsets[i // tile])",
        "+ offsets[(i + 1) // tile])",
        "delta",
    ),
    "scan_thread_base_off_by_one": ("scan_tiles", "run = incl - own", "run = incl", "sparse"),
    "unpack_shift_off_by_one": ("unpack", "((i % k) * slot)", "((i % k + 1) * slot)", "packed"),
    "delta_unmasked_head_masked": (
        "delta_apply",
        "np.uint8(r if i < d else acc & mask)",
        "np.uint8(acc & mask)",
        "delta_b6_head",
    ),
    "csr_gap_off_by_one": (
        "csr_scatter",
        "col += I64(gaps[j]) + 1",
        "col += I64(gaps[j])",
        "sparse",
    ),
    "nibble_bias": (
        "nibble_apply",
        "np.uint8((nib - 7) & mask)",
        "np.uint8((nib - 8) & mask)",
        "nibble",
    ),
}


def _work_mutant_kernels() -> dict:
    """Deliberately wrong copies of the kernels are caught by the same comparisons; the originals pass."""
    import numpy as np

    from codec import represent as cpu
    from codec.gpu import represent as gpu
    from codec.gpu import represent_kernels as K
    from codec.represent import Layout

    rng = np.random.default_rng(9)
    lay = Layout(np.array([0], np.uint8), 1, 1)
    walk = (np.cumsum(rng.integers(-3, 4, 70)) % 256).astype(np.uint8)
    walk[0] = 200  # above the 6-bit mask: the unmasked head matters
    small = rng.integers(0, 4, 70).astype(np.uint8)
    relu = np.where(rng.random(70) < 0.6, 0, rng.integers(1, 256, 70)).astype(np.uint8)
    inputs = {
        # scans of two warps and two levels
        "delta": (walk, cpu.DELTA, 1, 8, {"rows_per_tile": 1, "threads": 64, "items": 1}),
        "delta_b6_head": (walk, cpu.DELTA, 3, 6, {}),
        "packed": (small, cpu.PACKED, 2, 2, {}),
        "sparse": (relu, cpu.SPARSE, 9, 8, {}),
        "nibble": (walk, cpu.DELTA_NIBBLE, 1, 8, {"chunk": 4}),
    }
    streams = {
        k: [s.copy() for s in cpu.split(q, kind, p, lay, b)]
        for k, (q, kind, p, b, _) in inputs.items()
    }

    want = {
        k: cpu.merge(streams[k], kind, p, q.size, lay, b).tobytes().hex()
        for k, (q, kind, p, b, _) in inputs.items()
    }

    def run(key):
        q, kind, p, b, opts = inputs[key]
        kw = {**SIM, **opts}
        gpu.SCAN_ITEMS = kw.pop("items", DEFAULT_ITEMS)
        return _outcome(lambda: gpu.merge(streams[key], kind, p, q.size, lay, b, **kw))

    res = {}
    for key in inputs:
        res[f"original_{key}"] = run(key) == ["ok", want[key]]
    for label, (kernel, old, new, key) in MUTANTS.items():
        original = getattr(K, kernel)
        setattr(K, kernel, _mutant_kernel(kernel, old, new))
        try:
            res[label] = run(key) != ["ok", want[key]] or "mutant matched the CPU"
        finally:
            setattr(K, kernel, original)
    return res


def _work_ptx(major: int, minor: int, outdir: str) -> dict:
    """PTX of every kernel signature for one compute capability, written to ``outdir``."""
    return compile_ptx_files(
        major, minor, outdir, lambda: kernel_jobs("codec.gpu.represent_kernels")
    )


WORK = {
    "merge_and_split": _work_merge_and_split,
    "corrupt": _work_corrupt,
    "frames": _work_frames,
    "corrupt_frames": _work_corrupt_frames,
    "encode": _work_encode,
    "mutant_kernels": _work_mutant_kernels,
}


# ---------------------------------------------------------------- the tests (pytest process)


@needs_numba
@pytest.mark.timeout(150)
def test_simulated_merge_and_split_equal_the_cpu_for_every_representation():
    assert_all(run_worker(__file__, ["merge_and_split"], sim=True, timeout=140))


@needs_numba
@pytest.mark.timeout(120)
def test_simulated_inconsistent_streams_raise_codec_error():
    assert_all(run_worker(__file__, ["corrupt"], sim=True, timeout=110))


@needs_numba
@pytest.mark.timeout(150)
def test_simulated_frames_decode_on_the_device_bit_exact():
    assert_all(run_worker(__file__, ["frames"], sim=True, timeout=140))


@needs_numba
@pytest.mark.timeout(120)
def test_simulated_frames_encode_on_the_device_to_the_cpu_bytes():
    assert_all(run_worker(__file__, ["encode"], sim=True, timeout=110))


@needs_numba
@pytest.mark.timeout(120)
def test_simulated_corrupt_frames_fail_as_on_the_cpu_never_crash():
    assert_all(run_worker(__file__, ["corrupt_frames"], sim=True, timeout=110))


@needs_numba
@pytest.mark.timeout(120)
def test_deliberately_wrong_represent_kernels_are_caught():
    assert_all(run_worker(__file__, ["mutant_kernels"], sim=True, timeout=110))


@needs_numba
@pytest.mark.timeout(150)
@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm_80", "sm_90"])
def test_represent_kernels_compile_to_ptx_without_spills(cc, tmp_path):
    from codec.gpu import represent_kernels as K

    files = run_worker(
        __file__, ["ptx", str(cc[0]), str(cc[1]), str(tmp_path)], sim=False, timeout=140
    )
    assert set(files) == set(K.SIGNATURES)
    for name, path in files.items():
        ptx = Path(path).read_text()
        # integer-only kernels: a float instruction means a signed/unsigned mix was promoted to float64
        assert not re.search(r"\.f(32|64)\b", ptx), (
            f"{name}: floating-point instructions in the PTX"
        )
    ptxas = ptxas_path()
    if ptxas is None:
        pytest.skip(
            "ptxas not found (the CUDA toolkit's nvcc/ptxas are not installed): PTX built, not assembled"
        )
    for name, path in files.items():
        assert_assembles(ptxas, cc, name, path)


if __name__ == "__main__":
    worker_main(sys.argv[1:], WORK, _work_ptx)
