"""codec.gpu's quantize and dequantize kernels against the CPU codec, without a GPU.

Simulator tests run in a subprocess with NUMBA_ENABLE_CUDASIM=1 and tests/gpu_sim_shim.py (which also
supplies libdevice's round-to-nearest operations): this file is also the worker (``python
tests/test_gpu_quantize.py GROUP``), printing one JSON result per case. Symbols, parameters, histograms and
symbol ranges must equal the CPU's exactly; dequantized floats are compared as uint32 bit patterns.
Compile tests build PTX for every kernel signature at sm_80 and sm_90, run ``ptxas -v`` (no spills) and
look for fused multiply-adds, which the simulator cannot see. Inputs are small: the simulator runs about a
thousand element-steps a second."""

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

# (name, shape, bits, axis, clip, values)
CASES = [
    ("empty", (0,), 8, None, None, "normal"),
    ("empty_per_channel", (0, 3), 4, 1, None, "normal"),
    ("one_element", (1,), 8, None, None, "minus_one_and_a_half"),
    ("one_element_per_channel", (1, 1, 1), 2, 1, None, "minus_one_and_a_half"),
    ("ties_b2", (3, 40), 2, None, None, "ties"),
    ("ties_b4", (3, 40), 4, None, None, "ties"),
    ("ties_b8", (3, 40), 8, None, None, "ties"),
    ("ties_per_channel_b4", (2, 4, 20), 4, 1, None, "ties_per_channel"),
    ("ties_per_channel_b8", (2, 4, 20), 8, 1, None, "ties_per_channel"),
    ("normal_b8", (3, 5, 7, 11), 8, None, None, "normal"),
    ("normal_b2_axis0", (4, 150), 2, 0, None, "normal"),
    ("relu_per_channel_b4", (2, 6, 5, 5), 4, 1, None, "relu"),
    ("negative_only_b4", (300,), 4, None, None, "negative"),
    ("positive_only_per_channel_b8", (40, 3), 8, -1, None, "positive"),
    ("last_axis_inner_one_b4", (10, 3, 7), 4, 2, None, "normal"),
    ("signed_zeros_b4", (200,), 4, None, None, "signed_zeros"),
    ("constant_b4", (5, 30), 4, None, None, "constant"),
    ("constant_zero_per_channel_b2", (3, 40), 2, 0, None, "zeros"),
    ("constant_negative_per_channel_b8", (3, 40), 8, 0, None, "constant_negative"),
    ("tiny_range_min_step_b4", (120,), 4, None, None, "tiny"),
    ("huge_values_b8", (120,), 8, None, None, "huge"),
    ("one_bit", (150,), 1, None, None, "normal"),
    ("clip_mse_b4", (400,), 4, None, "mse", "outliers"),
    ("clip_mse_b8_full_range", (300,), 8, None, "mse", "outliers"),
    ("clip_wmse_b2_per_channel", (3, 100), 2, 0, "wmse", "outliers"),
    ("clip_mse_b4_per_channel", (2, 3, 40), 4, 1, "mse", "outliers"),
    ("clip_wmse_ends_b4_per_channel", (2, 3, 40), 4, 1, "wmse_ends", "outliers"),
    ("clip_wmse_ends_b2", (300,), 2, None, "wmse_ends", "outliers"),
]
SIM = {"threads": 32, "max_blocks": 2}
"""Launch sizes for the simulator: small CTAs, at most two per channel (grid-stride loops do the rest)."""
# the CPU raises CodecError on these; the GPU wrapper must raise the same
ERROR_CASES = [
    ("nan", (50,), 8, None, None, "nan"),
    ("inf_per_channel", (2, 25), 4, 0, None, "inf"),
    ("range_too_wide", (50,), 2, None, None, "too_wide"),
]


# ---------------------------------------------------------------- worker (runs in the subprocess)


