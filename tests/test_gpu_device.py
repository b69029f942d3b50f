"""The device check's pieces. ``gpu``-marked tests need a CUDA device (``scripts/gpu_check.sh`` runs
them; skipped elsewhere): the device path bit-exact on the benchmark suite, torch CUDA tensors in and
out. Without a device: the benchmark exits with code 2 and one line, its measuring code and the
compute-sanitizer driver run under the CUDA simulator (a subprocess; this file is the worker), and
the check script parses (and passes shellcheck where that is installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gpu_harness import assert_all, needs_numba, run_worker, worker_main

import codec

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _no_device() -> bool:
    try:
        codec.device.gpu_module()
    except codec.CodecError:
        return True
    return False


# ---------------------------------------------------------------- on a CUDA device


@pytest.mark.gpu
@pytest.mark.timeout(110)
def test_device_path_is_bit_exact_on_the_suite():
    from numba import cuda

    from benchmarks.suite import build

    rng = np.random.default_rng(0)
    tensors = [np.maximum(rng.normal(size=(1, 256, 56, 56)), 0).astype(np.float32)]
    tensors += [np.ascontiguousarray(t.x, np.float32) for t in build(quick=True)]
    for x in tensors:
        for part in (x[:1], x[:2]):
            for level in (1, 3, 6):
                blob = codec.encode(part, level=level)
                assert codec.encode(cuda.to_device(part), level=level) == blob
                y = codec.api.device_to_host(codec.decode(blob, device="cuda"))
                assert np.asarray(y).tobytes() == codec.decode(blob).tobytes()


@pytest.mark.gpu
def test_torch_cuda_tensors_stay_on_the_device():
    import torch

    x = torch.relu(torch.randn(2, 16, 8, 8, device="cuda"))
    blob = codec.encode(x, level=1)
    assert blob == codec.encode(x.cpu(), level=1)
    y = codec.decode(blob)
    assert isinstance(y, np.ndarray)
    yd = codec.decode(blob, device="cuda")
    assert isinstance(yd, torch.Tensor) and yd.is_cuda and yd.shape == x.shape
    assert yd.cpu().numpy().tobytes() == y.tobytes()
    out = torch.empty(x.shape, device="cuda")
    assert codec.decode(blob, out=out) is out and torch.equal(out.cpu(), yd.cpu())


# ---------------------------------------------------------------- without a device


def test_the_benchmark_without_a_device_exits_2_with_one_line(tmp_path):
    if not _no_device():
        pytest.skip("a CUDA device is present")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    for extra in ({}, {"NUMBA_ENABLE_CUDASIM": "1"}):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.gpu_codec", "--out", str(tmp_path / "out")],
            capture_output=True,
            text=True,
            cwd=str(REPO),
            env={**env, **extra},
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "no CUDA device" in lines[0], proc.stderr
        assert not (tmp_path / "out").exists()


def test_the_check_script_parses_and_is_shellcheck_clean():
    assert os.access(SCRIPT, os.X_OK)
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        proc = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def _work_benchmark() -> dict:
    """The benchmark's measuring code on a tiny shape (timings are meaningless in the simulator)."""
    from numba import cuda

    from benchmarks import gpu_codec

    gpu_codec.BATCH, gpu_codec.COPY_BYTES = 3, 1 << 12
    xs = np.maximum(np.random.default_rng(0).normal(size=(2, 3, 4, 4)), 0).astype(np.float32)
    rows = [gpu_codec.measure(cuda, "tiny", xs, level, 1) for level in gpu_codec.LEVELS]
    doc = {
        "device": {"name": "simulator"},
        "provenance": {"command": "test", "commit": None},
        "rows": rows,
        "copy": gpu_codec.copy_ceiling(cuda, 1),
        "nvcomp": [gpu_codec.nvcomp_ans(cuda, "tiny", xs[:1], 1)],
    }
    md = gpu_codec.markdown(doc)
    keys = {"gpu_encode_ms", "gpu_decode_ms_b32", "cpu_decode_gbps", "bit_exact"}
    return {
        "bit_exact": all(r["bit_exact"] for r in rows),
        "columns": all(keys <= set(r) for r in rows),
        "markdown": md.count("| tiny |") == len(rows) or md,
    }


def _work_sanitize_driver() -> dict:
    """The compute-sanitizer driver finds the device decode equal to the CPU's on mutated frames."""
    sys.path.insert(0, str(REPO / "scripts"))
    import gpu_sanitize

    rng = np.random.default_rng(1)
    blob = gpu_sanitize.base_frames(rng)[0]
    outcomes = [
        gpu_sanitize.outcome(lambda b=b: codec.decode(b))[0]
        for b in gpu_sanitize.mutants(blob, rng)
    ]
    return {
        "driver_passes": gpu_sanitize.main(["--frames", "8", "--seed", "2"]) == 0,
        "mutants_rejected": "CodecError" in outcomes or outcomes,
    }


WORK = {"benchmark": _work_benchmark, "sanitize_driver": _work_sanitize_driver}


@needs_numba
@pytest.mark.timeout(150)
def test_simulated_benchmark_measures_and_checks_exactness():
    assert_all(run_worker(__file__, ["benchmark"], sim=True, timeout=140))


@needs_numba
@pytest.mark.timeout(200)
def test_simulated_sanitizer_driver_passes_on_mutated_frames():
    assert_all(run_worker(__file__, ["sanitize_driver"], sim=True, timeout=190))


if __name__ == "__main__":
    worker_main(sys.argv[1:], WORK, lambda *a: {})
