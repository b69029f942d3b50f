"""Warp intrinsics for numba-cuda's CUDA simulator, which lacks them (ballot_sync, shfl_*_sync, syncwarp,
activemask, lanemask_lt). The 32 lanes of a warp (thread ids 32w..32w+31 of a block) swap values at a
barrier of their own, so each warp of a multi-warp block proceeds on its own. Exact when every lane of the
warp calls the intrinsic together with the full mask, which is what the codec's kernels do; anything else
raises (or, for a lane that never arrives, breaks the barrier after a timeout) instead of passing.

Call ``install()`` after setting NUMBA_ENABLE_CUDASIM=1 and before launching kernels."""

from __future__ import annotations

import sys
import threading

import numpy as np

FULL = 0xFFFFFFFF
TIMEOUT_S = 60.0
SWITCH_INTERVAL_S = 0.0004  # see install()
_LOCK = threading.Lock()


class _Warp:
    def __init__(self) -> None:
        self.values: list = [None] * 32
        self.barrier = threading.Barrier(32, timeout=TIMEOUT_S)


def _lane_and_warp() -> tuple[int, _Warp]:
    t = threading.current_thread()
    manager = t._manager
    if int(np.prod(manager._block_dim)) % 32:
        raise NotImplementedError("warp intrinsics in the simulator need blocks of whole warps")
    with _LOCK:
        warps = manager.__dict__.setdefault("_shim_warps", {})
        warp = warps.setdefault(t.thread_id // 32, _Warp())
    return t.thread_id % 32, warp


def _exchange(mask: int, value):
    if int(mask) != FULL:
        raise NotImplementedError("the simulator shim supports full-warp masks only")
    lane, warp = _lane_and_warp()
    warp.values[lane] = value
    warp.barrier.wait()
    values = list(warp.values)
    warp.barrier.wait()  # nobody overwrites a slot before every lane has read it
    return lane, values


def ballot_sync(mask, predicate):
    _, values = _exchange(mask, bool(predicate))
    return np.uint32(sum(1 << k for k, v in enumerate(values) if v))


def shfl_sync(mask, value, src_lane):
    _, values = _exchange(mask, value)
    return values[int(src_lane) % 32]


def shfl_up_sync(mask, value, delta):
    lane, values = _exchange(mask, value)
    return values[lane - int(delta)] if lane >= int(delta) else value


def shfl_down_sync(mask, value, delta):
    lane, values = _exchange(mask, value)
    return values[lane + int(delta)] if lane + int(delta) < 32 else value


def shfl_xor_sync(mask, value, lane_mask):
    lane, values = _exchange(mask, value)
    return values[(lane ^ int(lane_mask)) % 32]


def syncwarp(mask=FULL):
    _exchange(mask, None)


def activemask():
    """All lanes: the shim only supports converged warps."""
    return np.uint32(FULL)


def lanemask_lt():
    lane = threading.current_thread().thread_id % 32
    return np.uint32((1 << lane) - 1)


# libdevice's round-to-nearest arithmetic, which the simulator leaves as empty stubs: NumPy's float32 and
# float64 scalar operations are IEEE operations rounded to nearest even, never fused
def fmul_rn(x, y):
    return np.float32(np.float32(x) * np.float32(y))


def fadd_rn(x, y):
    return np.float32(np.float32(x) + np.float32(y))


def fdiv_rn(x, y):
    return np.float32(np.float32(x) / np.float32(y))


def rintf(x):
    return np.float32(np.rint(np.float32(x)))


def dadd_rn(x, y):
    return np.float64(np.float64(x) + np.float64(y))


def ddiv_rn(x, y):
    return np.float64(np.float64(x) / np.float64(y))


def rint(x):
    return np.float64(np.rint(np.float64(x)))


def double2float_rn(x):
    return np.float32(np.float64(x))


LIBDEVICE = (fmul_rn, fadd_rn, fdiv_rn, rintf, dadd_rn, ddiv_rn, rint, double2float_rn)


def install() -> None:
    """Add the intrinsics to the simulator's fake ``cuda`` module, and shorten the GIL switch interval.

    The simulator runs each CUDA thread as a Python thread, and its block manager polls them without
    sleeping: a short switch interval hands the GIL over sooner (one worker on an idle 2-core machine:
    47.9 s at the default 5 ms, 9.5-11.2 s at 0.3-0.5 ms, 15.6 s at 0.1 ms)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # and the round-to-nearest arithmetic to numba.cuda.libdevice (its functions are stubs without a device)
    from numba.cuda import libdevice
    from numba.cuda.simulator.kernelapi import FakeCUDAModule

    for fn in LIBDEVICE:
        setattr(libdevice, fn.__name__, fn)

    for fn in (ballot_sync, shfl_sync, shfl_up_sync, shfl_down_sync, shfl_xor_sync, syncwarp):
        setattr(FakeCUDAModule, fn.__name__, staticmethod(fn))
    FakeCUDAModule.activemask = staticmethod(activemask)
    FakeCUDAModule.lanemask_lt = staticmethod(lanemask_lt)