def _values(shape: tuple[int, ...], kind: str, seed: int, bits: int):
    """Test tensors. 'ties' builds ranges whose step is a power of two, so x * (1 / scale) lands exactly on
    half-integers, where rounding half to even (not away from zero, not down) decides the symbol."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if kind == "ties":
        # [-4, 11] at 4 bits, [-1, 2] at 2 bits, [-64, 191] at 8 bits: the step is 1 at each
        lo, hi = {2: (-1.0, 2.0), 4: (-4.0, 11.0), 8: (-64.0, 191.0)}[bits]
        half = np.arange(lo, hi) + 0.5  # every half-integer of the range
        x = rng.choice(np.concatenate([half, np.arange(lo, hi + 1)]), n)
        x[:2] = lo, hi
        return x.reshape(shape).astype(np.float32)
    if kind == "ties_per_channel":
        x = np.empty(shape, np.float32)
        qmax = (1 << bits) - 1
        for c in range(shape[1]):
            unit = 2.0 ** (c - 2)  # step 1/4, 1/2, 1, 2
            lo = -float((c + 1) % (qmax + 1))
            grid = (np.arange(lo, lo + qmax) + 0.5) * unit
            v = rng.choice(np.concatenate([grid, -grid]), x[:, c].size)
            v = np.clip(v, lo * unit, (lo + qmax) * unit)
            v[:2] = lo * unit, (lo + qmax) * unit
            x[:, c] = v.reshape(x[:, c].shape)
        return x
    if kind == "minus_one_and_a_half":
        return np.full(shape, -1.5, np.float32)
    if kind == "relu":
        return np.maximum(rng.normal(size=shape), 0).astype(np.float32)
    if kind == "negative":
        return -np.abs(rng.normal(3, 2, size=shape)).astype(np.float32) - 0.25
    if kind == "positive":  # channels on the last axis, of very different widths
        width = np.array([1, 10, 0.01])[: shape[-1]]
        return (np.abs(rng.normal(size=shape)) * width + 0.5).astype(np.float32)
    if kind == "signed_zeros":
        x = rng.normal(size=shape).astype(np.float32)
        x[::3] = -0.0
        x[1::3] = 0.0
        return x
    if kind == "constant":
        return np.full(shape, 3.25, np.float32)
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    if kind == "constant_negative":
        return (
            np.full(shape, -0.7, np.float32) * np.arange(1, shape[0] + 1, dtype=np.float32)[:, None]
        )
    if kind == "tiny":
        return (rng.normal(size=shape) * 1e-39).astype(
            np.float32
        )  # subnormals; the step floors at 1e-30
    if kind == "huge":
        return (rng.normal(size=shape) * 1e30).astype(np.float32)
    if kind == "outliers":
        x = rng.normal(size=shape).astype(np.float32)
        x.reshape(-1)[:: max(1, n // 7)] *= 12
        return x
    x = rng.normal(size=shape).astype(np.float32)
    if kind == "nan":
        x.reshape(-1)[17] = np.nan
    elif kind == "inf":
        x.reshape(-1)[30] = -np.inf
    elif kind == "too_wide":
        x[:2] = -3e38, 3e38
    return x


def _case_input(shape, bits, kind, seed):
    return _values(shape, kind, seed, bits)


def _outcome(fn):
    """('ok', output) / ('CodecError', message) / ('crash', repr) of a call."""
    from codec import CodecError

    try:
        out = fn()
    except CodecError as exc:
        return ["CodecError", str(exc)]
    except Exception as exc:  # an indexing error, a broken barrier, ...: never acceptable
        return ["crash", f"{type(exc).__name__}: {exc}"[:300]]
    return ["ok", out]


def _bits32(a):
    import numpy as np

    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _compare_quantize(x, bits, axis, clip, **kw) -> dict:
    """Every output of the GPU quantizer against the CPU's: mismatches by name (empty: all equal)."""
    import numpy as np

    from codec import quantize as cq
    from codec.gpu import quantize as gq

    q0, p0, h0 = cq.quantize(x, bits, axis, clip=clip)
    _, _, lo0, hi0 = cq.quantize_symbols(x, bits, axis, clip=clip)
    dq = gq.quantize_device(
        gq.cuda.to_device(np.ascontiguousarray(x).reshape(-1)), x.shape, bits, axis, clip, **kw
    )
    q, p, h, lo, hi = gq.to_host(dq, bits, axis, x.ndim)
    bad = {}
    if not np.array_equal(q, q0):
        diff = np.flatnonzero(q != q0)
        bad["symbols"] = f"{diff.size} differ, first at {diff[:3].tolist()}"
    if not np.array_equal(_bits32(p.scale), _bits32(p0.scale)):
        bad["scale"] = [p.scale.tolist(), p0.scale.tolist()]
    if not np.array_equal(p.zero, p0.zero) or p.zero.dtype != p0.zero.dtype:
        bad["zero"] = [p.zero.tolist(), p0.zero.tolist()]
    if p.axis != p0.axis or p.bits != p0.bits:
        bad["params"] = [p.axis, p0.axis, p.bits, p0.bits]
    if not np.array_equal(h, h0):
        bad["histogram"] = "differs"
    if (lo, hi) != (lo0, hi0):
        bad["range"] = [lo, hi, lo0, hi0]
    if q0.size or x.size == 0:
        y0 = cq.dequantize(q0, p0, x.shape)
        y = gq.dequantize(q0, p0, x.shape, **kw)
        if y.shape != y0.shape or not np.array_equal(_bits32(y), _bits32(y0)):
            bad["dequantize"] = "float bits differ"
    return bad


