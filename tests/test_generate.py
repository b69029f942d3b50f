"""Split generation (pipeline.generation.generate): KV caches on each side, one hidden vector up and
one token id down per step, agreement with the unsplit model's greedy decoding."""

from __future__ import annotations

import json

import pytest
import torch

import codec
from pipeline.generation.generate import HiddenCoder, Links, load_generator, read_prompts
from pipeline.models.byte_tokenizer import ByteTokenizer
from pipeline.stream.link import LinkSpec

PROMPTS = ["Hello world", "The quick brown fox", "split computing", "a b c d e f"]
HIDDEN = 64  # llama-tiny


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiny8():
    return load_generator("llama-tiny", 2, bits=8)


def _count_messages(monkeypatch):
    """Record every message the links carry and the shape of every hidden-state frame received."""
    seen = {"up": [], "down": [], "shapes": []}
    send_up, send_down, decode = Links.send_up, Links.send_down, HiddenCoder.decode

    def up(self, nbytes):
        seen["up"].append(nbytes)
        return send_up(self, nbytes)

    def down(self, nbytes):
        seen["down"].append(nbytes)
        return send_down(self, nbytes)

    def dec(self, blob, hidden_size, like, session=None):
        seen["shapes"].append(codec.inspect(blob).shape if self.bits else None)
        return decode(self, blob, hidden_size, like, session)

    monkeypatch.setattr(Links, "send_up", up)
    monkeypatch.setattr(Links, "send_down", down)
    monkeypatch.setattr(HiddenCoder, "decode", dec)
    return seen


def test_each_decode_step_sends_one_vector_and_receives_one_token_id(tiny8, monkeypatch):
    seen = _count_messages(monkeypatch)
    report = tiny8.run(PROMPTS, max_new_tokens=32, stop_at_eos=False)
    n = len(PROMPTS)
    assert len(seen["up"]) == len(seen["down"]) == 32 * n
    assert report["messages"] == {
        "uplink": 32 * n,
        "downlink": 32 * n,
        "decode_steps": 31 * n,
        "max_rows_per_decode_step": 1,
    }
    for i, entry in enumerate(report["prompts"]):
        shapes = seen["shapes"][32 * i : 32 * (i + 1)]
        assert shapes[0] == (1, entry["prompt_tokens"], HIDDEN)  # prefill: the prompt, once
        assert shapes[1:] == [(1, 1, HIDDEN)] * 31  # then one hidden vector per token
        assert entry["uplink_rows"] == [entry["prompt_tokens"]] + [1] * 31
        assert len(entry["tokens"]) == entry["new_tokens"] == 32
    assert seen["down"] == [4] * (32 * n)  # one u32 token id per step
    decode_frames = [b for i, b in enumerate(seen["up"]) if i % 32]
    assert report["new_tokens"] == 32 * n
    assert report["bytes_per_token"] == pytest.approx(
        (sum(seen["up"]) + sum(seen["down"])) / (32 * n)
    )
    assert report["uplink_bytes_per_token"] == pytest.approx(
        sum(decode_frames) / len(decode_frames)
    )
    assert report["downlink_bytes_per_token"] == 4
    assert report["raw_uplink_bytes_per_token"] == 4 * HIDDEN
    assert report["uplink_bytes_per_token"] < 0.5 * 4 * HIDDEN  # the codec pays at 8 bits
    assert report["agreement"] >= 0.95  # same prefix, same greedy token
    # the unsplit model's free-running greedy continuation, recomputed here without a KV cache
    same = []
    for prompt, entry in zip(PROMPTS, report["prompts"], strict=True):
        ids = tiny8.encode(prompt)
        with torch.no_grad():
            for _ in range(32):
                ids.append(int(tiny8.lm(torch.tensor([ids])).logits[0, -1].argmax()))
        assert entry["reference_tokens"] == ids[-32:]
        same += [a == b for a, b in zip(ids[-32:], entry["tokens"], strict=True)]
    assert report["sequence_agreement"] == pytest.approx(sum(same) / len(same))
    t = report["ms_per_token"]
    assert t["compute"] > 0 and t["codec"] > 0 and t["link"] >= 0
    assert t["total"] == pytest.approx(t["compute"] + t["codec"] + t["link"])


def test_a_session_per_sequence_sends_the_grid_once(tiny8):
    gen = load_generator("llama-tiny", 2, bits=8, session=True)
    report = gen.run(PROMPTS, max_new_tokens=16, stop_at_eos=False)
    plain = tiny8.run(PROMPTS, max_new_tokens=16, stop_at_eos=False)
    assert report["session"] is True and plain["session"] is False
    assert report["uplink_bytes_per_token"] < plain["uplink_bytes_per_token"]
    assert report["agreement"] >= 0.9
    with pytest.raises(ValueError, match="session"):
        load_generator("llama-tiny", 2, bits=0, session=True)


