"""lm-evaluation-harness adapter: a local multiple-choice task end to end, offline."""

from __future__ import annotations

import json

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")

WORDS = {
    w
    for d in (
        "the sky is blue grass green snow white fire red sea coal black sun",
        "yellow what colour of question answer : ? .",
    )
    for w in d.split()
}
DOCS = [
    {"question": "what colour is the sky ?", "choices": ["blue", "red", "black"], "label": 0},
    {"question": "what colour is grass ?", "choices": ["white", "green", "red"], "label": 1},
    {"question": "what colour is snow ?", "choices": ["black", "yellow", "white"], "label": 2},
    {"question": "what colour is fire ?", "choices": ["red", "blue", "green"], "label": 0},
    {"question": "what colour is coal ?", "choices": ["white", "black", "yellow"], "label": 1},
    {"question": "what colour is the sun ?", "choices": ["green", "blue", "yellow"], "label": 2},
]
TASK = "splitstream_tiny_colours"


def _tiny_llama_dir(path):
    """A random 3-layer Llama plus a WordLevel tokenizer, saved as a local HF directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    fast.save_pretrained(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=1,
    )
    LlamaForCausalLM(cfg).eval().save_pretrained(path)
    return path


def _task_dir(path):
    data = path / "colours.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (path / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "question : {{question}} answer :"\n'
        'doc_to_target: "{{label}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmeval")
    (root / "model").mkdir()
    (root / "tasks").mkdir()
    return _tiny_llama_dir(root / "model"), _task_dir(root / "tasks")


@pytest.fixture(scope="module")
def reference(setup) -> tuple[list[list[float]], float]:
    """Each doc's choice log-likelihoods from the plain HF model (no split, no codec), and the
    accuracy they give: what lm_eval must report for the uncompressed split path."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, _ = setup
    tok = AutoTokenizer.from_pretrained(model_dir)
    lm = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    lls = []
    for doc in DOCS:
        ctx = tok(f"question : {doc['question']} answer :", add_special_tokens=False)["input_ids"]
        row = []
        for choice in doc["choices"]:
            cont = tok(f" {choice}", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = lm(torch.tensor([[tok.bos_token_id, *ctx, *cont]])).logits[0]
            lp = torch.log_softmax(logits.double(), -1)[len(ctx) : len(ctx) + len(cont)]
            row.append(float(lp.gather(-1, torch.tensor(cont)[:, None]).sum()))
        lls.append(row)
    hits = sum(row.index(max(row)) == doc["label"] for row, doc in zip(lls, DOCS, strict=True))
    return lls, hits / len(DOCS)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_adapter_scores_match_uncompressed_at_8_bits(setup):
    from lm_eval.api.instance import Instance

    from pipeline.evaluation.lm_eval_adapter import SplitStreamLM

    model_dir, _ = setup
    reqs = [
        Instance("loglikelihood", {}, ("question : what colour is grass ? answer :", " green"), 0),
        Instance("loglikelihood", {}, ("", "the sky is blue"), 1),
    ]
    plain = SplitStreamLM(str(model_dir), split=1, bits=0)
    coded = SplitStreamLM(str(model_dir), split=1, bits=8)
    coarse = SplitStreamLM(str(model_dir), split=1, bits=2)
    ll0 = plain.loglikelihood(reqs, disable_tqdm=True)
    ll8 = coded.loglikelihood(reqs, disable_tqdm=True)
    ll2 = coarse.loglikelihood(reqs, disable_tqdm=True)
    assert plain.stats["frames"] == 0 and coded.stats["frames"] == 2
    assert 0 < coded.stats["wire_bytes"] < coded.stats["raw_bytes"]
    for (a, _), (b, _), (c, _) in zip(ll0, ll8, ll2, strict=True):
        assert a < 0 and abs(a - b) < 0.05 * abs(a)
        assert abs(a - c) > abs(a - b)  # coarser quantization moves the score more
    rolling = coded.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, ("the sky is blue . snow is white .",), 0)],
        disable_tqdm=True,
    )
    assert rolling[0] < 0
    gen = coded.generate_until(
        [Instance("generate_until", {}, ("the sky is", {"until": ["."], "max_gen_toks": 4}), 0)],
        disable_tqdm=True,
    )
    assert isinstance(gen[0], str) and "." not in gen[0]
    with pytest.raises(ValueError, match="bits"):
        SplitStreamLM(str(model_dir), bits=9)


