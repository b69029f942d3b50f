"""Where ``codec.encode`` / ``codec.decode`` run: the ``device=`` argument, CUDA-array detection and the
record of host fallbacks. Imports no numba: ``codec.gpu`` is imported only when a device path is asked for.

A CUDA array is anything exporting ``__cuda_array_interface__`` (torch CUDA tensors, CuPy arrays,
numba-cuda device arrays), or an array of numba-cuda's CUDA simulator (the tests' stand-in, which exports
no interface). ``device=None`` follows the input: the device path for a CUDA array, the CPU otherwise.

The device path falls back to the host where the GPU kernels cannot reproduce the CPU's bytes yet: frames
with context-modelled streams are decoded on the CPU and copied to the device; a chosen candidate with
context-modelled streams is coded on the host. Each fallback is counted (:func:`fallbacks`) and warned
about once per reason (:class:`DeviceFallbackWarning`), so it is never silent.
"""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from typing import Any

import numpy as np

from .errors import CodecError

DEVICES = ("cpu", "cuda")


class DeviceFallbackWarning(RuntimeWarning):
    """A device-path call that ran (in part) on the host; issued once per reason and process."""


_lock = threading.Lock()
_counts: Counter[str] = Counter()
_warned: set[str] = set()


def is_device_array(x: Any) -> bool:
    """True for an array in CUDA device memory (see the module docstring)."""
    if hasattr(x, "__cuda_array_interface__"):
        return True
    return type(x).__module__.startswith("numba.cuda.simulator") and hasattr(x, "copy_to_host")


def resolve(device: Any, x: Any = None) -> str:
    """``"cpu"`` or ``"cuda"`` for a ``device=`` argument (None: follow ``x``); CodecError otherwise.
    Accepts ``"cuda:0"``-style strings and ``torch.device`` objects for the current device."""
    if device is None:
        if x is None or type(x) is np.ndarray:  # the common case, without attribute lookups
            return "cpu"
        return "cuda" if is_device_array(x) else "cpu"
    name = device if isinstance(device, str) else getattr(device, "type", None)
    if isinstance(name, str):
        base, _, index = name.partition(":")
        if base in DEVICES and (not index or (base == "cuda" and index.isdigit())):
            return base
    raise CodecError(f"device must be one of {DEVICES} (or 'cuda:N') or None, got {device!r}")


def note_fallback(direction: str, reason: str) -> None:
    """Count one host fallback of ``direction`` ("encode" / "decode") and warn once per reason."""
    key = f"{direction}: {reason}"
    with _lock:
        _counts[direction] += 1
        _counts[key] += 1
        first = key not in _warned
        _warned.add(key)
    if first:
        warnings.warn(
            f"codec device path ran on the host ({key})", DeviceFallbackWarning, stacklevel=3
        )


def fallbacks() -> dict[str, int]:
    """Host fallbacks of the device path so far in this process: per direction ("encode", "decode")
    and per "direction: reason"."""
    with _lock:
        return dict(_counts)


def gpu_module() -> Any:
    """``codec.gpu.api``, imported now; CodecError when numba-cuda or a CUDA device is missing."""
    try:
        from .gpu import api
    except ImportError as exc:
        raise CodecError("device='cuda' needs numba-cuda: pip install 'splitstream[gpu]'") from exc
    if not api.available():
        raise CodecError("device='cuda': no CUDA device is available")
    return api