def _work_quantize() -> dict:
    res = {}
    for k, (name, shape, bits, axis, clip, kind) in enumerate(CASES):
        x = _case_input(shape, bits, kind, seed=k)
        got = _outcome(lambda: _compare_quantize(x, bits, axis, clip, **SIM))  # noqa: B023
        res[name] = got == ["ok", {}] or got
    return res


def _work_errors_and_frames() -> dict:
    """Errors as on the CPU; symbols-only quantization; dequantization from a frame's own scale and zero
    point, against codec.decode; arbitrary parameters (many roundings) per channel."""
    import numpy as np

    import codec
    from codec import api
    from codec import quantize as cq
    from codec.frame import read
    from codec.gpu import quantize as gq

    res = {}
    for k, (name, shape, bits, axis, clip, kind) in enumerate(ERROR_CASES):
        x = _case_input(shape, bits, kind, seed=100 + k)
        cpu = _outcome(lambda: cq.quantize(x, bits, axis, clip=clip) and None)  # noqa: B023
        got = _outcome(lambda: gq.quantize(x, bits, axis, clip=clip) and None)  # noqa: B023
        res[name] = (got == cpu and cpu[0] == "CodecError") or {"cpu": cpu, "gpu": got}
    for name, bits in (("bits_0", 0), ("bits_9", 9)):
        x = np.ones(4, np.float32)
        cpu = _outcome(lambda: cq.quantize(x, bits) and None)  # noqa: B023
        got = _outcome(lambda: gq.quantize(x, bits) and None)  # noqa: B023
        res[name] = (got == cpu and cpu[0] == "CodecError") or {"cpu": cpu, "gpu": got}

    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 5, 30)).astype(np.float32)
    q0, p0, lo0, hi0 = cq.quantize_symbols(x, 4, 1)
    q, p, lo, hi = gq.quantize_symbols(x, 4, 1, **SIM)
    res["quantize_symbols"] = bool(
        np.array_equal(q, q0)
        and np.array_equal(_bits32(p.scale), _bits32(p0.scale))
        and np.array_equal(p.zero, p0.zero)
        and (lo, hi) == (lo0, hi0)
    )

    # a frame's scale (f32) and zero point (u8) as stored, per channel: codec.decode's floats, bit for bit
    for name, bits, axis in (("frame_b4_axis1", 4, 1), ("frame_b8_tensor", 8, None)):
        x = np.maximum(rng.normal(size=(2, 6, 4, 5)), -0.3).astype(np.float32)
        blob = codec.encode(x, bits=bits, axis=axis, level=1)
        f = read(blob, api.MAX_ELEMENTS)
        q = cq.quantize(x, bits, axis)[0]
        params = cq.QuantParams(bits, f.axis, f.scale, f.zero)
        y = gq.dequantize(q, params, f.shape, **SIM)
        res[name] = bool(np.array_equal(_bits32(y), _bits32(codec.decode(blob))))

    # arbitrary parameters: scales with many significant bits, every symbol and zero point
    shape = (4, 3, 64)
    q = rng.integers(0, 256, shape, dtype=np.uint8)
    scale = (rng.random(3) * 0.3 + 1e-3).astype(np.float32)
    zero = np.array([0, 77, 255], np.uint8)
    params = cq.QuantParams(8, 1, scale, zero)
    y = gq.dequantize(q, params, shape, **SIM)
    res["dequantize_arbitrary_params"] = bool(
        np.array_equal(_bits32(y), _bits32(cq.dequantize(q, params, shape)))
    )
    res["dequantize_empty"] = gq.dequantize(np.empty(0, np.uint8), params, (0, 3)).shape == (0, 3)
    return res


