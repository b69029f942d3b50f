"""The device path of ``codec.encode`` / ``codec.decode`` (``device="cuda"``, or a CUDA array given):
the same bytes and the same values as the CPU, with the data kept on the device.

Encode: the tensor is quantized on the device; its uint8 symbols (a quarter of the float32 input) are
copied to the host, where the cost model makes the CPU's choice from the CPU's statistics; the chosen
representation, its counts and its rANS payloads are then built on the device. Levels 1-3 only ever
choose order-0 or stored streams, so they are coded on the device entirely (level 1's sampled tables of
large streams are counted on the host from a copy of the stream, as the CPU counts them). A choice with
context-modelled streams (possible from level 4) is coded on the host from the same symbols: a counted
fallback (``codec.device.fallbacks``).

Decode: ``codec.gpu.frame.decode_device`` (streams, order-0 or context-modelled, representation and
dequantization on the device), for every frame the CPU writes. The result is ``out`` when given (a float32 CUDA array of the frame's element count, filled with the
float32 values), else a torch CUDA tensor when torch has CUDA, else a numba-cuda device array (which
``torch.as_tensor(y, device="cuda")`` and ``cupy.asarray(y)`` wrap without a copy). float16 / float64
frames are converted on the device by torch; a numba-cuda result makes that conversion on the host.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numba import cuda

from .. import api as cpu_api
from ..costmodel import DENSE, LEAN_MAX_LEVEL, LEAN_MIN_SYMBOLS, Candidate
from ..device import is_device_array, note_fallback
from ..errors import CodecError
from ..frame import DTYPE_CODES
from ..quantize import normalize_axis, sampled_table_counts
from . import frame as gpu_frame
from . import quantize as gpu_quantize
from . import rans as gpu_rans
from .sync import synchronize


def available() -> bool:
    """A CUDA device (or numba-cuda's simulator) is there to run the kernels."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install reads as no device
        return False


def _torch_cuda() -> Any:
    """torch, when it is importable and has CUDA; else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def stream_of(x: Any) -> Any:
    """The stream work on ``x`` is ordered on: torch's / CuPy's current stream, else the default (0)."""
    mod = type(x).__module__
    ptr = 0
    if mod.startswith("torch"):
        import torch

        ptr = torch.cuda.current_stream(x.device).cuda_stream
    elif mod.startswith("cupy"):
        import cupy

        ptr = cupy.cuda.get_current_stream().ptr
    return cuda.external_stream(ptr) if ptr else 0


def _as_device(x: Any) -> Any:
    """A numba-cuda view of a CUDA array (simulator arrays are already one)."""
    if type(x).__module__.startswith("numba.cuda.simulator"):
        return x
    return cuda.as_cuda_array(x)


def device_input(x: Any, stream: Any = 0) -> tuple[Any, tuple[int, ...], str]:
    """(C-ordered float32 device vector, shape, dtype name) of a tensor for the device encoder: CUDA
    arrays stay on the device (torch / CuPy convert dtype and layout there; other CUDA arrays that are
    not C-contiguous float32 go through the host), host arrays are uploaded."""
    mod = type(x).__module__
    if mod.startswith(("torch", "cupy")) and is_device_array(x):
        name = str(x.dtype).removeprefix("torch.")
        if name not in DTYPE_CODES:
            raise CodecError(
                f"unsupported dtype {name}; encode float32, float16, bfloat16 or float64"
            )
        if mod.startswith("torch"):
            import torch

            t = x.detach().to(dtype=torch.float32).contiguous()
        else:
            import cupy

            t = cupy.ascontiguousarray(x, dtype=cupy.float32)
        return cuda.as_cuda_array(t.reshape(-1)), tuple(x.shape), name
    if is_device_array(x):
        a = _as_device(x)
        name = np.dtype(a.dtype).name
        if name not in DTYPE_CODES:
            raise CodecError(
                f"unsupported dtype {name}; encode float32, float16, bfloat16 or float64"
            )
        shape = tuple(a.shape)
        if a.dtype != np.float32 or not a.is_c_contiguous():
            host = np.ascontiguousarray(a.copy_to_host(), np.float32)
            return cuda.to_device(host.reshape(-1), stream=stream), shape, name
        return a.reshape(math.prod(shape)), shape, name
    arr, name = cpu_api.to_numpy(x)
    host = np.ascontiguousarray(arr, np.float32)
    return cuda.to_device(host.reshape(-1), stream=stream), tuple(arr.shape), name


def to_host(x: Any) -> np.ndarray:
    """A NumPy copy of any CUDA array."""
    return _as_device(x).copy_to_host()


def _table_counts(p: cpu_api.Prepared, cand: Candidate, k: int, sym: Any) -> np.ndarray | None:
    """Stream ``k``'s counts where the CPU's differ from the device's full count: the dense symbols'
    table (the quantizer's histogram, or level 1's sample of the host's symbols), level 1's sampled
    tables of other large streams (from a host copy of the stream); None: count on the device."""
    if cand.kind == DENSE:
        if p.info.hist is None and not p.fast_stats:
            return None  # the full count, as on the CPU
        return p.dense_counts()
    top = cpu_api.sampled_stream_top(p, cand, k, sym.shape[0])
    if top is None:
        return None
    return sampled_table_counts(sym.copy_to_host(), cpu_api.SAMPLED_HIST_STRIDE, 0, top)


def _code(
    p: cpu_api.Prepared,
    cand: Candidate,
    blog: int,
    *,
    dq: Any,
    stream: Any,
    coder: Any = None,
) -> Any:
    """One candidate coded on the device, or on the host (a counted fallback) when it has
    context-modelled streams. With a ``coder`` (a batch's :class:`codec.gpu.rans.ManyEncode`) its rANS
    streams are queued there, and what comes back is the function that writes the frame from the
    coder's payloads (:func:`codec.gpu.frame.queue_quantized`)."""
    try:
        gpu_frame.check_order0(cand)
    except NotImplementedError:
        note_fallback("encode", "context-modelled streams are coded on the host")
        return cpu_api.encode_prepared(p, cand, blog)
    args = (dq, p.params, p.shape, p.dtype, cand)
    kw = {"block_log2": blog, "counts": functools.partial(_table_counts, p, cand), "stream": stream}
    if coder is not None:
        return gpu_frame.queue_quantized(*args, coder, **kw)
    return gpu_frame.encode_quantized(*args, **kw)


def _prepared(
    x: Any, bits: int, axis: int | None, level: int, clip: str | None, stream: Any
) -> tuple[cpu_api.Prepared, Any]:
    """(the host's view of a device quantization, the device quantization) of ``x``, as
    :func:`encode` codes it."""
    xd, shape, dtype = device_input(x, stream)
    cpu_api.check_shape(shape)
    axis = normalize_axis(axis, len(shape))
    n = math.prod(shape)
    sampled = level < LEAN_MAX_LEVEL and n >= LEAN_MIN_SYMBOLS
    dq = gpu_quantize.quantize_device(
        xd, shape, bits, axis, clip, histogram=not sampled, stream=stream
    )
    q, params, hist, lo, hi = gpu_quantize.to_host(dq, bits, axis, len(shape), stream=stream)
    p = cpu_api.prepared(
        q,
        params,
        None if sampled else hist,
        shape,
        dtype,
        level == 1,
        (lo, hi) if sampled else (0, 255),
    )
    return p, dq


def encode(
    x: Any, bits: int, axis: int | None, level: int, *, clip: str | None = None, stream: Any = None
) -> bytes:
    """``codec.encode(x, bits, axis, level, clip=clip)`` on the device: exactly the CPU's bytes (see
    the module docstring); ``stream``: the CUDA stream (None: the input's, see :func:`stream_of`)."""
    level = cpu_api.check_level(level)
    bits = cpu_api.check_bits(bits)
    if stream is None:
        stream = stream_of(x)
    p, dq = _prepared(x, bits, axis, level, clip, stream)
    return cpu_api.encode_chosen(p, level, functools.partial(_code, dq=dq, stream=stream))


def _vector(out: Any, blob: Any, max_elements: int) -> Any:
    """The float32 device vector that ``out`` is, checked against the frame, or CodecError."""
    info = cpu_api.inspect(blob, max_elements=max_elements)
    n = math.prod(info.shape)
    if info.dtype in ("float16", "float64"):
        raise CodecError(
            f"out= takes frames that decode to float32; this one decodes to {info.dtype}"
        )
    if not is_device_array(out):
        raise CodecError(f"out must be a CUDA array, got {type(out).__name__}")
    a = _as_device(out)
    if np.dtype(a.dtype) != np.float32 or a.size != n or not a.is_c_contiguous():
        raise CodecError(f"out must be a C-contiguous float32 CUDA array of {n} elements")
    return a.reshape(n)


def _result(y: Any, shape: tuple[int, ...], dtype: str, stream: Any) -> Any:
    """The decoded float32 device vector ``y`` as the caller's array: of ``shape`` and the dtype
    ``codec.decode`` returns for a ``dtype`` frame."""
    torch = _torch_cuda()
    if torch is not None:
        t = torch.as_tensor(y, device="cuda").reshape(shape)
        if dtype == "float16":
            f16max = float(np.finfo(np.float16).max)
            return t.clamp_(-f16max, f16max).to(torch.float16)
        return t.to(torch.float64) if dtype == "float64" else t
    if dtype in ("float16", "float64"):
        copied = y.copy_to_host(stream=stream)
        synchronize(stream)
        host = cpu_api.finish_dtype(copied, dtype)
        return cuda.to_device(host.reshape(shape), stream=stream)
    return y.reshape(shape)


def _decode_into(
    blob: bytes | bytearray | memoryview, vec: Any, max_elements: int, stream: Any
) -> tuple[Any, tuple[int, ...], str]:
    """(float32 device vector, shape, dtype of the frame's decode) of one frame, decoded on the device
    into ``vec`` (None: a new vector)."""
    y, frame = gpu_frame.decode_device(blob, max_elements, out=vec, stream=stream)
    return y, frame.shape, frame.dtype


def decode(
    blob: bytes | bytearray | memoryview,
    *,
    max_elements: int = cpu_api.MAX_ELEMENTS,
    out: Any = None,
    stream: Any = None,
) -> Any:
    """``codec.decode`` on the device (see the module docstring): the CPU's values, on the device."""
    if stream is None:
        stream = stream_of(out) if out is not None else 0
    vec = None if out is None else _vector(out, blob, max_elements)
    y, shape, dtype = _decode_into(blob, vec, max_elements, stream)
    return out if out is not None else _result(y, shape, dtype, stream)


def _workspace_stream(workspace: Any) -> Any:
    if workspace.stream is None:
        workspace.stream = cuda.stream()
    return workspace.stream


def _after(xs: Any, stream: Any) -> None:
    """Order ``stream`` after the torch / CuPy streams the inputs were written on."""
    for s in {id(s): s for s in map(stream_of, xs) if s != 0}.values():
        event = cuda.event()
        event.record(s)
        event.wait(stream)


TWO_CANDIDATES_LEVEL = 8
"""From this level ``encode_chosen`` codes the two best predictions and keeps the smaller, so a batch
codes those frames one by one."""


def encode_batch(
    xs: Any, bits: int, axis: int | None, level: int, *, clip: str | None, workspace: Any
) -> list[bytes]:
    """``codec.encode_batch`` on the device: each tensor coded as :func:`encode` codes it, in order on
    the workspace's stream, with the rANS streams of every frame encoded in one launch
    (:class:`codec.gpu.rans.ManyEncode`; from level 8, which compares two codings of each frame,
    frame by frame)."""
    stream = _workspace_stream(workspace)
    _after(xs, stream)
    level = cpu_api.check_level(level)
    bits = cpu_api.check_bits(bits)
    if level >= TWO_CANDIDATES_LEVEL:
        return [encode(x, bits, axis, level, clip=clip, stream=stream) for x in xs]
    coder = gpu_rans.ManyEncode()
    pending = []
    for x in xs:
        p, dq = _prepared(x, bits, axis, level, clip, stream)
        code = functools.partial(_code, dq=dq, stream=stream, coder=coder)
        pending.append(cpu_api.encode_chosen(p, level, code))
    payloads = coder.run(stream)
    return [b if isinstance(b, bytes) else b(payloads) for b in pending]


def decode_batch(blobs: Any, *, max_elements: int, workspace: Any) -> list[Any]:
    """``codec.decode_batch`` on the device: every header, block index and stored stream is checked
    first (a malformed frame raises before any kernel runs); the rANS streams of every frame decode in
    one launch (:func:`codec.gpu.frame.decode_many_device`), then each frame's representation and
    dequantization follow, in order on the workspace's stream, with one synchronization for the batch.
    Frames that decode to float32 go into consecutive views of the workspace's buffer (grown to the
    batch, then reused); float16 / float64 frames into arrays of their own."""
    stream = _workspace_stream(workspace)
    infos = [cpu_api.inspect(b, max_elements=max_elements) for b in blobs]
    flat = [info.dtype not in ("float16", "float64") for info in infos]
    sizes = [math.prod(info.shape) if f else 0 for info, f in zip(infos, flat, strict=True)]
    total = sum(sizes)
    if workspace.buffer is None or workspace.buffer.shape[0] < total:
        workspace.buffer = cuda.device_array(max(total, 1), np.float32, stream=stream)
    vecs, offset = [], 0
    for size, f in zip(sizes, flat, strict=True):
        vecs.append(workspace.buffer[offset : offset + size] if f else None)
        offset += size
    decoded = gpu_frame.decode_many_device(blobs, max_elements, outs=vecs, stream=stream)
    return [_result(y, frame.shape, frame.dtype, stream) for y, frame in decoded]
