"""Malformed frames: truncated, bit-flipped, length-lied, version-bumped, oversized-shape and random frames
raise CodecError within bounded time and memory; none crashes the process."""

import struct
import tracemalloc
import zlib
from collections import Counter

import numpy as np
import pytest
from framebytes import reseal

import codec
from codec import _kernels, frame
from codec.contexts import ContextSpec
from codec.costmodel import RANS
from codec.represent import DENSE


def sample_inputs() -> list[tuple[np.ndarray, dict]]:
    """Tensors and the ``codec.encode`` keywords of the sample frames."""
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.normal(size=(2, 16, 12, 12)).astype(np.float32) - 0.3, 0)
    dense = rng.normal(size=(3, 50)).astype(np.float32)
    return [
        (relu, {"bits": 8, "level": 1}),
        (relu, {"bits": 4, "axis": 1, "level": 9}),
        (relu, {"bits": 2, "level": 3}),
        (dense, {"bits": 6, "level": 9}),
        (dense.astype(np.float16), {"bits": 3}),
        (np.zeros((0, 4), np.float32), {}),
        (np.float32(1.5), {}),
    ]


def sample_frames() -> list[bytes]:
    return [codec.encode(x, **kw) for x, kw in sample_inputs()]


def decode_or_codec_error(blob: bytes) -> np.ndarray | None:
    """Either a valid array of the declared shape or CodecError; anything else fails the test."""
    try:
        out = codec.decode(blob, max_elements=1 << 20)
    except codec.CodecError:
        return None
    assert out.shape == codec.inspect(blob).shape and out.size <= 1 << 20
    return out


def test_valid_frames_decode() -> None:
    for x, kw in sample_inputs():
        out = decode_or_codec_error(codec.encode(x, **kw))
        assert out is not None and out.shape == np.shape(x) and out.dtype == np.asarray(x).dtype
        step = float(np.ptp(x)) / ((1 << kw.get("bits", 8)) - 1) if np.size(x) else 0.0
        assert np.all(np.abs(out.astype(np.float64) - x) <= step)  # within one quantization step


def test_fuzz_ten_thousand_mutations() -> None:
    """Every mutant decodes or raises CodecError, in bounded memory (a hang is test_fuzz's libFuzzer
    finding, -timeout=10). Stale checksums, truncations and junk are always refused; forged
    frames (checksum recomputed) sometimes decode, as a payload bit flip may leave a valid frame."""
    rng = np.random.default_rng(1234)
    frames = sample_frames()
    tracemalloc.start()
    tried: Counter[int] = Counter()
    decoded: Counter[int] = Counter()
    unchanged = 0  # stale-checksum mutants whose flips cancelled out
    for i in range(10_000):
        blob = bytearray(frames[i % len(frames)])
        body = blob[:-4]
        kind = i % 6
        if kind == 0:  # truncated (keeping or losing the checksum)
            cut = int(rng.integers(0, len(blob)))
            mutated = bytes(blob[:cut]) if i % 12 else reseal(bytes(body[: max(cut - 4, 0)]))
        elif kind == 1:  # bit flips, checksum left stale
            for _ in range(int(rng.integers(1, 4))):
                k = int(rng.integers(0, len(blob)))
                blob[k] ^= 1 << int(rng.integers(0, 8))
            mutated = bytes(blob)
            unchanged += mutated == frames[i % len(frames)]
        elif kind == 2:  # bit flips with a recomputed checksum (forged frames)
            for _ in range(int(rng.integers(1, 4))):
                k = int(rng.integers(0, len(body)))
                body[k] ^= 1 << int(rng.integers(0, 8))
            mutated = reseal(bytes(body))
        elif kind == 3:  # a length or count field lies (random u32 written over a header word)
            k = int(rng.integers(4, max(min(len(body) - 4, 80), 5)))
            body[k : k + 4] = struct.pack("<I", int(rng.integers(0, 2**32)))
            mutated = reseal(bytes(body[: len(blob) - 4]))
        elif kind == 4:  # version bump or random header byte
            k = 4 if i % 2 else int(rng.integers(0, min(16, len(body))))
            body[k] = (body[k] + int(rng.integers(1, 256))) % 256
            mutated = reseal(bytes(body))
        else:  # random bytes, sometimes with a valid magic, version and checksum
            junk = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
            mutated = reseal(b"SPLT\x01" + junk) if i % 2 else junk
        tried[kind] += 1
        decoded[kind] += decode_or_codec_error(mutated) is not None
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert decoded[0] == decoded[5] == 0  # no truncated frame or junk decodes
    assert decoded[1] == unchanged  # a stale checksum is always caught
    for kind in (2, 3, 4):  # forged frames: some decode (the decoder is not refusing everything)
        assert 0.02 < decoded[kind] / tried[kind] < 0.5, (kind, decoded[kind], tried[kind])
    # bounded memory: no allocation driven by a lying header (tracemalloc sees NumPy's allocations and
    # the C kernels', which go through PyMem_RawMalloc: see test_kernel_allocations_are_traced)
    assert peak < 64 * 2**20


