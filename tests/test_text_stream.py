"""Text models through the stream: text sources, a transformer head's dict features on the wire (valid
tokens' hidden rows coded, mask and positions in their own columns), text fidelity, and two short Ray
streams (MiniLM fused at 8 bits; llama-tiny in separate actors from a JSONL file)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import codec
from actors import Decoder, Encoder, HeadModel, Sink, TailModel
from pipeline.models.byte_tokenizer import ByteTokenizer
from pipeline.stream.config import ConfigError, load_config
from pipeline.stream.data import DEFAULT_TEXTS, SampleSource, load_texts, tokenize
from pipeline.stream.ledger import DeliveryLedger
from pipeline.stream.preflight import preflight
from pipeline.stream.wire import WireError, pack_ints, unpack_ints
from splitstream.runner import run_pipeline

MINILM = ["model.name=minilm", "model.split=encoder.layer.3"]
LLAMA = ["model.name=llama-tiny", "model.split=layers.1"]


@pytest.fixture(scope="module")
def minilm():
    """The MiniLM stream's preflight (the packaged weights and tokenizer, split after layer 3)."""
    return preflight(load_config(None, MINILM))


@pytest.fixture(scope="module")
def llama():
    return preflight(load_config(None, LLAMA))


def _head_batch(pre, ids) -> dict:
    """Source and head of samples ``ids``: the batch an encoder gets."""
    x, _ = SampleSource(pre.source).get(ids)
    batch = {
        "ids": np.asarray(ids),
        "x": x,
        "labels": None,
        "t_src": np.full(len(ids), time.time()),
    }
    return HeadModel(pre.factory).process(batch)[1]


# ------------------------------------------------------------------ text sources


def test_texts_come_from_lines_or_jsonl_with_clear_errors(tmp_path):
    lines = tmp_path / "prompts.txt"
    lines.write_text("first prompt\n\n  second prompt  \n")
    assert load_texts(lines) == ("first prompt", "second prompt")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"text": "a"}\n\n{"text": "b", "id": 3}\n')
    assert load_texts(jsonl) == ("a", "b")
    sniffed = tmp_path / "p.txt"  # JSON objects are read as JSONL whatever the suffix
    sniffed.write_text('{"text": "only"}\n')
    assert load_texts(sniffed) == ("only",)
    assert load_texts(None) == DEFAULT_TEXTS
    jsonl.write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(ValueError, match=r"data.path: .*p.jsonl:2: .*'text'"):
        load_texts(jsonl)
    jsonl.write_text('{"text": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: not a JSON object"):
        load_texts(jsonl)
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="holds no sentences"):
        load_texts(tmp_path / "empty.txt")


def test_batches_are_padded_to_their_own_longest_sentence(minilm):
    src = SampleSource(minilm.source)
    texts = minilm.source.text.texts
    lengths = [len(src.get([i])[0]["input_ids"][0]) for i in range(len(texts))]
    short = [i for i, n in enumerate(lengths) if n <= 8]
    assert len(short) >= 2 and max(lengths) > 25  # the built-in set mixes short and long ones
    x, labels = src.get(short)
    assert labels is None and x["input_ids"].shape[1] == max(lengths[i] for i in short)
    mixed = short + [int(np.argmax(lengths))]
    x, _ = src.get(mixed)
    assert x["input_ids"].shape == (len(mixed), max(lengths))
    assert x["attention_mask"].sum(1).tolist() == [lengths[i] for i in mixed]
    # sample ids wrap around the set, so a stream can be longer than it
    assert src.get([len(texts)])[0]["input_ids"].tolist() == src.get([0])[0]["input_ids"].tolist()


def test_a_model_without_tokenizer_gets_bytes(llama):
    assert llama.source.text.tokenizer == "bytes"
    tok = ByteTokenizer(vocab_size=1000)
    out = tokenize(tok, ["ab", "abcd", "é"], max_tokens=4)
    assert out["input_ids"].tolist() == [[1, 100, 101, 0], [1, 100, 101, 102], [1, 198, 172, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0]]


# ------------------------------------------------------------------ masks and positions on the wire


def test_integer_rows_pack_losslessly_and_small():
    mask = np.r_[np.ones(30), np.zeros(18)].astype(np.int64)
    pos = np.arange(48) + 5
    noisy = np.random.default_rng(0).integers(-(2**40), 2**40, size=300)
    for row in (mask, pos, noisy, np.zeros(0, np.int64), np.array([7]), np.tile([0, 1], 200)):
        assert unpack_ints(pack_ints(row), len(row)).tolist() == row.tolist()
    assert len(pack_ints(mask)) < 20 and len(pack_ints(pos)) == 13  # runs; start + arange
    assert len(pack_ints(np.tile([0, 1], 200))) < 100  # zstd where it pays
    with pytest.raises(WireError, match="more than 47"):
        unpack_ints(pack_ints(mask), 47)
    for cut in (3, len(pack_ints(mask)) - 1):
        with pytest.raises(WireError):
            unpack_ints(pack_ints(mask)[:cut], 48)


