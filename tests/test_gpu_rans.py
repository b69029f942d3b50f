"""codec.gpu's order-0 rANS kernels against the CPU codec, without a GPU.

Simulator tests run in a subprocess with NUMBA_ENABLE_CUDASIM=1 and the warp-intrinsic shim
(tests/gpu_sim_shim.py): this file is also the worker (``python tests/test_gpu_rans.py GROUP``), printing
one JSON result per case. Compile tests build PTX for every kernel signature at sm_80 and sm_90 and run
``ptxas -v`` on it. Inputs are small: the simulator codes about a thousand symbols a second."""

from __future__ import annotations

import re
import subprocess
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

# (name, symbols, block_log2, prob_bits, distribution, warps per CTA)
CASES = [
    ("empty", 0, 16, 12, "skewed", 4),
    ("one_symbol", 1, 16, 12, "skewed", 4),
    ("partial_step", 31, 5, 12, "uniform", 1),
    ("partial_blocks_skewed", 1000, 8, 12, "skewed", 2),
    ("uniform_1k_blocks", 2000, 10, 12, "uniform", 1),
    ("prob_bits_15", 600, 6, 15, "skewed", 2),
    ("prob_bits_8_two", 500, 7, 8, "two", 1),
    ("single_symbol_alphabet", 300, 16, 12, "single", 1),
    ("four_warps_share_tables", 1200, 9, 12, "uniform", 4),
]


# ---------------------------------------------------------------- worker (runs in the subprocess)


def _symbols(n: int, dist: str, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    if dist == "uniform":
        return rng.integers(0, 256, n, dtype=np.uint8)
    if dist == "two":
        return np.where(rng.random(n) < 0.9, 3, 250).astype(np.uint8)
    if dist == "single":
        return np.full(n, 77, np.uint8)
    skew = np.minimum(rng.geometric(0.3, n) - 1, 255)  # mostly small symbols, a long tail
    return ((skew + 128) % 256).astype(np.uint8)


def _stream(n: int, blog: int, pb: int, dist: str, seed: int = 0):
    import numpy as np

    from codec import rans, tables

    sym = _symbols(n, dist, seed)
    counts = np.bincount(sym, minlength=256).astype(np.uint32)
    freqs = tables.normalize(counts, pb)[0]
    return sym, freqs, bytes(rans.encode(sym, freqs, pb, blog))


def _outcome(fn):
    """('ok', output) / ('CodecError', message) / ('crash', repr) of a call."""
    from codec import CodecError

    try:
        out = fn()
    except CodecError as exc:
        return ["CodecError", str(exc)]
    except Exception as exc:  # an indexing error, a broken barrier, ...: never acceptable
        return ["crash", f"{type(exc).__name__}: {exc}"[:300]]
    return ["ok", out.tobytes().hex() if hasattr(out, "tobytes") else bytes(out).hex()]


def _work_decode() -> dict:
    import numpy as np

    from codec.gpu import rans as gpu

    res = {}
    for name, n, blog, pb, dist, warps in CASES:
        sym, freqs, payload = _stream(n, blog, pb, dist)
        got = _outcome(lambda: gpu.decode(payload, n, freqs, pb, blog, warps=warps))  # noqa: B023
        res[name] = got == ["ok", sym.tobytes().hex()] or got
        assert np.asarray(sym).size == n
    return res


def _work_encode() -> dict:
    from codec.gpu import rans as gpu

    res = {}
    for name, n, blog, pb, dist, warps in CASES:
        sym, freqs, payload = _stream(n, blog, pb, dist)
        got = _outcome(lambda: gpu.encode(sym, freqs, pb, blog, warps=warps))  # noqa: B023
        res[name] = got == ["ok", payload.hex()] or got
    return res


def _work_frames() -> dict:
    """Streams of real frames (dense at level 1, sparse at level 3): decoded, and re-encoded to the
    frame's own payload bytes."""
    import numpy as np

    import codec
    from codec import api
    from codec.frame import read
    from codec.gpu import frame as gpu_frame
    from codec.gpu import rans as gpu

    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=(2, 8, 8, 16)), 0).astype(np.float32)
    res = {}
    for level in (1, 3):
        blob = codec.encode(x, bits=8, level=level)
        f = read(blob, api.MAX_ELEMENTS)
        lengths = api.represent.stream_lengths(f.kind, f.param, f.numel, f.nnz, f.bits)
        cpu = [api._decode_stream(s, k) for s, k in zip(f.streams, lengths, strict=True)]
        got = gpu_frame.stream_symbols(blob)
        res[f"level{level}_decode"] = all(
            np.array_equal(a, b) for a, b in zip(cpu, got, strict=True)
        )
        again = [
            gpu.encode(q, s.freqs, s.prob_bits, s.block_log2) == bytes(s.payload)
            for s, q in zip(f.streams, cpu, strict=True)
            if s.coding == api.RANS
        ]
        res[f"level{level}_reencode"] = bool(again) and all(again)
    return res


