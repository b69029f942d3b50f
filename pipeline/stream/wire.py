"""Feature payloads on the wire: tensor <-> bytes per codec kind, and frames <-> Arrow batches.

Kinds: ``ours`` (``codec.encode``: quantization + sparse/dense + rANS), and the baselines
``fp32`` / ``fp16`` (raw little-endian values), ``zstd`` (fp32 bytes compressed with zstd) and
``int8-zstd`` (what a user without splitstream would write: uint8 affine quantization of the
tensor's min..max range, then zstd of the 8-bit values). Baseline frames carry a small
self-describing header (magic, kind, shape; ``int8-zstd`` adds dtype, scale and zero point) so every
kind decodes without side information. A batch of frames travels as a ``pyarrow.RecordBatch``
built by ``codec.arrow`` (one row per sample, a frame per group of rows) plus two per-sample
columns (``label``, ``t_src``) for bookkeeping.

A transformer head's output (``pipeline.models.hf_split``: ``hidden`` ``(n, T, H)``,
``attention_mask`` ``(n, T)``, ``position_ids`` ``(1 or n, T)``) travels in the same batch: only
the hidden rows of valid tokens (mask != 0) are coded, as a ``(tokens, H)`` tensor, so padding costs
no codec bytes; the mask and the positions go as their own per-sample columns
(:data:`TEXT_COLUMNS`), each row packed losslessly (:func:`pack_ints`), and the receiver rebuilds
the padded tensor with zeros where the mask is 0.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import numpy as np
import pyarrow as pa

from codec import CodecSettings

KINDS = ("ours", "fp32", "fp16", "zstd", "int8-zstd")
_MAGIC = b"SSW1"
_KIND_CODE = {"fp32": 1, "fp16": 2, "zstd": 3, "int8-zstd": 4}
_CODE_KIND = {v: k for k, v in _KIND_CODE.items()}
_HEADER = struct.Struct("<4sBB")  # magic, kind code, ndim
_AFFINE = struct.Struct("<BfB")  # int8-zstd: output dtype code, scale, zero point
_AFFINE_DTYPES = (np.dtype("<f4"), np.dtype("<f2"))  # output dtype by code
_F32_MAX = float(np.finfo(np.float32).max)
_MAX_NDIM = 8
_MAX_ELEMS = 1 << 31
EXTRA_COLUMNS = ("label", "t_src")
TEXT_COLUMNS = ("attention_mask", "position_ids")
_SHARED_POSITIONS = b"splitstream.position_ids"
"""Schema metadata of a text batch: ``shared`` when the head gave one row of positions for the
whole batch (then only the first sample's row carries it), ``per-sample`` otherwise."""
_ROW = struct.Struct("<BI")  # form, values
_RAW, _ARANGE, _RUNS, _ZSTD = 0, 1, 2, 3
_WIDTHS = (1, 2, 4, 8)


class WireError(ValueError):
    """A payload that cannot be decoded (bad header, size mismatch, unknown kind)."""


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"codec.kind: unknown kind {kind!r}; choose from {list(KINDS)}")


def encode_tensor(
    x: Any,
    kind: str = "ours",
    settings: CodecSettings | None = None,
    threads: int = 1,
    device: str | None = None,
    zstd_level: int = 3,
) -> bytes:
    """Serialize one feature tensor (NumPy array or torch tensor) as ``kind``: ``ours`` with
    ``settings`` (None: the codec's defaults) and ``device`` (see ``codec.encode``); the baselines on
    the host, ``zstd`` and ``int8-zstd`` at ``zstd_level`` (1..22)."""
    _check_kind(kind)
    if kind == "ours":
        import codec

        s = CodecSettings() if settings is None else settings
        return codec.encode(x, **s.as_dict(), threads=threads, device=device)
    arr = _to_numpy(x)
    if arr.ndim > _MAX_NDIM:
        raise WireError(f"tensor has {arr.ndim} dims, at most {_MAX_NDIM} supported")
    header = _HEADER.pack(_MAGIC, _KIND_CODE[kind], arr.ndim) + struct.pack(
        f"<{arr.ndim}Q", *arr.shape
    )
    if kind == "fp16":
        body = arr.astype("<f2", copy=False).tobytes()
    elif kind == "int8-zstd":
        import zstandard

        q, scale, zero = affine_uint8(arr)
        code = 1 if arr.dtype == np.float16 else 0
        body = _AFFINE.pack(code, scale, zero) + zstandard.ZstdCompressor(
            level=zstd_level
        ).compress(q.tobytes())
    else:
        body = arr.astype("<f4", copy=False).tobytes()
        if kind == "zstd":
            import zstandard

            body = zstandard.ZstdCompressor(level=zstd_level).compress(body)
    return header + body