def test_simple_evaluate_local_task(setup, reference):
    """Uncompressed through the split: lm_eval scores every choice as the plain model does."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from pipeline.evaluation.lm_eval_adapter import register

    model_dir, task_dir = setup
    lls, ref_acc = reference
    assert 0.0 < ref_acc < 1.0  # the random model gets some docs right and some wrong
    register()
    register()  # idempotent
    res = simple_evaluate(
        model="splitstream",
        model_args=f"pretrained={model_dir},split=2,bits=0",
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
    )
    samples = sorted(res["samples"][TASK], key=lambda s: s["doc_id"])
    assert len(samples) == len(DOCS)
    for sample, ref in zip(samples, lls, strict=True):
        got = [ll for ll, _ in sample["filtered_resps"]]
        assert got == pytest.approx(ref, abs=1e-5)
    assert res["results"][TASK]["acc,none"] == pytest.approx(ref_acc)


def test_cli_module_runs_task(setup, reference, tmp_path, capsys):
    from pipeline.evaluation.lm_eval_adapter import main

    model_dir, task_dir = setup
    main(
        [
            "--model",
            "splitstream",
            "--model_args",
            f"pretrained={model_dir},split=1,bits=8",
            "--tasks",
            TASK,
            "--include_path",
            str(task_dir),
            "--output_path",
            str(tmp_path / "out"),
        ]
    )
    out = capsys.readouterr().out
    assert TASK in out and "acc" in out
    results = list((tmp_path / "out").rglob("results_*.json"))
    assert results, "lm_eval wrote no results file"
    data = json.loads(results[0].read_text())
    # 8 bits moves a log-likelihood by ~1e-3 here, less than the closest top-two margin (3.8e-3)
    assert data["results"][TASK]["acc,none"] == pytest.approx(reference[1])
    assert "splitstream" in json.dumps(data["config"])


def test_generate_until_runs_the_cached_split_path(setup):
    from lm_eval.api.instance import Instance
    from transformers import AutoModelForCausalLM

    from pipeline.evaluation.lm_eval_adapter import SplitStreamLM

    model_dir, _ = setup
    plain = SplitStreamLM(str(model_dir), split=1, bits=0, max_gen_toks=6)
    coded = SplitStreamLM(str(model_dir), split=1, bits=8, granularity="tensor", max_gen_toks=6)
    req = Instance("generate_until", {}, ("the sky is", {"until": ["never"]}), 0)
    text = plain.generate_until([req], disable_tqdm=True)[0]
    gen = plain.last_generation
    prompt = len(gen.prompt_ids)
    assert len(gen.steps) >= 3  # (this prompt ends in </s> after three tokens)
    # the prompt's hidden states cross once, then one vector per new token
    assert [s.rows for s in gen.steps] == [prompt] + [1] * (len(gen.steps) - 1)
    lm = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    ref = lm.generate(torch.tensor([gen.prompt_ids]), max_new_tokens=6, do_sample=False)
    new = ref[0, prompt:].tolist()
    if new and new[-1] == plain.tok.eos_token_id:
        new = new[:-1]
    assert text == plain.tok.decode(new, skip_special_tokens=True)  # HF's own greedy decoding
    coded.generate_until([req], disable_tqdm=True)
    assert coded.stats["frames"] == len(coded.last_generation.steps) > 0
    assert coded.stats["generated_tokens"] == len(coded.last_generation.tokens)
    assert 0 < coded.stats["wire_bytes"] < coded.stats["raw_bytes"]
