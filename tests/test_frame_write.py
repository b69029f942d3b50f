"""The C lean frame writer (``csrc/frame_write.c``): the same bytes as the Python writer for every lean
candidate, and a clear error for every bad argument."""

from __future__ import annotations

import numpy as np
import pytest

import codec
from codec import _kernels, api, represent
from codec.costmodel import STORED, candidates

RNG = np.random.default_rng(7)


def _smooth(shape: tuple[int, ...]) -> np.ndarray:
    x = np.cumsum(RNG.normal(size=shape), axis=-1)
    return (x / np.abs(x).max()).astype(np.float32)


TENSORS = {
    "relu": np.maximum(RNG.normal(size=(2, 8, 24, 24)), 0).astype(np.float32),
    "gaussian": RNG.normal(size=(3, 16, 20, 20)).astype(np.float32),
    "smooth": _smooth((4, 12, 96)),
    "tiny": RNG.normal(size=(3, 5, 7)).astype(np.float32),
    # 96 Ki elements: sampled stream counts at level 1 (streams of 64 Ki symbols or more)
    "large-relu": np.maximum(RNG.normal(size=(1, 24, 64, 64)), 0).astype(np.float32),
    "large-smooth": _smooth((2, 48, 1024)),
}


def _lean_candidates(x: np.ndarray, bits: int, level: int, axis: int | None):
    sampled = level < 6 and x.size >= 4096
    p = api.prepare(x, bits, axis, fast_stats=level == 1, histogram=not sampled)
    blog = api._block_log2(level, p.q.size)
    return p, blog, [c for c in candidates(p.info, level, blog) if api.is_lean(c)]


class TestLeanFrame:
    @pytest.mark.parametrize("name", sorted(TENSORS))
    @pytest.mark.parametrize("bits", [8, 6, 5, 4, 2, 1])
    def test_same_bytes_as_the_python_writer(self, name, bits):
        x = TENSORS[name]
        seen = 0
        for level in (1, 3):
            for axis in (None, 1):
                p, blog, cands = _lean_candidates(x, bits, level, axis)
                for cand in cands:
                    blob = api.encode_lean(p, cand, blog)
                    assert blob == api.encode_streams(p, cand, blog), (level, axis, cand.name)
                    seen += 1
        assert seen > 0
        y = codec.decode(codec.encode(x, bits=bits, level=1))
        assert y.shape == x.shape

    def test_every_lean_kind_is_covered(self):
        kinds = set()
        for name in ("relu", "smooth", "large-smooth"):
            for bits in (8, 4):
                kinds |= {c.kind for c in _lean_candidates(TENSORS[name], bits, 1, None)[2]}
        lean_kinds = set(represent.KIND_NAMES) - {represent.SPARSE}
        assert kinds == lean_kinds

    def test_level1_encode_uses_it(self, monkeypatch):
        calls = []
        real = api.encode_lean
        monkeypatch.setattr(api, "encode_lean", lambda *a: calls.append(1) or real(*a))
        blob = codec.encode(TENSORS["gaussian"], bits=8, level=1)
        assert calls and codec.inspect(blob).representation != "sparse"

    def test_multi_threaded_coding_gives_the_same_bytes(self):
        x = TENSORS["large-smooth"]
        assert codec.encode(x, level=1, threads=2) == codec.encode(x, level=1)

    def test_a_stored_stream_is_written_as_stored(self):
        p, blog, cands = _lean_candidates(TENSORS["tiny"], 8, 1, None)
        cand = cands[0]
        cand.streams[0].coding = STORED
        assert api.encode_lean(p, cand, blog) == api.encode_streams(p, cand, blog)


def _args(**change):
    q = np.arange(64, dtype=np.uint8)
    args = {
        "q": q,
        "dtype": 0,
        "bits": 8,
        "shape": (64,),
        "axis": -1,
        "scale": np.ones(1, np.float32),
        "zero": np.zeros(1, np.uint8),
        "kind": represent.DENSE,
        "param": 0,
        "prob_bits": 12,
        "block_log2": 16,
        "streams": ((1, 0, 0),),
        "given": None,
        "sample_min": 1 << 16,
        "work": np.empty(1 << 16, np.uint8),
    }
    args.update(change)
    return tuple(args.values())


class TestLeanFrameErrors:
    def test_valid_arguments_give_a_frame(self):
        blob = _kernels.lean_frame(*_args())
        assert np.array_equal(codec.decode(blob), np.arange(64, dtype=np.float32))

    @pytest.mark.parametrize(
        "change",
        [
            {"kind": represent.SPARSE, "param": 8, "streams": ((1, 0, 0),) * 3},
            {"kind": 9},
            {"streams": ((1, 0, 0), (1, 0, 0))},
            {"streams": ((2, 0, 0),)},
            {"streams": ((1, 1, 0),)},  # given counts without counts
            {"streams": ((1, 2, 300),)},
            {"kind": represent.PACKED, "param": 3},
            {"kind": represent.DELTA_NIBBLE, "bits": 4, "param": 1, "streams": ((1, 0, 0),) * 2},
            {"kind": represent.DELTA, "param": 0},
            {"prob_bits": 16},
            {"block_log2": 4},
            {"shape": (1 << 32,)},
            {"axis": 1},
            {"zero": np.zeros(2, np.uint8)},
            {"work": np.empty(64, np.uint8)},
            {"given": np.ones(16, np.uint32), "streams": ((1, 1, 0),)},
        ],
    )
    def test_bad_arguments_are_a_codec_error(self, change):
        with pytest.raises(codec.CodecError):
            _kernels.lean_frame(*_args(**change))

    def test_counts_that_miss_a_symbol_are_a_codec_error(self):
        given = np.zeros(256, np.uint32)
        given[:10] = 1  # the symbols go up to 63
        with pytest.raises(codec.CodecError, match="zero frequency"):
            _kernels.lean_frame(*_args(given=given, streams=((1, 1, 0),)))

    def test_a_read_only_work_buffer_is_refused(self):
        work = np.empty(1 << 16, np.uint8)
        work.flags.writeable = False
        with pytest.raises(TypeError):
            _kernels.lean_frame(*_args(work=work))