def test_raw_fp32_agrees_with_unsplit_greedy_everywhere():
    gen = load_generator("llama-tiny", 2, bits=0)
    report = gen.run(PROMPTS, max_new_tokens=32, stop_at_eos=False)
    assert report["agreement"] == 1.0 and report["sequence_agreement"] == 1.0
    for entry in report["prompts"]:
        assert entry["tokens"] == entry["reference_tokens"]
        assert entry["first_divergence"] is None
    assert report["uplink_bytes_per_token"] == 4 * HIDDEN and report["codec"].startswith("none")
    # the unsplit model, fed the same token ids by HF's own greedy search, picks the same tokens
    ids = torch.tensor([gen.encode(PROMPTS[0])])
    hf = gen.lm.generate(ids, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert hf[0, ids.shape[1] :].tolist() == report["prompts"][0]["tokens"][:8]


def test_recomputing_the_prefix_sends_every_position_and_gives_the_same_tokens():
    cached = load_generator("llama-tiny", "layers.0", bits=0).generate([1, 50, 60, 70], 6)
    plain = load_generator("llama-tiny", "layers.0", bits=0, cache=False).generate(
        [1, 50, 60, 70], 6
    )
    assert [s.rows for s in cached.steps] == [4, 1, 1, 1, 1, 1]
    assert [s.rows for s in plain.steps] == [4, 5, 6, 7, 8, 9]
    assert plain.tokens == cached.tokens == cached.reference["reference_tokens"]


def test_head_with_every_layer_and_tail_with_none():
    gen = load_generator("llama-tiny", 4, bits=0)
    out = gen.generate([1, 2, 3], 5)
    assert out.reference["agreement"] == 1.0 and len(out.steps) == len(out.tokens)


def test_link_delays_are_waited_for_and_reported():
    gen = load_generator(
        "llama-tiny",
        2,
        bits=8,
        uplink=LinkSpec(bandwidth_mbps=1.0, delay_ms=6.0),
        downlink=LinkSpec(delay_ms=4.0),
    )
    report = gen.run([[1, 10, 20]], max_new_tokens=4, stop_at_eos=False, reference=False)
    t = report["ms_per_token"]
    # 6 ms + ~112 bytes at 1 Mbit/s (~0.9 ms, less the bucket's one-MTU burst) up, 4 ms down
    assert t["uplink"] >= 6.0 and t["downlink"] >= 4.0 and t["link"] >= 10.0
    assert t["total"] >= t["link"] and "agreement" not in report
    assert report["uplink"]["delay_ms"] == 6.0 and report["downlink"]["delay_ms"] == 4.0


def test_generation_stops_at_a_stop_id_or_a_stop_rule(tiny8):
    first = tiny8.generate([1, 10, 20], 8, reference=False).tokens
    out = tiny8.generate([1, 10, 20], 8, stop_ids=[first[2]], reference=False)
    assert out.finish == "eos" and out.tokens == first[: first.index(first[2]) + 1]
    out = tiny8.generate([1, 10, 20], 8, stop=lambda toks: len(toks) == 3, reference=False)
    assert out.finish == "stop" and len(out.tokens) == 3


def test_a_local_hugging_face_directory(tmp_path):
    from pipeline.models import load_model

    load_model("llama-tiny").raw.save_pretrained(tmp_path)  # weights only: bytes as tokens
    gen = load_generator(str(tmp_path), "layers.1", bits=0)
    report = gen.run(["hi"], max_new_tokens=5)
    assert report["model"] == tmp_path.name and report["split"] == 2
    assert report["agreement"] == 1.0 and report["prompts"][0]["prompt_tokens"] == 3


def test_bad_input_is_refused_by_name(tiny8, tmp_path):
    with pytest.raises(ValueError, match="bits"):
        load_generator("llama-tiny", 2, bits=9)
    with pytest.raises(ValueError, match="granularity"):
        load_generator("llama-tiny", 2, granularity="row")
    with pytest.raises(ValueError, match="cuts after 7 layers"):
        load_generator("llama-tiny", 7)
    with pytest.raises(ValueError, match="causal LM"):
        load_generator("minilm", 1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        tiny8.generate([1, 2], 0)
    with pytest.raises(ValueError, match="vocabulary"):
        tiny8.generate([1, 5000], 2)
    with pytest.raises(ValueError, match="positions"):
        tiny8.generate([1] * 250, 10)
    with pytest.raises(ValueError, match="no tokens"):
        tiny8.generate([], 2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"prompt": "no text"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_prompts(bad)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts(tmp_path / "empty.txt")


def test_prompts_file_lines_or_jsonl(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text('first prompt\n\n{"text": "second"}\n')
    assert read_prompts(path) == ["first prompt", "second"]


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer(1000)
    ids = tok.encode("héllo")
    assert ids[0] == tok.bos_token_id and len(ids) == 1 + len("héllo".encode())
    assert tok.decode(ids, skip_special_tokens=True) == "héllo"
    assert tok.decode([*ids[1:3], 700, tok.eos_token_id]) == "h\ufffd<700><2>"
    with pytest.raises(ValueError, match="vocabulary"):
        ByteTokenizer(100)


def test_cli_generate_writes_the_report(tmp_path, capsys):
    from splitstream.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\n")
    out = tmp_path / "gen.json"
    argv = [
        "generate",
        "--model",
        "llama-tiny",
        "--split",
        "2",
        "--bits",
        "8",
        "--link",
        "unlimited",
    ]
    rc = main([*argv, "--prompts", str(prompts), "--max-new-tokens", "4", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["sequences"] == 2 and report["bits"] == 8 and report["messages"]["uplink"] <= 8
    assert {"bytes_per_token", "ms_per_token", "agreement", "prompts"} <= set(report)
    assert "bytes per token" in capsys.readouterr().out
    assert main([*argv, "--prompt", "x", "--bits", "12"]) == 2
    assert "bits" in capsys.readouterr().err
    assert main([*argv, "--prompt", "x", "--max-new-tokens", "999"]) == 2
