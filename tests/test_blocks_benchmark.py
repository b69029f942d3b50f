"""The block-size study (benchmarks/blocks.py) on a small tensor: one row per block size, the bytes
per block it reports, and the GPU work it counts."""

from __future__ import annotations

import numpy as np

import codec
from benchmarks import blocks


def test_one_row_per_block_size_with_the_gpu_work_counted():
    x = np.random.default_rng(3).normal(size=(4, 16, 32, 32)).astype(np.float32)  # 64 Ki elements
    rows = blocks.measure("gaussian", x, 8, 3, repeats=1)
    assert [r["block_log2"] for r in rows] == list(blocks.BLOCK_LOG2S)
    by = {r["block_log2"]: r for r in rows}
    # dense 8-bit: one rANS stream of every element; a warp per block, block / 32 steps per lane
    assert by[12]["gpu_blocks"] == x.size >> 12 and by[12]["gpu_steps_per_lane"] == 128
    assert by[16]["gpu_blocks"] == 1 and by[16]["gpu_steps_per_lane"] == 2048
    assert by[18]["gpu_steps_per_lane"] == 2048  # the stream is shorter than one block
    # 16 blocks of 4 Ki instead of one: 15 more lane-state sets and index entries, 132 bytes each (the
    # final states also carry some of the coded information, so the net cost is a little less)
    assert 15 * 132 * 0.5 < by[12]["bytes"] - by[16]["bytes"] <= 15 * 132 + 64
    assert by[16]["size_vs_64k"] == 1.0
    assert all(r["enc_eps"] > 0 and r["dec_eps"] > 0 for r in rows)


def test_encode_at_gives_frames_the_decoder_reads_at_any_block_size():
    x = np.maximum(np.random.default_rng(4).normal(size=(2, 8, 40, 40)), 0).astype(np.float32)
    for blog in blocks.BLOCK_LOG2S:
        y = codec.decode(blocks.encode_at(x, 8, 1, blog))
        assert np.allclose(y, x, atol=float(x.max()) / 255)


def test_the_summary_table_renders():
    x = np.random.default_rng(5).normal(size=(2, 8, 32, 32)).astype(np.float32)
    rows = blocks.measure("g", x, 8, 3, repeats=1) + blocks.measure("g", x, 4, 3, repeats=1)
    summary = blocks.summarize(rows)
    assert len(summary) == 2 * len(blocks.BLOCK_LOG2S)
    text = blocks.render_tables({"summary": summary})["summary"]
    assert "GPU steps per lane" in text and "4 Ki" in text
