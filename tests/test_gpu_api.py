"""``codec.encode`` / ``codec.decode`` on the device (``device=``, CUDA-array inputs), without a GPU.

Simulator tests run in a subprocess (NUMBA_ENABLE_CUDASIM=1 and tests/gpu_sim_shim.py; this file is the
worker) with numba-cuda's simulated device arrays standing in for torch CUDA tensors and CuPy arrays:
device encodes must be the CPU's bytes, device decodes the CPU's values, kept on the device, and the
host fallbacks (context-modelled streams) counted and warned about. The argument checks and the
numba-free ``import codec`` run in the test process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gpu_harness import assert_all, needs_numba, run_worker, worker_main

import codec
from codec import device as codec_device

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


# ---------------------------------------------------------------- worker (runs in the subprocess)


def _inputs() -> dict:
    rng = np.random.default_rng(3)
    relu = np.maximum(rng.normal(size=(2, 3, 4, 5)), 0).astype(np.float32)
    walk = np.cumsum(rng.normal(size=(1, 2, 6, 7)) * 0.3, axis=-1).astype(np.float32)
    return {
        "relu": relu,
        "walk": walk,
        "one": np.array([2.5], np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "const": np.full((4, 9), 1.25, np.float32),
        "wide": rng.normal(size=(3, 64)).astype(np.float32),
    }


def _counting(module, name: str, calls: list):
    """Wrap ``module.name`` to append to ``calls`` (so a test can see the device coder ran)."""
    original = getattr(module, name)

    def wrapper(*args, **kw):
        calls.append(name)
        return original(*args, **kw)

    setattr(module, name, wrapper)


def _work_encode() -> dict:
    """Device encodes (numba device arrays, and host arrays with device="cuda") are the CPU's bytes at
    levels 1-3 for several shapes, bit widths and per-channel quantization; the device coder ran."""
    from numba import cuda

    from codec import api
    from codec import costmodel as cm
    from codec.gpu import api as gpu_api
    from codec.gpu import frame as gpu_frame

    calls: list = []
    _counting(gpu_frame, "encode_quantized", calls)
    res = {}
    for name, x in _inputs().items():
        for level, bits, axis in ((1, 8, None), (2, 4, None), (3, 6, -1)):
            want = codec.encode(x, bits=bits, axis=axis, level=level)
            before = len(calls)
            got = codec.encode(cuda.to_device(x), bits=bits, axis=axis, level=level)
            res[f"{name}/L{level}/b{bits}"] = (got == want and len(calls) > before) or {
                "same": got == want,
                "device_coder_calls": len(calls) - before,
            }
    x = _inputs()["walk"]
    res["host_input_device_cuda"] = codec.encode(x, device="cuda") == codec.encode(x)
    res["device_input_device_cpu"] = codec.encode(cuda.to_device(x), device="cpu") == codec.encode(
        x
    )
    for dtype in (np.float16, np.float64):
        h = x.astype(dtype)
        res[f"device_{np.dtype(dtype).name}"] = codec.encode(cuda.to_device(h)) == codec.encode(h)
    # the sampled statistics of the lean levels and level 1's sampled tables, at sizes the simulator
    # can run: the thresholds lowered for the CPU and the device alike
    for mod in (api, cm, gpu_api):
        mod.LEAN_MIN_SYMBOLS = 256
    api.SAMPLED_HIST_MIN = 256
    rng = np.random.default_rng(8)
    big = {
        "lean_relu": np.maximum(rng.normal(size=(1, 4, 10, 12)), 0).astype(np.float32),
        "lean_walk": np.cumsum(rng.normal(size=(1, 2, 300)), axis=-1).astype(np.float32),
    }
    for name, x in big.items():
        for level, bits in ((1, 8), (1, 4), (3, 8)):
            want = codec.encode(x, bits=bits, level=level)
            got = codec.encode(cuda.to_device(x), bits=bits, level=level)
            res[f"{name}/L{level}/b{bits}"] = got == want or "differs"
    res["no_fallback_counted"] = codec.device.fallbacks().get("encode", 0) == 0 or (
        codec.device.fallbacks()
    )
    return res


def _work_encode_fallback() -> dict:
    """A choice with a context-modelled stream is coded on the host from the device's symbols: the
    CPU's bytes, counted and warned about once."""
    import warnings

    from numba import cuda

    from codec import api, costmodel
    from codec.contexts import ContextSpec

    choose = api.choose

    def with_context(info, level, blog):
        best, cands = choose(info, level, blog)
        plan = costmodel.StreamPlan(costmodel.RANS, ContextSpec(nb_dist=32, nbuckets=2, nb_ref=0))
        return costmodel.Candidate(costmodel.DENSE, 0, [plan]), cands

    api.choose = with_context
    x = _inputs()["relu"]
    want = codec.encode(x, level=4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = [codec.encode(cuda.to_device(x), level=4) for _ in range(2)]
    warned = [w for w in seen if issubclass(w.category, codec.DeviceFallbackWarning)]
    counts = codec.device.fallbacks()
    return {
        "bytes": all(g == want for g in got) or "differs",
        "counted_twice": counts.get("encode") == 2 or counts,
        "warned_once": len(warned) == 1 or [str(w.message) for w in warned],
        "context_frame": codec.inspect(want).streams != ("order0",) or codec.inspect(want).streams,
    }


def _work_decode() -> dict:
    """Device decodes: the CPU's values as device arrays of the frame's shape and dtype, into ``out``
    when given; context-modelled frames too, on the device (no host fallback)."""
    import warnings

    from numba import cuda

    res = {}
    for name, x in _inputs().items():
        for level in (1, 3):
            blob = codec.encode(x, level=level)
            want = codec.decode(blob)
            y = codec.decode(blob, device="cuda")
            ok = codec_device.is_device_array(y) and y.shape == want.shape
            ok = ok and y.copy_to_host().tobytes() == want.tobytes()
            res[f"{name}/L{level}"] = ok or "differs"
    x = _inputs()["walk"]
    for dtype in (np.float16, np.float64):
        blob = codec.encode(x.astype(dtype))
        want = codec.decode(blob)
        y = codec.decode(blob, device="cuda").copy_to_host()
        res[f"frame_{np.dtype(dtype).name}"] = (y.dtype, y.tobytes()) == (
            want.dtype,
            want.tobytes(),
        )
    blob = codec.encode(x)
    want = codec.decode(blob)
    out = cuda.device_array(want.shape, np.float32)
    got = codec.decode(blob, out=out)  # device=None follows out
    res["into_out"] = (got is out and out.copy_to_host().tobytes() == want.tobytes()) or "differs"
    for label, bad in {
        "out_wrong_size": cuda.device_array(want.size + 1, np.float32),
        "out_wrong_dtype": cuda.device_array(want.size, np.float64),
        "out_on_host": np.empty(want.size, np.float32),
    }.items():
        try:
            codec.decode(blob, device="cuda", out=bad)
            res[label] = "accepted"
        except codec.CodecError as exc:
            res[label] = "out" in str(exc) or str(exc)
    res["no_fallback_yet"] = codec.device.fallbacks() == {} or codec.device.fallbacks()
    ctx = (HERE / "golden" / "dense-nb2.relu-b8.frame").read_bytes()  # neighbour-context tables
    want = codec.decode(ctx)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ys = [codec.decode(ctx, device="cuda") for _ in range(2)]
        into = cuda.device_array(want.size, np.float32)
        codec.decode(ctx, out=into)
    warned = [w for w in seen if issubclass(w.category, codec.DeviceFallbackWarning)]
    res["context_frame_values"] = (
        all(
            codec_device.is_device_array(y) and y.copy_to_host().tobytes() == want.tobytes()
            for y in ys
        )
        and into.copy_to_host().tobytes() == want.reshape(-1).tobytes()
    )
    # decoded on the device: no host fallback counted, none warned about
    res["context_frame_on_the_device"] = codec.device.fallbacks() == {} or codec.device.fallbacks()
    res["context_frame_not_warned"] = not warned or [str(w.message) for w in warned]
    corrupt = bytearray(blob)
    corrupt[len(corrupt) // 2] ^= 0x10
    try:
        codec.decode(bytes(corrupt), device="cuda")
        res["corrupt_frame_raises"] = "decoded"
    except codec.CodecError:
        res["corrupt_frame_raises"] = True
    return res


def _work_detect() -> dict:
    """The simulator's device arrays take the device path (they export no __cuda_array_interface__)."""
    from numba import cuda

    a = cuda.to_device(np.zeros(4, np.float32))
    return {
        "sim_array_is_device": codec_device.is_device_array(a),
        "follows_input": codec_device.resolve(None, a) == "cuda",
        "numpy_is_host": codec_device.resolve(None, np.zeros(4)) == "cpu",
    }


def _work_batch() -> dict:
    """encode_batch / decode_batch on the device: byte for byte the per-frame calls, the workspace's
    buffer reused, a malformed frame refused before anything is decoded."""
    from numba import cuda

    from codec.costmodel import RANS
    from codec.frame import read
    from codec.gpu import rans_kernels as K

    def launches(kernel: str, call):
        """``call()``'s result, and the grids it launched ``kernel`` with."""
        grids, real = [], getattr(K, kernel)

        class Count:
            def __getitem__(self, config):
                grids.append(config[0])
                return real[config]

        setattr(K, kernel, Count())
        try:
            return call(), grids
        finally:
            setattr(K, kernel, real)

    rng = np.random.default_rng(4)  # and two ReLU maps whose level-1 frames have rANS streams
    maps = [np.maximum(rng.normal(size=s), 0).astype(np.float32) for s in ((1, 4, 16, 16), (2, 512))]
    xs = [*_inputs().values(), _inputs()["walk"].astype(np.float16), *maps]
    want = [codec.encode(x, level=1) for x in xs]
    ws = codec.Workspace()
    got, grids = launches(
        "encode_many_blocks",
        lambda: codec.encode_batch([cuda.to_device(x) for x in xs], level=1, workspace=ws),
    )
    res = {"encode": got == want or [g == w for g, w in zip(got, want, strict=True)]}
    coded = sum(s.coding == RANS and len(s.payload) > 0 for b in got for s in read(b, 1 << 28).streams)
    res["encoded_rans_streams"] = coded >= 2 or coded  # from several frames, in one launch
    res["one_rans_encode_launch"] = len(grids) == 1 or grids
    ctx = (HERE / "golden" / "dense-nb2.relu-b8.frame").read_bytes()
    more = ["sparse-order0-order0-order0.relu8k-b4-axis1-mse", "delta-nibble-order0-stored.relu-b8"]
    blobs = [*want, ctx, *((HERE / "golden" / f"{name}.frame").read_bytes() for name in more)]
    ys, grids = launches(
        "decode_many_blocks", lambda: codec.decode_batch(blobs, device="cuda", workspace=ws)
    )
    coded = sum(s.coding == RANS and len(s.payload) > 0 for b in blobs for s in read(b, 1 << 28).streams)
    res["rans_streams_in_batch"] = coded >= 4 or coded  # from three frames, one launch
    res["one_rans_launch"] = len(grids) == 1 or grids
    for k, (blob, y) in enumerate(zip(blobs, ys, strict=True)):
        cpu = codec.decode(blob)
        host = y.copy_to_host()
        res[f"decode_{k}"] = (host.dtype, host.shape, host.tobytes()) == (
            cpu.dtype,
            cpu.shape,
            cpu.tobytes(),
        ) or "differs"
    buffer = ws.buffer
    again = codec.decode_batch(blobs[:2], device="cuda", workspace=ws)
    res["buffer_reused"] = ws.buffer is buffer
    res["reused_values"] = again[1].copy_to_host().tobytes() == codec.decode(blobs[1]).tobytes()
    before = codec.device.fallbacks().get("decode", 0)
    try:
        codec.decode_batch([ctx, want[0][:-3]], device="cuda", workspace=ws)
        res["malformed_refused_first"] = "decoded"
    except codec.CodecError:
        res["malformed_refused_first"] = codec.device.fallbacks().get("decode", 0) == before
    return res


WORK = {
    "batch": _work_batch,
    "encode": _work_encode,
    "encode_fallback": _work_encode_fallback,
    "decode": _work_decode,
    "detect": _work_detect,
}


# ---------------------------------------------------------------- the tests (pytest process)


@needs_numba
@pytest.mark.timeout(200)
def test_simulated_device_encode_writes_the_cpu_bytes():
    assert_all(run_worker(__file__, ["encode"], sim=True, timeout=190))


@needs_numba
@pytest.mark.timeout(120)
def test_simulated_device_encode_falls_back_visibly_for_context_streams():
    assert_all(run_worker(__file__, ["encode_fallback"], sim=True, timeout=110))


@needs_numba
@pytest.mark.timeout(150)
def test_simulated_device_decode_keeps_the_cpu_values_on_the_device():
    assert_all(run_worker(__file__, ["decode"], sim=True, timeout=140))


@needs_numba
@pytest.mark.timeout(60)
def test_simulated_device_arrays_take_the_device_path():
    assert_all(run_worker(__file__, ["detect"], sim=True, timeout=50))


@needs_numba
@pytest.mark.timeout(150)
def test_simulated_device_batches_equal_per_frame_calls():
    assert_all(run_worker(__file__, ["batch"], sim=True, timeout=140))


def test_cpu_batches_equal_per_frame_calls():
    rng = np.random.default_rng(4)
    xs = [
        np.maximum(rng.normal(size=(2, 8, 6, 6)), 0).astype(np.float32),
        rng.normal(size=(3, 500)).astype(np.float16),
        np.zeros((0, 4), np.float32),
        np.cumsum(rng.normal(size=(1, 4, 2000)), axis=-1),
    ]
    for level in (1, 3, 9):
        blobs = codec.encode_batch(xs, bits=6, level=level)
        assert blobs == [codec.encode(x, bits=6, level=level) for x in xs]
    ys = codec.decode_batch(blobs)
    for blob, y in zip(blobs, ys, strict=True):
        want = codec.decode(blob)
        assert (y.dtype, y.shape, y.tobytes()) == (want.dtype, want.shape, want.tobytes())
    assert codec.encode_batch([]) == [] and codec.decode_batch([]) == []
    with pytest.raises(codec.CodecError):
        codec.decode_batch([blobs[0], blobs[1][:-1]])
    with pytest.raises(codec.CodecError, match="device must be one of"):
        codec.decode_batch(blobs, device="tpu")


@pytest.mark.parametrize("bad", ["gpus", "CUDA", "cuda:x", "cpu:0", 3, "", object()])
def test_bad_device_values_raise_codec_error(bad):
    x = np.ones((2, 3), np.float32)
    with pytest.raises(codec.CodecError, match="device must be one of"):
        codec.encode(x, device=bad)
    with pytest.raises(codec.CodecError, match="device must be one of"):
        codec.decode(codec.encode(x), device=bad)


def test_device_resolution_follows_the_cuda_array_interface():
    class FakeCudaArray:  # what torch CUDA tensors and CuPy arrays export
        __cuda_array_interface__ = {
            "shape": (1,),
            "typestr": "<f4",
            "data": (0, False),
            "version": 3,
        }

    torch = pytest.importorskip("torch")
    assert codec_device.resolve(None, FakeCudaArray()) == "cuda"
    assert codec_device.resolve(None, np.zeros(3)) == "cpu"
    assert codec_device.resolve(None, torch.zeros(3)) == "cpu"  # a CPU tensor exports no interface
    assert codec_device.resolve(None, None) == "cpu"
    assert codec_device.resolve("cuda:1") == "cuda"
    assert codec_device.resolve(torch.device("cpu"), FakeCudaArray()) == "cpu"


def test_decode_out_is_for_the_device_path():
    blob = codec.encode(np.ones(5, np.float32))
    with pytest.raises(codec.CodecError, match="out="):
        codec.decode(blob, device="cpu", out=np.empty(5, np.float32))


def test_import_codec_and_cpu_calls_do_not_import_numba():
    code = (
        "import sys, numpy as np, codec\n"
        "b = codec.encode(np.ones((3, 4), np.float32), device=None)\n"
        "codec.decode(b, device='cpu')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'numba_cuda')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().replace("'", '"')) == []


@needs_numba
def test_device_cuda_without_a_device_is_a_codec_error():
    code = (
        "import numpy as np, codec\n"
        "try:\n"
        "    codec.decode(codec.encode(np.ones(4, np.float32)), device='cuda')\n"
        "except codec.CodecError as exc:\n"
        "    print('CodecError:', exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    if "CodecError" not in proc.stdout:
        pytest.skip("a CUDA device is present")
    assert "no CUDA device is available" in proc.stdout


if __name__ == "__main__":
    worker_main(sys.argv[1:], WORK, lambda *a: {})