def _mutants(payload: bytes, head: int, seed: int) -> list[tuple[str, bytes]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    p = bytearray(payload)
    out = [("truncated", bytes(p[:-2])), ("extended", bytes(p + b"\0\0")), ("empty", b"")]
    for k in range(12):
        q = bytearray(p)
        pos = int(rng.integers(0, len(q)))
        q[pos] ^= 1 << int(rng.integers(0, 8))
        out.append((f"bitflip{k}@{pos}", bytes(q)))
    q = bytearray(p)
    q[0:4], q[4:8] = p[4:8], p[0:4]
    out.append(("sizes_swapped", bytes(q)))
    q = bytearray(p)
    q[0:4] = (int.from_bytes(p[0:4], "little") + 2).to_bytes(4, "little")
    q[4:8] = (int.from_bytes(p[4:8], "little") - 2).to_bytes(4, "little")
    out.append(("word_moved_between_blocks", bytes(q)))
    q = bytearray(p)
    q[0:4] = (1 << 31).to_bytes(4, "little")
    out.append(("huge_size", bytes(q)))
    q = bytearray(p)
    q[head + 8 : head + 12] = b"\0\0\0\0"  # lane 2's final state in block 0
    out.append(("state_zeroed", bytes(q)))
    return out


def _work_mutated() -> dict:
    """Corrupt payloads and tables: the GPU decoder must do exactly what the CPU does (almost always a
    CodecError), never crash."""
    import numpy as np

    from codec import rans
    from codec.gpu import rans as gpu

    n, blog, pb = 320, 5, 12
    sym, freqs, payload = _stream(n, blog, pb, "skewed", seed=3)
    res = {}
    errors = 0
    for name, bad in _mutants(payload, 4 * rans.nblocks_for(n, blog), seed=4):
        cpu = _outcome(lambda: rans.decode(bad, n, freqs, pb, blog))  # noqa: B023
        got = _outcome(lambda: gpu.decode(bad, n, freqs, pb, blog, warps=2))  # noqa: B023
        errors += cpu[0] == "CodecError"
        res[name] = got == cpu or {"cpu": cpu, "gpu": got}
    res["most_mutants_are_errors"] = errors >= 12 or errors
    short = freqs.copy()
    short[int(np.argmax(short))] -= 1
    for name, f in (("table_short", short), ("table_empty", np.zeros(256, np.uint16))):
        cpu = _outcome(lambda: rans.decode(payload, n, f, pb, blog))  # noqa: B023
        got = _outcome(lambda: gpu.decode(payload, n, f, pb, blog))  # noqa: B023
        res[name] = (got == cpu and cpu[0] == "CodecError") or {"cpu": cpu, "gpu": got}
    missing = freqs.copy()
    used = int(sym[0])
    other = next(s for s in range(256) if freqs[s] and s != used)
    missing[other] += missing[used]
    missing[used] = 0
    for name, f in (("encode_missing_symbol", missing), ("encode_table_short", short)):
        cpu = _outcome(lambda: rans.encode(sym, f, pb, blog))  # noqa: B023
        got = _outcome(lambda: gpu.encode(sym, f, pb, blog))  # noqa: B023
        res[name] = (got == cpu and cpu[0] == "CodecError") or {"cpu": cpu, "gpu": got}
    return res


# (name, symbols, block_log2, prob_bits, channels, inner, mult, group map, nb_dist, nbuckets, nb_ref, warps)
CTX_CASES = [
    ("groups", 700, 8, 12, 4, 50, 1, (0, 1, 1, 2), 0, 1, 0, 1),
    ("neighbour_4_buckets", 600, 8, 12, 1, 1, 1, None, 64, 4, 128, 2),
    ("groups_and_neighbour_mult2", 640, 7, 12, 3, 40, 2, (1, 0, 1), 32, 2, 100, 1),
    ("prob_bits_15_groups", 300, 16, 15, 2, 30, 1, (0, 1), 0, 1, 0, 1),
]


def _ctx_stream(case, seed: int = 0):
    """Symbols whose distribution follows their channel group (and partly their neighbour), the CPU's
    context tables and payload."""
    import numpy as np

    from codec import _kernels, rans, tables
    from codec.contexts import ContextSpec

    _, n, blog, pb, channels, inner, mult, group, nb_dist, nbuckets, nb_ref, _ = case
    g = None if group is None else np.array(group, np.uint8)
    ctx = ContextSpec(channels, inner, mult, g, nb_dist, nbuckets, nb_ref)
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    gid = np.zeros(n, np.int64) if g is None else g[((i * mult) // inner) % channels].astype(np.int64)
    sym = ((rng.geometric(0.25, n) - 1) * (gid + 1) + 40 * gid + nb_ref) % 256
    if nb_dist:  # runs: often the symbol one distance back
        for k in range(nb_dist, n):
            if rng.random() < 0.5:
                sym[k] = sym[k - nb_dist]
    sym = sym.astype(np.uint8)
    counts = np.zeros((ctx.ntables, 256), np.uint32)
    _kernels.context_histogram(sym, ctx.kernel_spec(), 1 << blog, counts, 1)
    freqs = tables.normalize(counts, pb)
    return sym, freqs, ctx, bytes(rans.encode(sym, freqs, pb, blog, ctx))


def _work_contexts() -> dict:
    """Context-modelled streams (channel groups, neighbour buckets, both): the GPU decodes the CPU's
    payloads to the same symbols; corrupted ones fail as on the CPU; a level-7 frame whose dense stream
    has group tables decodes on the device to the CPU's values."""
    import numpy as np

    import codec
    from codec import rans
    from codec.frame import read
    from codec.gpu import frame as gpu_frame
    from codec.gpu import rans as gpu

    res = {}
    for case in CTX_CASES:
        name, n, blog, pb, warps = case[0], case[1], case[2], case[3], case[-1]
        sym, freqs, ctx, payload = _ctx_stream(case)
        assert ctx.ntables > 1
        got = _outcome(lambda: gpu.decode(payload, n, freqs, pb, blog, ctx, warps=warps))  # noqa: B023
        res[name] = got == ["ok", sym.tobytes().hex()] or got
    case = CTX_CASES[2]
    n, blog, pb = case[1], case[2], case[3]
    sym, freqs, ctx, payload = _ctx_stream(case, seed=1)
    errors = 0
    for name, bad in _mutants(payload, 4 * rans.nblocks_for(n, blog), seed=6)[:10]:
        cpu = _outcome(lambda: rans.decode(bad, n, freqs, pb, blog, ctx))  # noqa: B023
        got = _outcome(lambda: gpu.decode(bad, n, freqs, pb, blog, ctx, warps=1))  # noqa: B023
        errors += cpu[0] == "CodecError"
        res[f"mutated_{name}"] = got == cpu or {"cpu": cpu, "gpu": got}
    res["mutants_are_errors"] = errors >= 6 or errors
    used = freqs.copy()
    used[1] = 0  # a table the symbols use, emptied
    cpu = _outcome(lambda: rans.decode(payload, n, used, pb, blog, ctx))
    got = _outcome(lambda: gpu.decode(payload, n, used, pb, blog, ctx, warps=1))
    res["empty_used_table"] = (got == cpu and cpu[0] == "CodecError") or {"cpu": cpu, "gpu": got}
    # deliberately wrong copies of the context kernel are caught by the same comparison
    from codec.gpu import rans_kernels as K

    sym, freqs, ctx, payload = _ctx_stream(case)
    wrong = {
        "mutant_neighbour_off_by_one": ("out[ob + i - nb_dist]", "out[ob + i - nb_dist + 1]"),
        "mutant_group_of_the_next_symbol": ("(((b0 + i) * mult)", "(((b0 + i + 1) * mult)"),
    }
    original = K.decode_many_blocks
    for label, (old, new) in wrong.items():
        K.decode_many_blocks = _mutant_kernel("decode_many_blocks", old, new)
        try:
            got = _outcome(lambda: gpu.decode(payload, n, freqs, pb, blog, ctx, warps=1))
            res[label] = got != ["ok", sym.tobytes().hex()] or "mutant matched the CPU"
        finally:
            K.decode_many_blocks = original
    rng = np.random.default_rng(2)
    scales = np.geomspace(0.05, 5, 8).reshape(1, -1, 1, 1)
    x = (np.maximum(rng.normal(size=(1, 8, 32, 32)), 0) * scales).astype(np.float32)
    blob = codec.encode(x, bits=8, level=7)  # channels of different scales: group tables
    f = read(blob, 1 << 28)
    res["frame_has_group_tables"] = any(s.coding == 1 and s.ctx.ntables > 1 for s in f.streams)
    y, _ = gpu_frame.decode_device(blob)
    res["frame_decodes_on_device"] = np.array_equal(y.copy_to_host(), codec.decode(blob).reshape(-1))
    return res


def _mutant_kernel(name: str, old: str, new: str):
    return mutant_kernel("codec.gpu.rans_kernels", name, old, new)


def _work_mutant_kernels() -> dict:
    """Deliberately wrong copies of the kernels must be caught by the same comparisons."""
    from codec.gpu import rans as gpu
    from codec.gpu import rans_kernels as K

    n, blog, pb = 400, 7, 12
    sym, freqs, payload = _stream(n, blog, pb, "skewed", seed=5)
    res = {}
    mutants = {
        "decode_renorm_threshold": (
            "decode_blocks",
            "need = active and xn < _L",
            "need = active and xn <= _L",
        ),
        "decode_word_off_by_one": (
            "decode_blocks",
            "refill(buf, words, nw, wi, xn",
            "refill(buf, words, nw, wi + 1, xn",
        ),
        "encode_word_bytes_swapped": (
            "encode_many_blocks",
            "scratch[p] = np.uint8(x & U32(0xFF))",
            "scratch[p] = np.uint8(U32(x >> U32(8)) & U32(0xFF))",
        ),
    }
    for label, (kernel, old, new) in mutants.items():
        original = getattr(K, kernel)
        setattr(K, kernel, _mutant_kernel(kernel, old, new))
        try:
            if kernel == "decode_blocks":
                got = _outcome(lambda: gpu.decode(payload, n, freqs, pb, blog, warps=1))
                res[label] = got != ["ok", sym.tobytes().hex()] or "mutant matched the CPU"
            else:
                got = _outcome(lambda: gpu.encode(sym, freqs, pb, blog, warps=1))
                res[label] = got != ["ok", payload.hex()] or "mutant matched the CPU"
        finally:
            setattr(K, kernel, original)
    # and the unmutated kernels pass on the same input (so the difference is the mutation's)
    res["original_decode"] = _outcome(lambda: gpu.decode(payload, n, freqs, pb, blog, warps=1)) == [
        "ok",
        sym.tobytes().hex(),
    ]
    res["original_encode"] = _outcome(lambda: gpu.encode(sym, freqs, pb, blog, warps=1)) == [
        "ok",
        payload.hex(),
    ]
    return res


def _work_ptx(major: int, minor: int, outdir: str) -> dict:
    """PTX of every kernel signature for one compute capability, written to ``outdir``."""
    return compile_ptx_files(major, minor, outdir, lambda: kernel_jobs("codec.gpu.rans_kernels"))


WORK = {
    "contexts": _work_contexts,
    "decode": _work_decode,
    "encode": _work_encode,
    "frames": _work_frames,
    "mutated": _work_mutated,
    "mutant_kernels": _work_mutant_kernels,
}


# ---------------------------------------------------------------- the tests (pytest process)


@needs_numba
@pytest.mark.timeout(150)
def test_simulated_decode_of_cpu_streams_gives_the_symbols():
    assert_all(run_worker(__file__, ["decode"], sim=True, timeout=140))


@needs_numba
@pytest.mark.timeout(300)
def test_simulated_context_streams_decode_as_on_the_cpu():
    assert_all(run_worker(__file__, ["contexts"], sim=True, timeout=290))


@needs_numba
@pytest.mark.timeout(150)
def test_simulated_encode_writes_the_cpu_bytes():
    assert_all(run_worker(__file__, ["encode"], sim=True, timeout=140))


@needs_numba
@pytest.mark.timeout(120)
def test_simulated_frame_streams_decode_and_reencode_bit_exact():
    assert_all(run_worker(__file__, ["frames"], sim=True, timeout=110))


@needs_numba
@pytest.mark.timeout(150)
def test_simulated_mutated_streams_fail_as_on_the_cpu_never_crash():
    assert_all(run_worker(__file__, ["mutated"], sim=True, timeout=140))


@needs_numba
@pytest.mark.timeout(120)
def test_deliberately_wrong_kernels_are_caught():
    assert_all(run_worker(__file__, ["mutant_kernels"], sim=True, timeout=110))





@needs_numba
@pytest.mark.timeout(120)
@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm_80", "sm_90"])
def test_kernels_compile_to_ptx_without_spills(cc, tmp_path):
    from codec.gpu import rans_kernels as K

    files = run_worker(__file__, ["ptx", str(cc[0]), str(cc[1]), str(tmp_path)], sim=False, timeout=110)
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


def test_codec_imports_without_numba():
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np, codec\n"
        "x = np.ones((4, 4), np.float32)\n"
        "assert np.allclose(codec.decode(codec.encode(x, bits=8)), x)\n"
        "try:\n    import codec.gpu\nexcept ImportError as e:\n    print('gpu:', e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert "codec.gpu needs numba-cuda" in proc.stdout


if __name__ == "__main__":
    worker_main(sys.argv[1:], WORK, _work_ptx)