def test_padded_positions_cost_no_codec_bytes(minilm):
    """A batch of long and short sentences codes exactly its valid tokens' hidden rows; padding the
    same batch to four times its length changes no codec byte."""
    texts = minilm.source.text.texts
    batch = _head_batch(minilm, list(range(len(texts))))
    feat = batch["feat"]
    mask = feat["attention_mask"]
    tokens, width = int(mask.sum()), mask.shape[1]
    assert tokens < 0.7 * mask.size  # much of the batch is padding
    meta, rb = Encoder(kind="ours").process(batch)
    frame = rb.column("frame")[0].as_py()
    assert codec.inspect(frame).shape == (tokens, 384)
    assert meta["tokens"] == tokens and meta["positions"] == mask.size
    assert meta["bytes_in"] == tokens * 384 * 4  # raw: the valid rows in fp32, not the padding
    # pad every sample by 3 widths more (garbage in the padded rows): the same frame
    extra = 3 * width
    rng = np.random.default_rng(0)
    garbage = rng.standard_normal((len(mask), extra, 384)).astype(np.float32) * 50
    padded = {
        "hidden": np.concatenate([feat["hidden"], garbage], 1),
        "attention_mask": np.pad(mask, ((0, 0), (0, extra))),
        "position_ids": np.arange(width + extra)[None],
    }
    meta2, rb2 = Encoder(kind="ours").process({**batch, "feat": padded})
    assert rb2.column("frame")[0].as_py() == frame and meta2["bytes_out"] == meta["bytes_out"]
    # one frame per sample: each sample's frame holds exactly its own tokens
    _, rb3 = Encoder(kind="ours", frame="sample").process({**batch, "feat": padded})
    shapes = [codec.inspect(f).shape for f in rb3.column("frame").to_pylist()]
    assert shapes == [(int(n), 384) for n in mask.sum(1)]


def test_the_tail_gets_what_it_gets_in_evaluate(minilm):
    """Through the encoder and decoder the tail's input is the head's dict: same keys, dtypes and
    shapes, the same mask and positions, the hidden states of valid tokens (exactly, at fp32), zeros
    where the mask is 0; the tail's output at valid tokens is the uncompressed model's."""
    _, tail = minilm.factory()
    batch = _head_batch(minilm, [0, 3, 6, 10])
    feat = batch["feat"]
    dec = Decoder(minilm.feature_shape, text=True)
    for kind, tol in (("fp32", 1e-5), ("ours", 0.05)):
        _, rb = Encoder(kind=kind).process(batch)
        meta, out = dec.process(rb)
        got = out["feat"]
        assert meta["rejected_ids"] == [] and out["ids"].tolist() == [0, 3, 6, 10]
        assert got.keys() == feat.keys()
        for k in feat:
            assert got[k].dtype == feat[k].dtype and got[k].shape == feat[k].shape, k
        assert np.array_equal(got["attention_mask"], feat["attention_mask"])
        assert np.array_equal(got["position_ids"], feat["position_ids"])
        valid = feat["attention_mask"] != 0
        assert not got["hidden"][~valid].any()
        if kind == "fp32":
            assert np.array_equal(got["hidden"][valid], feat["hidden"][valid])
        with torch.inference_mode():
            ref = tail({k: torch.from_numpy(v) for k, v in feat.items()}).numpy()
            test = tail({k: torch.from_numpy(v) for k, v in got.items()}).numpy()
        err = np.abs(ref[valid] - test[valid]).max() / np.abs(ref[valid]).max()
        assert err < tol, (kind, err)


def test_the_decoder_rejects_text_batches_that_do_not_add_up(minilm):
    import pyarrow as pa

    batch = _head_batch(minilm, [0, 1, 2])
    dec = Decoder(minilm.feature_shape, text=True)
    _, rb = Encoder(kind="ours", frame="sample").process(batch)
    # sample 1's mask claims one token more than its frame holds: only sample 1 is rejected
    masks = rb.column("attention_mask").to_pylist()
    row = unpack_ints(masks[1], 512)
    row[int(row.sum())] = 1
    masks[1] = pack_ints(row)
    i = rb.schema.get_field_index("attention_mask")
    forged = rb.set_column(i, rb.schema.field(i), pa.array(masks, pa.binary()))
    meta, out = dec.process(forged)
    assert meta["rejected_ids"] == [1] and out["ids"].tolist() == [0, 2]
    assert out["feat"]["hidden"].shape[0] == 2 and "expected" in meta["errors"][0]
    # a mask longer than the model takes rejects the batch before anything that size is built
    masks[1] = pack_ints(np.ones(600, np.int64))
    meta, out = dec.process(rb.set_column(i, rb.schema.field(i), pa.array(masks, pa.binary())))
    assert meta["rejected_ids"] == [0, 1, 2] and "more than 512" in meta["errors"][0]
    # an image batch is no text batch, and the other way round
    image = Encoder(kind="ours").process({**batch, "feat": np.ones((3, 4, 4), np.float32)})[1]
    assert dec.process(image)[0]["rejected_ids"] == [0, 1, 2]
    assert Decoder((4, 4)).process(rb)[0]["rejected_ids"] == [0, 1, 2]


# ------------------------------------------------------------------ fidelity