def _mutant_kernel(name: str, old: str, new: str):
    return mutant_kernel("codec.gpu.quantize_kernels", name, old, new)


# deliberately wrong kernels that the simulator's bit-exact comparison must catch
SIM_MUTANTS = {
    "quantize_rounds_down": (
        "quantize",
        "libdevice.rintf(libdevice.fmul_rn(x[i], ic))",
        "np.floor(libdevice.fmul_rn(x[i], ic))",
    ),
    "quantize_rounds_half_away_from_zero": (
        "quantize",
        "libdevice.rintf(libdevice.fmul_rn(x[i], ic))",
        "np.copysign(np.floor(abs(libdevice.fmul_rn(x[i], ic)) + 0.5), x[i])",
    ),
    "dequantize_distributes_the_multiply": (
        "dequantize",
        "libdevice.fmul_rn(F32(I32(q[i]) - zc), sc)",
        "libdevice.fadd_rn(libdevice.fmul_rn(F32(q[i]), sc), -libdevice.fmul_rn(F32(zc), sc))",
    ),
    "minmax_reduction_skips_half_the_threads": (
        "minmax",
        "half = cuda.blockDim.x // 2",
        "half = cuda.blockDim.x // 4",
    ),
}
# deliberately contractible arithmetic that only the PTX check can catch (numba fuses it into fma)
PTX_MUTANTS = {
    "quantize_plain_multiply_add": (
        "quantize",
        "r = libdevice.rintf(libdevice.fmul_rn(x[i], ic))\n            v = libdevice.fadd_rn(r, zc)",
        "v = libdevice.rintf(x[i] * ic + zc)",
    ),
    "dequantize_plain_multiply_subtract": (
        "dequantize",
        "libdevice.fmul_rn(F32(I32(q[i]) - zc), sc)",
        "F32(q[i]) * sc - F32(zc) * sc",
    ),
}


def _work_mutants() -> dict:
    import numpy as np

    from codec.gpu import quantize_kernels as K

    inputs = {
        "quantize": (_case_input((3, 40), 4, "ties", 0), 4, None),
        "dequantize": (np.random.default_rng(1).normal(size=(3, 40)).astype(np.float32), 8, 0),
        "minmax": (
            np.abs(np.random.default_rng(2).normal(size=(2, 30))).astype(np.float32) + 1,
            4,
            0,
        ),
    }
    res = {}
    for label, (kernel, old, new) in SIM_MUTANTS.items():
        x, bits, axis = inputs[kernel]
        original = getattr(K, kernel)
        setattr(K, kernel, _mutant_kernel(kernel, old, new))
        try:
            got = _outcome(lambda: _compare_quantize(x, bits, axis, None, **SIM))  # noqa: B023
            res[label] = (got[0] == "ok" and bool(got[1])) or f"mutant not caught: {got}"
        finally:
            setattr(K, kernel, original)
    # the unmutated kernels pass on the same inputs (so each difference is its mutation's)
    for kernel, (x, bits, axis) in inputs.items():
        got = _outcome(lambda: _compare_quantize(x, bits, axis, None, **SIM))  # noqa: B023
        res[f"original_{kernel}"] = got == ["ok", {}] or got
    return res


def _work_ptx(major: int, minor: int, outdir: str) -> dict:
    """PTX of every kernel signature, and of the PTX mutants, for one compute capability, written
    to ``outdir``."""

    def jobs() -> list:
        from codec.gpu import quantize_kernels as K

        mutants = [
            (f"mutant_{label}", _mutant_kernel(kernel, old, new).py_func, K.SIGNATURES[kernel])
            for label, (kernel, old, new) in PTX_MUTANTS.items()
        ]
        return kernel_jobs("codec.gpu.quantize_kernels") + mutants

    return compile_ptx_files(major, minor, outdir, jobs)