def affine_uint8(x: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Per-tensor asymmetric uint8 quantization as a user would write it in NumPy (not our codec's
    quantizer): the range is min..max widened to hold 0, ``scale = (hi - lo) / 255``, the zero point
    ``round(-lo / scale)``, and ``q = clip(round(x / scale) + zero, 0, 255)``; :func:`affine_dequant`
    gives ``(q - zero) * scale``, within half a step of ``x``. Returns ``(q, scale, zero)``; a
    tensor with a non-finite value raises :class:`WireError` (it has no range)."""
    x = np.asarray(x, dtype=np.float32)
    if x.size and not np.isfinite(x).all():
        raise WireError("int8-zstd: the tensor holds non-finite values (no min..max range)")
    lo = min(float(x.min()), 0.0) if x.size else 0.0
    hi = max(float(x.max()), 0.0) if x.size else 0.0
    scale = float(np.float32((hi - lo) / 255)) if hi > lo else 1.0
    scale = max(scale, float(np.finfo(np.float32).smallest_subnormal))  # a range of subnormals
    zero = int(np.clip(round(-lo / scale), 0, 255))
    q = np.clip(np.rint(x / np.float32(scale)) + zero, 0, 255).astype(np.uint8)
    return q, scale, zero


def affine_dequant(q: np.ndarray, scale: float, zero: int) -> np.ndarray:
    """Inverse of :func:`affine_uint8`, as float32 (clipped to float32's finite range where the
    extreme steps of a range near float32's limits would round past it)."""
    if scale * max(zero, 255 - zero) < _F32_MAX * (1 - 1e-6):  # no value can round past it
        return (q.astype(np.float32) - np.float32(zero)) * np.float32(scale)
    with np.errstate(over="ignore"):
        y = (q.astype(np.float32) - np.float32(zero)) * np.float32(scale)
    return np.clip(y, -_F32_MAX, _F32_MAX, out=y)


def batch_settings(settings: CodecSettings) -> CodecSettings:
    """The settings of a frame that stacks samples along a new first axis: a per-sample channel axis
    (counted from the front) moves one place along."""
    if settings.axis is None or settings.axis < 0:
        return settings
    return dataclasses.replace(settings, axis=settings.axis + 1)


def decode_tensor(
    blob: bytes | memoryview,
    max_elements: int = _MAX_ELEMS,
    threads: int = 1,
    device: str | None = None,
) -> Any:
    """Inverse of :func:`encode_tensor` for any kind (dispatches on the frame's magic).

    A frame declaring more than ``max_elements`` values is refused before anything is allocated for it
    (a stream passes the expected feature size, so a forged header cannot cost more than one sample).
    Raises :class:`WireError` or ``codec.CodecError`` (both ``ValueError``) for a bad frame.
    ``device="cuda"``: codec frames decode on the device, to a device array (``codec.decode``)."""
    mv = memoryview(blob)
    if len(mv) < _HEADER.size or bytes(mv[:4]) != _MAGIC:
        import codec

        return codec.decode(mv, max_elements=max_elements, threads=threads, device=device)
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
    if kind == "int8-zstd":
        return _decode_affine(body, shape, count)
    if kind == "zstd":
        body = memoryview(_unzstd(body, 4 * count, "zstd payload"))
    dtype = np.dtype("<f2") if kind == "fp16" else np.dtype("<f4")
    if len(body) != count * dtype.itemsize:
        raise WireError(
            f"payload has {len(body)} bytes, shape {shape} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(shape).copy()


def _unzstd(body: bytes | memoryview, limit: int, what: str) -> bytes:
    """zstd-decompress ``body`` into at most ``limit`` bytes. The frame's declared content size is
    checked first: ``max_output_size`` bounds only frames that do not declare one (zstandard
    allocates a declared size as it stands), so a forged size would otherwise cost its memory."""
    import zstandard

    data = bytes(body)
    try:
        declared = zstandard.frame_content_size(data)
        if declared > limit:
            raise WireError(f"{what} declares {declared} bytes, more than the {limit} expected")
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=max(limit, 1))
    except zstandard.ZstdError as exc:
        raise WireError(f"{what} does not decompress: {exc}") from None


def _decode_affine(body: memoryview, shape: tuple[int, ...], count: int) -> np.ndarray:
    """An ``int8-zstd`` body: dtype code, scale, zero point, then zstd of ``count`` uint8 values."""
    if len(body) < _AFFINE.size:
        raise WireError("int8-zstd: truncated quantization header")
    code, scale, zero = _AFFINE.unpack_from(body, 0)
    if code >= len(_AFFINE_DTYPES) or not (np.isfinite(scale) and scale > 0):
        raise WireError(f"int8-zstd: bad quantization header (dtype code {code}, scale {scale})")
    q = _unzstd(body[_AFFINE.size :], count, "int8-zstd payload")
    if len(q) != count:
        raise WireError(f"int8-zstd payload has {len(q)} values, shape {shape} needs {count}")
    x = affine_dequant(np.frombuffer(q, dtype=np.uint8), scale, zero)
    return x.astype(_AFFINE_DTYPES[code], copy=False).reshape(shape)


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


def _narrow(values: np.ndarray) -> tuple[int, bytes]:
    """The narrowest signed width that holds ``values`` and their little-endian bytes."""
    lo, hi = (int(values.min()), int(values.max())) if len(values) else (0, 0)
    w = next(w for w in _WIDTHS if np.iinfo(f"i{w}").min <= lo and hi <= np.iinfo(f"i{w}").max)
    return w, values.astype(f"<i{w}").tobytes()


def _count_dtype(n: int) -> str:
    """Run lengths of a row of ``n`` values: 16-bit where they fit."""
    return "<u2" if n <= 0xFFFF else "<u4"


def pack_ints(row: Any) -> bytes:
    """One row of integers (an attention mask, position ids) as the smallest of: raw values at the
    narrowest width, ``start + arange(n)``, runs of equal values, or zstd of the raw form. Lossless:
    :func:`unpack_ints` returns the same int64 values."""
    v = np.asarray(row, dtype=np.int64).ravel()
    n = len(v)
    w, raw = _narrow(v)
    forms = [(_RAW, bytes([w]) + raw)]
    if n and np.array_equal(v, v[0] + np.arange(n)):
        forms.append((_ARANGE, struct.pack("<q", int(v[0]))))
    if n:
        starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
        counts = np.diff(np.r_[starts, n]).astype(_count_dtype(n))
        wv, values = _narrow(v[starts])
        forms.append((_RUNS, struct.pack("<BI", wv, len(starts)) + values + counts.tobytes()))
    if len(raw) > 64:
        import zstandard

        forms.append((_ZSTD, zstandard.ZstdCompressor(level=3).compress(bytes([w]) + raw)))
    form, body = min(forms, key=lambda f: len(f[1]))
    return _ROW.pack(form, n) + body


def _raw_ints(body: memoryview, n: int) -> np.ndarray:
    if len(body) < 1 or body[0] not in _WIDTHS or len(body) != 1 + n * body[0]:
        raise WireError("integer row: bad raw body")
    return np.frombuffer(body[1:], dtype=f"<i{body[0]}").astype(np.int64)


def unpack_ints(blob: bytes | memoryview, max_values: int) -> np.ndarray:
    """Inverse of :func:`pack_ints`; a row declaring more than ``max_values`` values, or whose body
    does not match its header, raises :class:`WireError` before anything that size is allocated."""
    mv = memoryview(blob)
    if len(mv) < _ROW.size:
        raise WireError("integer row: truncated header")
    form, n = _ROW.unpack_from(mv, 0)
    if n > max_values:
        raise WireError(f"integer row declares {n} values, more than {max_values}")
    body = mv[_ROW.size :]
    if form == _RAW:
        return _raw_ints(body, n)
    if form == _ARANGE and len(body) == 8:
        return struct.unpack("<q", body)[0] + np.arange(n, dtype=np.int64)
    if form == _RUNS and len(body) >= 5:
        w, k = struct.unpack_from("<BI", body, 0)
        cw = np.dtype(_count_dtype(n))
        if w in _WIDTHS and 1 <= k <= n and len(body) == 5 + k * (w + cw.itemsize):
            values = np.frombuffer(body[5 : 5 + k * w], dtype=f"<i{w}").astype(np.int64)
            counts = np.frombuffer(body[5 + k * w :], dtype=cw).astype(np.int64)
            if counts.min() >= 1 and int(counts.sum()) == n:
                return np.repeat(values, counts)
    if form == _ZSTD:
        return _raw_ints(memoryview(_unzstd(body, 1 + 8 * n, "integer row: zstd body")), n)
    raise WireError(f"integer row: bad form {form} or body of {len(body)} bytes")


def valid_rows(feat: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The hidden rows of a transformer feature's valid tokens, ``(tokens, H)`` float32 in sample
    order, and each sample's count of them: what the codec codes (padding is never coded)."""
    mask = np.asarray(feat["attention_mask"]) != 0
    rows = np.ascontiguousarray(np.asarray(feat["hidden"])[mask], dtype=np.float32)
    return rows, mask.sum(1)


def add_text_columns(batch: pa.RecordBatch, feat: dict[str, np.ndarray]) -> pa.RecordBatch:
    """A frame batch with the feature's attention mask and position ids as per-sample columns."""
    mask, pos = np.asarray(feat["attention_mask"]), np.asarray(feat["position_ids"])
    n = batch.num_rows
    shared = pos.shape[0] == 1
    if mask.shape[0] != n or (not shared and pos.shape[0] != n):
        raise WireError(f"mask {mask.shape} / positions {pos.shape} do not match {n} samples")
    rows = [pack_ints(pos[0])] + [None] * (n - 1) if shared else [pack_ints(r) for r in pos]
    batch = batch.append_column(
        "attention_mask", pa.array([pack_ints(r) for r in mask], pa.binary())
    )
    batch = batch.append_column("position_ids", pa.array(rows, pa.binary()))
    meta = dict(batch.schema.metadata or {})
    meta[_SHARED_POSITIONS] = b"shared" if shared else b"per-sample"
    return batch.replace_schema_metadata(meta)


def is_text_batch(batch: pa.RecordBatch) -> bool:
    """True when the batch carries a transformer feature's mask and positions."""
    return all(c in batch.schema.names for c in TEXT_COLUMNS)


def text_columns(batch: pa.RecordBatch, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """The attention mask ``(n, T)`` and position ids ``(1 or n, T)`` (int64) of a text batch, checked:
    every row ``T <= max_tokens`` values long, the mask 0/1, the positions shared or per sample as
    the schema says. Raises :class:`WireError`."""
    if not is_text_batch(batch):
        raise WireError(f"not a text batch: columns {batch.schema.names}")
    shared = (batch.schema.metadata or {}).get(_SHARED_POSITIONS)
    if shared not in (b"shared", b"per-sample"):
        raise WireError("text batch: its schema does not say how positions are laid out")
    masks = batch.column("attention_mask").to_pylist()
    pos = batch.column("position_ids").to_pylist()
    if any(m is None for m in masks) or (shared == b"per-sample" and any(p is None for p in pos)):
        raise WireError("text batch: a sample lacks its mask or positions")
    if shared == b"shared" and (not pos or pos[0] is None or any(p is not None for p in pos[1:])):
        raise WireError("text batch: shared positions must sit on the first row alone")
    mask_rows = [unpack_ints(m, max_tokens) for m in masks]
    pos_rows = [unpack_ints(p, max_tokens) for p in pos if p is not None]
    width = {len(r) for r in mask_rows + pos_rows}
    if len(width) > 1:
        raise WireError(f"text batch: rows of different lengths {sorted(width)}")
    mask = np.stack(mask_rows) if mask_rows else np.zeros((0, 0), np.int64)
    if ((mask != 0) & (mask != 1)).any():
        raise WireError("text batch: an attention mask holds values other than 0 and 1")
    t = mask.shape[1]
    return mask, np.stack(pos_rows) if pos_rows else np.zeros((0, t), np.int64)


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
    extra = [c for c in (*EXTRA_COLUMNS, *TEXT_COLUMNS) if c in names]
    ids, groups = batch_to_frames(batch.drop_columns(extra))
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