def test_decoder_lm_fidelity_is_exact_at_fp32_and_counted_once(llama):
    """Source to sink in one process (no Ray): llama-tiny at fp32 agrees on every next token with no
    log-likelihood difference; at 2 bits it does not; a repeated batch is not counted twice."""
    tail = TailModel(llama.factory, kind="decoder", reference_samples=6)
    sink = Sink(llama.source, llama.factory, reference_samples=6)
    feat = _head_batch(llama, list(range(8)))
    summaries = {}
    for kind, bits in (("fp32", 8), ("ours", 2)):
        led = DeliveryLedger(8)
        out = Decoder(llama.feature_shape, text=True).process(
            Encoder(kind=kind, settings=codec.CodecSettings(bits)).process(feat)[1]
        )[1]
        res = tail.process(out)[1]
        assert [v is None for v in res["valid_logits"]] == [False] * 6 + [True] * 2
        meta = sink.receive(res)[0]
        for _ in range(2):  # the second time is a replay: dropped
            led.deliver(
                meta["ids"], meta["latency_s"], meta["correct"], meta["agree"], meta["text"]
            )
        s = led.summary()
        assert s["delivered"] == 8 and s["duplicates_dropped"] == 8 and s["reference_samples"] == 6
        summaries[kind] = (s, led.text.summary())
    s, text = summaries["fp32"]
    assert s["agreement"] == 1.0 and text["next_token_agreement"] == 1.0
    assert abs(text["loglik_delta"]) < 1e-6 and text["next_tokens"] == sum(
        int(feat["feat"]["attention_mask"][i].sum()) - 1 for i in range(6)
    )
    _, text2 = summaries["ours"]
    assert text2["next_token_agreement"] < 1.0 and text2["loglik_delta_min"] < -1e-4


# ------------------------------------------------------------------ config and preflight


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.source=digits"], "data.source"),
        (["data.shape=[3,8,8]"], "data.shape"),
        (["rate.mode=adaptive", "rate.latency_slo_ms=500"], "rate.mode"),
        (["data.path=/nonexistent/prompts.txt"], "data.path"),
        (["data.source=synthetic", "data.path=README.md"], "data.path"),
    ],
)
def test_text_config_errors_name_their_key_before_ray(overrides, key):
    import ray

    with pytest.raises(ConfigError, match=rf"^{key}: "):
        run_pipeline(load_config(None, [*LLAMA, *overrides]), progress=False)
    assert not ray.is_initialized()


def test_text_needs_a_text_model():
    from tiny_stream import tiny_config, tiny_factory

    with pytest.raises(ConfigError, match=r"^data.source: text needs a text model"):
        preflight(tiny_config("data.source=text", "data.shape=null"), tiny_factory)


# ------------------------------------------------------------------ through Ray


def test_minilm_streams_every_sentence_once_with_embedding_cosine(ray_local):
    cfg = load_config(
        "configs/demo.yaml",
        [*MINILM, "samples=40", "batching.max_batch_size=8", "fidelity.reference_samples=40"],
    )
    rep = run_pipeline(cfg, progress=False)
    assert rep["status"] == "completed" and rep["delivered"] == 40
    assert rep["lost"] == rep["duplicated"] == rep["rejected"] == rep["unexpected"] == 0
    fid = rep["fidelity"]
    assert fid["reference_samples"] == 40 and fid["agreement"] is None
    assert fid["cosine"] >= 0.999 and 0.99 < fid["cosine_min"] <= fid["cosine"]
    text = rep["text"]
    assert text["tokens"] < text["positions"] and 0 < text["padding_skipped"] < 1
    assert rep["raw_bytes"] == text["tokens"] * 384 * 4
    assert rep["compression_ratio"] > 3
    assert rep["model"]["kind"] == "encoder" and rep["model"]["tokenizer"].endswith("model")


def test_llama_tiny_streams_a_jsonl_file_in_separate_actors(ray_local, tmp_path):
    path = tmp_path / "prompts.jsonl"
    prompts = ["Once upon a time", "The capital of France is", "def add(a, b):", "2 + 2 ="]
    path.write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts))
    cfg = load_config(
        None,
        [*LLAMA, f"data.path={path}", "samples=12", "placement.fuse=false", "codec.frame=sample",
         "link.profile=unlimited", "batching.max_batch_size=4", "fidelity.reference_samples=8"],
    )  # fmt: skip
    rep = run_pipeline(cfg, progress=False)
    assert rep["delivered"] == 12 and rep["lost"] == rep["duplicated"] == rep["rejected"] == 0
    fid = rep["fidelity"]
    assert fid["reference_samples"] == 8 and fid["agreement"] >= 0.75
    # bytes + BOS per prompt, 8 reference samples (ids 0..7 = every prompt twice)
    assert fid["next_tokens"] == 2 * sum(len(p.encode()) for p in prompts)
    assert fid["next_token_agreement"] >= 0.9 and abs(fid["loglik_delta"]) < 0.01
    assert rep["model"]["tokenizer"] == "bytes"
    assert rep["text"]["tokens"] == 3 * sum(len(p.encode()) + 1 for p in prompts)
