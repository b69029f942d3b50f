"""Feature payloads on the wire: tensor <-> bytes per codec kind, and frames <-> Arrow batches.

Kinds: ``ours`` (``codec.encode``: quantization + sparse/dense + rANS), and the baselines
``fp32`` / ``fp16`` (raw little-endian values) and ``zstd`` (fp32 bytes compressed with zstd).
Baseline frames carry a small self-describing header (magic, kind, dtype, shape) so every
kind decodes without side information. A batch of frames travels as a ``pyarrow.RecordBatch``
built by ``codec.arrow`` (one row per sample, a frame per group of rows) plus two per-sample
columns (``label``, ``t_src``) for bookkeeping.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pyarrow as pa

KINDS = ("ours", "fp32", "fp16", "zstd")
_MAGIC = b"SSW1"
_KIND_CODE = {"fp32": 1, "fp16": 2, "zstd": 3}
_CODE_KIND = {v: k for k, v in _KIND_CODE.items()}
_HEADER = struct.Struct("<4sBB")  # magic, kind code, ndim
_MAX_NDIM = 8
_MAX_ELEMS = 1 << 31
EXTRA_COLUMNS = ("label", "t_src")


class WireError(ValueError):
    """A payload that cannot be decoded (bad header, size mismatch, unknown kind)."""


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"codec.kind: unknown kind {kind!r}; choose from {list(KINDS)}")


def encode_tensor(
    x: Any,
    kind: str = "ours",
    bits: int = 8,
    level: int = 3,
    axis: int | None = None,
    threads: int = 1,
) -> bytes:
    """Serialize one feature tensor (NumPy array or torch tensor) as ``kind``."""
    _check_kind(kind)
    if kind == "ours":
        import codec

        return codec.encode(x, bits=bits, axis=axis, level=level, threads=threads)
    arr = _to_numpy(x)
    if arr.ndim > _MAX_NDIM:
        raise WireError(f"tensor has {arr.ndim} dims, at most {_MAX_NDIM} supported")
    header = _HEADER.pack(_MAGIC, _KIND_CODE[kind], arr.ndim) + struct.pack(
        f"<{arr.ndim}Q", *arr.shape
    )
    if kind == "fp16":
        body = arr.astype("<f2", copy=False).tobytes()
    else:
        body = arr.astype("<f4", copy=False).tobytes()
        if kind == "zstd":
            import zstandard

            body = zstandard.ZstdCompressor(level=level).compress(body)
    return header + body


def decode_tensor(
    blob: bytes | memoryview, max_elements: int = _MAX_ELEMS, threads: int = 1
) -> np.ndarray:
    """Inverse of :func:`encode_tensor` for any kind (dispatches on the frame's magic).

    A frame declaring more than ``max_elements`` values is refused before anything is allocated for it
    (a stream passes the expected feature size, so a forged header cannot cost more than one sample).
    Raises :class:`WireError` or ``codec.CodecError`` (both ``ValueError``) for a bad frame."""
    mv = memoryview(blob)
    if len(mv) < _HEADER.size or bytes(mv[:4]) != _MAGIC:
        import codec

        return codec.decode(mv, max_elements=max_elements, threads=threads)
    _, code, ndim = _HEADER.unpack_from(mv, 0)
    if code not in _CODE_KIND or ndim > _MAX_NDIM:
        raise WireError(f"bad baseline frame header (kind code {code}, ndim {ndim})")
    off = _HEADER.size + 8 * ndim
    if len(mv) < off:
        raise WireError("truncated baseline frame header")
    shape = struct.unpack_from(f"<{ndim}Q", mv, _HEADER.size)
    count = int(np.prod(shape, dtype=np.uint64)) if ndim else 1
    if count > min(max_elements, _MAX_ELEMS):
        raise WireError(f"frame shape {shape} declares {count} elements, more than {max_elements}")
    kind = _CODE_KIND[code]
    body = mv[off:]
    if kind == "zstd":
        import zstandard

        try:
            body = memoryview(
                zstandard.ZstdDecompressor().decompress(bytes(body), max_output_size=4 * count)
            )
        except zstandard.ZstdError as exc:
            raise WireError(f"zstd payload does not decompress: {exc}") from None
    dtype = np.dtype("<f2") if kind == "fp16" else np.dtype("<f4")
    if len(body) != count * dtype.itemsize:
        raise WireError(
            f"payload has {len(body)} bytes, shape {shape} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(shape).copy()


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    try:  # torch tensor (bf16 has no NumPy dtype: go through fp32)
        import torch

        if isinstance(x, torch.Tensor):
            t = x.detach().cpu()
            if t.dtype == torch.bfloat16:
                t = t.float()
            return t.numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x)


def pack_batch(
    ids: np.ndarray,
    frames: list[bytes],
    labels: np.ndarray | None,
    t_src: np.ndarray,
    samples: list[int] | None = None,
) -> pa.RecordBatch:
    """Frames plus per-sample bookkeeping as one Arrow ``RecordBatch`` (the ``codec.arrow`` layout:
    frame ``i`` holds ``samples[i]`` consecutive samples, 1 each by default)."""
    from codec.arrow import frames_to_batch

    batch = frames_to_batch(np.asarray(ids, dtype=np.int64).tolist(), frames, samples)
    n = batch.num_rows
    label_arr = (
        pa.nulls(n, pa.int64()) if labels is None else pa.array(np.asarray(labels, dtype=np.int64))
    )
    batch = batch.append_column("label", label_arr)
    return batch.append_column("t_src", pa.array(np.asarray(t_src, dtype=np.float64)))


def unpack_batch(batch: pa.RecordBatch) -> tuple[np.ndarray, list, np.ndarray | None, np.ndarray]:
    """Inverse of :func:`pack_batch`: ``(ids, frame groups, labels or None, t_src)``; each group is a
    ``codec.arrow.FrameGroup`` (first row, samples, frame bytes)."""
    from codec.arrow import batch_to_frames

    names = batch.schema.names
    missing = [c for c in EXTRA_COLUMNS if c not in names]
    if missing:
        raise WireError(f"Arrow batch lacks column(s) {missing}")
    label_col = batch.column("label")
    labels = (
        None if label_col.null_count == len(label_col) else label_col.to_numpy(zero_copy_only=False)
    )
    t_src = batch.column("t_src").to_numpy()
    ids, groups = batch_to_frames(batch.drop_columns(list(EXTRA_COLUMNS)))
    return ids, groups, labels, t_src


def batch_wire_bytes(batch: pa.RecordBatch) -> int:
    """Bytes the batch occupies as an Arrow IPC message (what the link carries)."""
    return int(pa.ipc.get_record_batch_size(batch))


def corrupt_frames(
    batch: pa.RecordBatch, probability: float, rng: np.random.Generator
) -> tuple[pa.RecordBatch, int]:
    """Flip one random bit in each frame with ``probability`` (a fault knob for tests of the stream's
    quarantine). Returns the batch (a new one if anything changed) and how many frames were hit."""
    if probability <= 0 or batch.num_rows == 0:
        return batch, 0
    col = batch.schema.get_field_index("frame")
    frames = batch.column(col).to_pylist()
    rows = [i for i, f in enumerate(frames) if f]  # rows that start a frame
    hit = [i for i, u in zip(rows, rng.random(len(rows)), strict=True) if u < probability]
    if not hit:
        return batch, 0
    for i in hit:
        buf = bytearray(frames[i])
        bit = int(rng.integers(0, 8 * len(buf)))
        buf[bit // 8] ^= 1 << (bit % 8)
        frames[i] = bytes(buf)
    arr = pa.array(frames, type=batch.schema.field(col).type)
    return batch.set_column(col, batch.schema.field(col), arr), len(hit)