WORK = {
    "quantize": _work_quantize,
    "errors_and_frames": _work_errors_and_frames,
    "mutants": _work_mutants,
}


# ---------------------------------------------------------------- the tests (pytest process)


@needs_numba
@pytest.mark.timeout(150)
def test_simulated_quantize_and_dequantize_are_bit_exact():
    assert_all(run_worker(__file__, ["quantize"], sim=True, timeout=140))


@needs_numba
@pytest.mark.timeout(120)
def test_simulated_errors_symbols_and_frame_dequantize_match_the_cpu():
    assert_all(run_worker(__file__, ["errors_and_frames"], sim=True, timeout=110))


@needs_numba
@pytest.mark.timeout(120)
def test_deliberately_wrong_rounding_is_caught_by_the_bit_exact_comparison():
    assert_all(run_worker(__file__, ["mutants"], sim=True, timeout=110))


def fma_lines(ptx: str) -> list[str]:
    """The fused multiply-adds of a PTX listing (fma / mad, single or double precision)."""
    return [ln.strip() for ln in ptx.splitlines() if re.match(r"\s*(fma|mad)\.", ln)]


def contractible_lines(ptx: str) -> list[str]:
    """Float multiplies, adds and subtracts without a rounding modifier: ptxas may fuse those into FFMA
    (the PTX ISA allows it for mul/add/sub with no .rn), so a kernel that must not fuse has none."""
    return [
        ln.strip()
        for ln in ptx.splitlines()
        if re.match(r"\s*(mul|add|sub)(\.ftz)?(\.sat)?\.f(32|64)\b", ln)
    ]





# instructions each kernel's rounding must show up as (a libdevice call lowered to something else fails)
EXPECTED = {
    "params": ("div.rn.f64", "add.rn.f64", "cvt.rn.f32.f64", "cvt.rni.f64.f64", "div.rn.f32"),
    "quantize": ("mul.rn.f32", "cvt.rni.f32.f32", "add.rn.f32"),
    "dequantize": ("mul.rn.f32",),
}


@needs_numba
@pytest.mark.timeout(150)
@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm_80", "sm_90"])
def test_kernels_compile_without_spills_or_fma(cc, tmp_path):
    from codec.gpu import quantize_kernels as K

    files = run_worker(__file__, ["ptx", str(cc[0]), str(cc[1]), str(tmp_path)], sim=False, timeout=140)
    assert set(K.SIGNATURES) | {f"mutant_{m}" for m in PTX_MUTANTS} == set(files)
    for name in K.SIGNATURES:
        ptx = Path(files[name]).read_text()
        assert "fma.rn.f32" not in ptx and not fma_lines(ptx), (
            f"{name}: fused multiply-add in the PTX: {fma_lines(ptx)[:3]}"
        )
        assert not contractible_lines(ptx), (
            f"{name}: float ops without a rounding mode, which ptxas may fuse: "
            f"{contractible_lines(ptx)[:3]}"
        )
        for ins in EXPECTED.get(name, ()):
            assert ins in ptx, f"{name}: no {ins} in the PTX"
    # the checks can fail: contractible arithmetic in a copy of a kernel is caught (the quantize mutant
    # becomes fma.rn.f32 in the PTX; the dequantize one unrounded mul.f32 / sub.f32, fused by ptxas)
    caught = {}
    for label in PTX_MUTANTS:
        ptx = Path(files[f"mutant_{label}"]).read_text()
        caught[label] = (fma_lines(ptx), contractible_lines(ptx))
    assert any(ln.startswith("fma.rn.f32") for ln in caught["quantize_plain_multiply_add"][0])
    assert all(f or c for f, c in caught.values()), f"a mutant passed the PTX checks: {caught}"
    ptxas = ptxas_path()
    if ptxas is None:
        pytest.skip(
            "ptxas not found (the CUDA toolkit's nvcc/ptxas are not installed): PTX built, not assembled"
        )
    for name in K.SIGNATURES:
        assert_assembles(ptxas, cc, name, files[name])


if __name__ == "__main__":
    worker_main(sys.argv[1:], WORK, _work_ptx)
