"""Symbol representations: dense, bit-packed dense (b <= 4) and CSR-style sparse rows.

Sparse: the flat symbols are cut into rows of ``width`` (<= 255) columns; three streams carry each row's
count of non-zero-point symbols, the column gap before each of them (``col - prev_col - 1``) and their values.
Delta: each symbol minus the one ``param`` positions earlier (the element to the left, the row above or the
same position in the previous channel), modulo 2^bits; repeated rows (padded tokens) and smooth maps turn
into runs of zero residuals.
Packed: 8 // slot symbols share one byte (slot = 1, 2 or 4 bits), first symbol in the low bits, so the
entropy coder sees (and models) small groups of neighbours jointly.
Delta-packed (b <= 4): the residuals at distance ``param``, bit-packed like ``packed``: half (or fewer) the
entropy-coder steps of ``delta``.
Delta-nibble (b >= 5): the residuals at distance ``param``, each within +-7 as a nibble, two per byte; the
others get the escape nibble and travel whole in a second stream (``nnz`` of them). On smooth maps most
residuals are small: fewer entropy-coder steps than ``delta``, and the pairs model neighbours jointly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import _kernels
from .errors import CodecError

DENSE, PACKED, SPARSE, DELTA, DELTA_PACKED, DELTA_NIBBLE = 1, 2, 3, 4, 5, 6
KIND_NAMES = {
    DENSE: "dense",
    PACKED: "packed",
    SPARSE: "sparse",
    DELTA: "delta",
    DELTA_PACKED: "delta-packed",
    DELTA_NIBBLE: "delta-nibble",
}
NIBBLE_MIN_BITS = 5
ESCAPE_ROOM = (
    64  # bytes an escape buffer keeps beyond its escapes (the vector kernels load 64 at a time)
)
MAX_WIDTH = 255


def pack_slot(bits: int) -> int | None:
    """Bits per packed slot for a bit width, or None when packing does not apply."""
    return {1: 1, 2: 2, 3: 4, 4: 4}.get(bits)


@dataclass(frozen=True)
class Layout:
    """Where the zero point of each element lives: zero[(i // inner) % channels]."""

    zero: np.ndarray
    channels: int
    inner: int


Alloc = Callable[[str, int], np.ndarray]


def _fresh(role: str, size: int) -> np.ndarray:
    """A new uint8 array (the default allocator: results the caller may keep)."""
    return np.empty(size, np.uint8)


def residuals(q: np.ndarray, distance: int, bits: int, alloc: Alloc = _fresh) -> np.ndarray:
    """Prediction residuals of ``q`` at ``distance`` (the delta representation's stream)."""
    out = alloc("residuals", q.size)
    _kernels.delta(q, out, distance, (1 << bits) - 1, False)
    return out


def pack(q: np.ndarray, slot: int, alloc: Alloc = _fresh) -> np.ndarray:
    """``q`` bit-packed, ``slot`` bits per symbol."""
    out = alloc("packed", -(-q.size // (8 // slot)))
    _kernels.pack(q, slot, out)
    return out


def nibble_split(res: np.ndarray, bits: int, alloc: Alloc = _fresh) -> list[np.ndarray]:
    """Residuals -> [nibble pairs, escapes] (the delta-nibble streams)."""
    pairs = alloc("packed", -(-res.size // 2))
    esc = alloc("escapes", res.size + ESCAPE_ROOM)
    count = _kernels.nibble_split(res, (1 << bits) - 1, pairs, esc)
    return [pairs, esc[:count]]


def packed_slot(bits: int) -> int:
    """The slot of a bit width that packs (b <= 4); CodecError otherwise."""
    slot = pack_slot(bits)
    if slot is None or slot == 8:
        raise CodecError(f"{bits}-bit symbols do not pack")
    return slot


def split(
    q: np.ndarray, kind: int, param: int, layout: Layout, bits: int = 8, alloc: Alloc = _fresh
) -> list[np.ndarray]:
    """Symbols -> the representation's streams (``alloc(role, size)`` gives their arrays: new ones by
    default, the encoder's scratch buffers when it codes them at once)."""
    if kind == DENSE:
        return [q]
    if kind == DELTA:
        return [residuals(q, param, bits, alloc)]
    if kind == PACKED:
        return [pack(q, param, alloc)]
    if kind == DELTA_PACKED:
        return [pack(residuals(q, param, bits, alloc), packed_slot(bits), alloc)]
    if kind == DELTA_NIBBLE:
        return nibble_split(residuals(q, param, bits, alloc), bits, alloc)
    if kind == SPARSE:
        rows = -(-q.size // param)
        counts = np.empty(rows, np.uint8)
        gaps = np.empty(q.size, np.uint8)
        vals = np.empty(q.size, np.uint8)
        nnz = _kernels.csr_split(
            q, layout.zero, layout.channels, layout.inner, param, counts, gaps, vals
        )
        return [counts, gaps[:nnz], vals[:nnz]]
    raise CodecError(f"unknown representation {kind}")


def stream_lengths(kind: int, param: int, n: int, nnz: int, bits: int) -> list[int]:
    """Symbol count of each stream of a representation."""
    if kind in (DENSE, DELTA):
        return [n]
    if kind == PACKED:
        return [-(-n // (8 // param))]
    if kind == DELTA_PACKED:
        return [-(-n // (8 // packed_slot(bits)))]
    if kind == DELTA_NIBBLE:
        return [-(-n // 2), nnz]
    return [-(-n // param), nnz, nnz]


def validate(kind: int, param: int, bits: int) -> None:
    """Reject representation parameters a decoder must not use (they come from the wire)."""
    if kind == DENSE:
        return
    if kind in (DELTA, DELTA_PACKED, DELTA_NIBBLE):
        if param < 1:
            raise CodecError("bad delta distance")
        if kind == DELTA_PACKED:
            packed_slot(bits)
        if kind == DELTA_NIBBLE and bits < NIBBLE_MIN_BITS:
            raise CodecError(f"delta-nibble needs at least {NIBBLE_MIN_BITS}-bit symbols")
        return
    if kind == PACKED:
        if param not in (1, 2, 4) or bits > param:
            raise CodecError("bad packing parameter")
        return
    if kind == SPARSE:
        if not 1 <= param <= MAX_WIDTH:
            raise CodecError("bad sparse row width")
        return
    raise CodecError(f"unknown representation {kind}")


def with_room(esc: np.ndarray) -> np.ndarray:
    """Escapes in a buffer with ESCAPE_ROOM spare bytes after them (what the merge kernels read)."""
    out = np.zeros(esc.size + ESCAPE_ROOM, np.uint8)
    out[: esc.size] = esc
    return out


def merge(
    streams: list[np.ndarray], kind: int, param: int, n: int, layout: Layout, bits: int = 8
) -> np.ndarray:
    """The representation's streams -> symbols; raises CodecError if they are inconsistent."""
    if kind == DENSE:
        return streams[0]
    if kind == DELTA:
        out = np.empty(n, np.uint8)
        _kernels.delta(streams[0], out, param, (1 << bits) - 1, True)
        return out
    if kind == PACKED:
        out = np.empty(n, np.uint8)
        _kernels.unpack(streams[0], param, out)
        return out
    if kind in (DELTA_PACKED, DELTA_NIBBLE):
        res = np.empty(n, np.uint8)
        if kind == DELTA_PACKED:
            _kernels.unpack(streams[0], packed_slot(bits), res)
        elif not _kernels.nibble_merge(
            streams[0], with_room(streams[1]), streams[1].size, (1 << bits) - 1, res
        ):
            raise CodecError("nibble escapes do not match their stream")
        out = np.empty(n, np.uint8)
        _kernels.delta(res, out, param, (1 << bits) - 1, True)
        return out
    counts, gaps, vals = streams
    out = np.empty(n, np.uint8)
    if not _kernels.csr_merge(
        counts, gaps, vals, layout.zero, layout.channels, layout.inner, param, out
    ):
        raise CodecError("inconsistent sparse streams")
    return out
