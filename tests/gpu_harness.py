"""What the GPU kernel tests share: each test file is also its own worker, run in a subprocess (with
NUMBA_ENABLE_CUDASIM=1 and :mod:`gpu_sim_shim` for the simulator tests, without for PTX builds), that
prints one ``RESULT <json>`` line; and the ``ptxas -v`` check of a kernel's PTX."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

needs_numba = pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None,
    reason="numba-cuda is not installed (the dev extra installs it)",
)


def worker_main(argv: list[str], work: dict[str, Callable[[], dict]], ptx: Callable) -> None:
    """The worker's entry: ``ptx MAJOR MINOR DIR`` builds PTX without the simulator, any other
    group runs ``work[group]()`` under it; prints the result as one JSON line."""
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(REPO))
    if argv[0] == "ptx":
        res = ptx(int(argv[1]), int(argv[2]), argv[3])
    else:
        assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
        import gpu_sim_shim

        gpu_sim_shim.install()
        res = work[argv[0]]()
    print("RESULT " + json.dumps(res))


def run_worker(test_file: str, args: list[str], sim: bool, timeout: float) -> dict:
    """Run ``test_file`` as a worker with ``args`` (under the simulator when ``sim``); its result."""
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if sim:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    proc = subprocess.run(
        [sys.executable, test_file, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(REPO),
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return json.loads(lines[-1][len("RESULT ") :])


def assert_all(res: dict) -> None:
    """Every case of a worker's result is ``True``."""
    bad = {k: v for k, v in res.items() if v is not True}
    assert not bad, f"cases that differ from the CPU: {json.dumps(bad)[:3000]}"


def ptxas_path() -> str | None:
    """The CUDA toolkit's ptxas, or None."""
    for cand in (shutil.which("ptxas"), "/usr/local/cuda/bin/ptxas"):
        if cand and Path(cand).exists():
            return cand
    return None


def assert_assembles(ptxas: str, cc: tuple[int, int], name: str, path: str) -> None:
    """``ptxas -v`` assembles the PTX at ``path`` for ``cc`` with no spills and <= 64 registers."""
    proc = subprocess.run(
        [ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-v", path, "-o", os.devnull],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{name}: ptxas failed\n{proc.stderr}"
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", proc.stderr)
    regs = re.search(r"Used (\d+) registers", proc.stderr)
    assert spills and regs, f"{name}: no resource report from ptxas\n{proc.stderr}"
    assert spills.groups() == ("0", "0"), f"{name}: spills at sm_{cc[0]}{cc[1]}: {spills.group(0)}"
    assert int(regs.group(1)) <= 64, f"{name}: {regs.group(1)} registers"


def kernel_jobs(module: str) -> list[tuple[str, Callable, object]]:
    """``(name, Python function, signature)`` of every kernel in ``module``'s ``SIGNATURES``."""
    import importlib

    kernels = importlib.import_module(module)
    return [(name, getattr(kernels, name).py_func, sig) for name, sig in kernels.SIGNATURES.items()]


def compile_ptx_files(
    major: int, minor: int, outdir: str, jobs: Callable[[], list[tuple[str, Callable, object]]]
) -> dict[str, str]:
    """PTX of each ``(name, function, signature)`` that ``jobs()`` lists, for compute capability
    ``major.minor``, written to ``outdir``; ``{name: path}``. Device functions ask the driver for the
    current device's capability; with no driver, this process answers for it (before ``jobs()``
    imports the kernels)."""
    from numba.cuda import dispatcher

    class _Device:
        compute_capability = (major, minor)

    dispatcher.get_current_device = lambda: _Device
    from numba import cuda

    res = {}
    for name, fn, sig in jobs():
        ptx, _ = cuda.compile_ptx(fn, sig, cc=(major, minor))
        path = Path(outdir) / f"{name}.sm_{major}{minor}.ptx"
        path.write_text(ptx)
        res[name] = str(path)
    return res


def mutant_kernel(module: str, name: str, old: str, new: str) -> Callable:
    """Kernel ``name`` of ``module`` recompiled with ``old`` (found exactly once in its source)
    replaced by ``new``: a deliberately wrong copy that the checks must catch."""
    import importlib
    import inspect

    kernels = importlib.import_module(module)
    src = inspect.getsource(getattr(kernels, name).py_func)
    assert src.count(old) == 1, f"mutation site not found in {name}"
    ns = dict(vars(kernels))
    exec(compile(src.replace(old, new), f"<mutant {name}>", "exec"), ns)
    return ns[name]