def test_kernel_allocations_are_traced():
    """The C kernels allocate through PyMem_RawMalloc, so the memory bounds above count them: the
    sparse statistics take a mask as large as their input, and tracemalloc sees it."""
    q = np.zeros(16 * 2**20, np.uint8)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        _kernels.csr_stats(q, np.zeros(1, np.uint8), 1, q.size, (16,), 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base >= q.size


def forge_rans_frame(ctx: ContextSpec, prob_bits: int, freqs: np.ndarray) -> bytes:
    """A well-checksummed dense 64 x 32 frame with one rANS stream of the given context and tables,
    whose single block is all zero (an invalid block)."""
    payload = struct.pack("<I", 128) + bytes(128)
    stream = frame.StreamHeader(RANS, prob_bits, 16, ctx, freqs, payload)
    one, zero = np.ones(1, np.float32), np.zeros(1, np.uint8)
    return frame.write(frame.Frame("float32", 8, (64, 32), None, one, zero, DENSE, 0, 0, [stream]))


def test_forged_zero_channel_count_with_groups_is_a_codec_error():
    """A context with channel groups but zero channels (an empty group map) is refused as malformed
    (it used to surface as NumPy's ValueError from the empty map)."""
    ctx = ContextSpec(channels=2, inner=1024, group=np.array([0, 1], np.uint8))
    body = bytearray(forge_rans_frame(ctx, 12, np.full((2, 256), 16, np.uint16))[:-4])
    # the stream's context channel count: after the 13-byte fixed header, 2 shape words, nq, one scale,
    # one zero point, nnz, the stream count, then coding, prob_bits and block_log2
    at = 13 + 8 + 4 + 4 + 1 + 4 + 1 + 3
    assert struct.unpack_from("<I", body, at)[0] == 2
    body[at : at + 4] = struct.pack("<I", 0)
    with pytest.raises(codec.CodecError, match="context layout") as err:
        codec.decode(reseal(bytes(body)))
    assert type(err.value) is codec.CodecError


def test_widest_forged_tables_stay_small():
    """The largest context a header can declare (64 groups x 4 neighbor buckets = 256 tables) at the
    widest probabilities (15 bits) costs the decoder one byte per slot, not an 8-byte slot entry: a few
    megabytes for a frame of a few kilobytes, and the bad block is still a CodecError."""
    group = np.arange(64, dtype=np.uint8)
    ctx = ContextSpec(channels=64, inner=32, group=group, nb_dist=32, nbuckets=4)
    freqs = np.zeros((ctx.ntables, 256), np.uint16)
    freqs[:, 7] = 1 << 15
    blob = forge_rans_frame(ctx, 15, freqs)
    assert len(blob) < 16 * 2**10
    tracemalloc.start()
    try:
        with pytest.raises(codec.CodecError, match="corrupted"):
            codec.decode(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 8 * 2**20 <= peak < 12 * 2**20


def test_oversized_shape_rejected_before_allocation():
    blob = bytearray(codec.encode(np.ones((4, 4), np.float32)))
    body = blob[:-4]
    # shape words start after the fixed 13-byte header
    body[13:17] = struct.pack("<I", 2**31)
    body[17:21] = struct.pack("<I", 2**31)
    with pytest.raises(codec.CodecError, match="limit"):
        codec.decode(reseal(bytes(body)))


def test_version_bump_named():
    blob = bytearray(codec.encode(np.ones(8, np.float32)))
    body = blob[:-4]
    body[4] = frame.VERSION + 1
    with pytest.raises(codec.CodecError, match="version"):
        codec.decode(reseal(bytes(body)))


def test_checksum_and_magic():
    blob = codec.encode(np.arange(100, dtype=np.float32))
    with pytest.raises(codec.CodecError, match="checksum"):
        codec.decode(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(codec.CodecError, match="magic"):
        codec.decode(b"XXXX" + blob[4:])
    with pytest.raises(codec.CodecError):
        codec.decode(b"")
    with pytest.raises(codec.CodecError):
        codec.decode(12345)  # type: ignore[arg-type]


def test_max_elements_is_enforced():
    blob = codec.encode(np.zeros((64, 64), np.float32))
    with pytest.raises(codec.CodecError, match="limit"):
        codec.decode(blob, max_elements=1000)
    assert codec.decode(blob, max_elements=4096).shape == (64, 64)


def test_an_empty_frame_with_a_huge_shape_is_refused():
    """A zero dimension makes a frame empty, but its other dimensions still count against the limit: numpy
    will not make a (2^31, 2^31, 0) array (a libFuzzer finding, now tests/fuzz/corpus/empty-huge-shape.frame)."""
    ok = codec.encode(np.zeros((4, 0), np.float32))
    assert codec.decode(ok).shape == (4, 0)
    forged = _reshaped(ok, (2181038083, 1476395008, 0))
    with pytest.raises(codec.CodecError, match="shape of .* elements, more than the limit"):
        codec.decode(forged)
    with pytest.raises(codec.CodecError, match="limit"):
        codec.inspect(forged)
    assert codec.decode(_reshaped(ok, (1000, 0)), max_elements=1000).shape == (1000, 0)
    with pytest.raises(codec.CodecError, match="limit"):
        codec.decode(_reshaped(ok, (1001, 0)), max_elements=1000)


def _reshaped(blob: bytes, shape: tuple[int, ...]) -> bytes:
    """``blob`` (an empty frame, axis -1) with its shape (from byte 13) replaced and its checksum resealed."""
    ndim = blob[8]
    body = bytearray(blob[:-4])
    body[8] = len(shape)
    body[13 : 13 + 4 * ndim] = struct.pack(f"<{len(shape)}I", *shape)
    return reseal(body)


@pytest.mark.parametrize(
    "clmul",
    [
        pytest.param(
            True,
            marks=pytest.mark.skipif(
                not _kernels.CLMUL, reason="no carry-less multiply on this CPU: only the table path"
            ),
        ),
        False,
    ],
)
def test_checksum_is_zlib_crc32(clmul):
    """The frame's CRC-32 kernel gives zlib's value on both paths, for every length around the 16- and
    64-byte fold boundaries, unaligned starts and chained calls."""
    rng = np.random.default_rng(11)
    data = rng.integers(0, 256, 300_000).astype(np.uint8).tobytes()
    prev = _kernels.set_clmul(clmul)
    try:
        for n in [*range(0, 300), 1023, 1024, 65_535, 65_536, 299_990]:
            start = int(rng.integers(0, 9))
            seed = int(rng.integers(0, 2**32))
            chunk = data[start : start + n]
            assert _kernels.crc32(chunk, seed) == zlib.crc32(chunk, seed)
        half = len(data) // 3
        assert _kernels.crc32(data[half:], _kernels.crc32(data[:half])) == zlib.crc32(data)
    finally:
        _kernels.set_clmul(prev)


def test_the_c_parser_knows_the_format_python_writes():
    """The header parser in C and the writer in Python share the version and the channel-group limit."""
    from codec import _kernels
    from codec.contexts import MAX_GROUPS

    assert _kernels.FRAME_VERSION == frame.VERSION
    assert _kernels.FRAME_MAX_GROUPS == MAX_GROUPS
