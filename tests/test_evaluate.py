"""Rate/fidelity evaluation: metrics, the digits accuracy row, MiniLM cosine, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pipeline.evaluation import fidelity as fm
from pipeline.evaluation.evaluate import evaluate, main, primary_metric, rows_to_markdown

REQUIRED = {"model", "split", "bits", "raw_bytes", "wire_bytes", "ratio", "trained", "granularity"}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_metrics_basic():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert fm.top1(logits, torch.tensor([0, 1, 2, 1])) == 0.75
    assert fm.agreement(logits, logits) == 1.0
    assert fm.kl_divergence(logits, logits) == pytest.approx(0.0, abs=1e-12)
    flipped = logits.flip(-1)
    assert fm.agreement(logits, flipped) < 1.0 and fm.kl_divergence(logits, flipped) > 0.1
    uniform = torch.zeros(2, 5, 50)
    ids = torch.randint(0, 50, (2, 5))
    assert fm.perplexity(uniform, ids, torch.ones_like(ids)) == pytest.approx(50.0)
    emb = torch.randn(6, 8)
    assert fm.cosine(emb, emb) == pytest.approx(1.0)
    assert fm.retrieval_agreement(emb, emb) == pytest.approx((1.0, 1.0))
    nn_agree, rho = fm.retrieval_agreement(emb, torch.randn(6, 8))
    assert rho < 0.9
    hidden = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert fm.mean_pool(hidden, torch.tensor([[1, 1, 0]])).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="labels"):
        fm.top1(logits, torch.tensor([0, 1]))


def test_digits_accuracy_drop_at_best_split():
    """Real labels: top-1 drop <= 0.5 points at 8 bits and <= 1.5 at 4 bits at the best split."""
    rows = evaluate(
        "digits-resnet", bits=[8, 4], samples=450, granularity="channel", progress=False
    )
    assert {r["split"] for r in rows} == {"layer1", "layer2", "layer3"}
    assert all(set(r) >= REQUIRED and r["trained"] for r in rows)
    assert all(r["data"] == "digits-test" and r["samples"] == 450 for r in rows)
    by_split = {}
    for r in rows:
        by_split.setdefault(r["split"], {})[r["bits"]] = r
    best = max(by_split, key=lambda s: (by_split[s][4]["top1"], by_split[s][8]["top1"]))
    r8, r4 = by_split[best][8], by_split[best][4]
    assert r8["top1_baseline"] >= 0.95
    assert r8["top1_baseline"] - r8["top1"] <= 0.005
    assert r4["top1_baseline"] - r4["top1"] <= 0.015
    assert r8["ratio"] > 2.0 and r4["ratio"] > r8["ratio"]
    assert r8["wire_bytes"] < r8["raw_fp16_bytes"]


def test_minilm_embedding_cosine():
    rows = evaluate("minilm", splits=["encoder.layer.3"], bits=[8, 4], progress=False)
    cos = {r["bits"]: r["cosine"] for r in rows}
    assert cos[8] >= 0.999
    assert cos[4] >= 0.99
    assert all(r["trained"] and r["ratio"] > 1.0 for r in rows)
    assert all(r["retrieval_top1"] >= 0.9 for r in rows)


def test_untrained_vision_rows_and_granularity():
    rows = evaluate("resnet18", splits=["layer2"], bits=[8, 2], samples=4, size=64, progress=False)
    assert all(not r["trained"] and "top1" not in r for r in rows)
    r8, r2 = rows
    assert r8["granularity"] in ("tensor", "channel")
    assert {"agreement_per_tensor", "agreement_per_channel"} <= set(r8)
    assert r8["axis"] == (1 if r8["granularity"] == "channel" else None)
    assert r8["kl"] < r2["kl"] and r2["wire_bytes"] < r8["wire_bytes"]
    assert primary_metric(r8) == "agreement"
    assert "resnet18" in rows_to_markdown(rows)


def test_cli_writes_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    rc = main(
        [
            "--model",
            "llama-tiny",
            "--split",
            "layers.1",
            "--bits",
            "8,4",
            "--samples",
            "4",
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
            "--quiet",
        ]
    )
    assert rc == 0
    rows = json.loads(out_json.read_text())["rows"]
    assert [r["bits"] for r in rows] == [8, 4]
    for r in rows:
        assert REQUIRED | {"agreement", "kl", "ppl", "ppl_baseline"} <= set(r)
        assert r["trained"] is False and math.isfinite(r["ppl"])
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    assert "untrained" in capsys.readouterr().out


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="bits"):
        evaluate("llama-tiny", bits=[9], progress=False)
    with pytest.raises(ValueError, match="granularity"):
        evaluate("llama-tiny", granularity="row", progress=False)
    assert main(["--model", "nosuchmodel", "--quiet"]) == 2
    with pytest.raises(SystemExit):
        main(["--model", "llama-tiny", "--bits", "8,x"])


def test_image_folder_labels_give_top1(tmp_path):
    """--data with an ImageNet-style folder: labels come from class subdirectories. The model's
    answer is each image's dominant colour, so with the right labels top-1 is exactly 1."""
    from collections import OrderedDict

    import numpy as np
    from PIL import Image
    from torch import nn

    from pipeline.models import load_model

    rng = np.random.default_rng(0)
    for label, cls in enumerate(("a_red", "b_green", "c_blue")):
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i in range(2):
            arr = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)
            arr[..., label] = rng.integers(200, 256, (40, 40), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "val" / cls / f"{i}.png")
    colour = nn.Sequential(
        OrderedDict(wire=nn.Identity(), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten())
    )  # logits: the mean of each (normalized) colour channel
    rows = evaluate(
        load_model(colour),
        splits=["wire"],
        bits=[8, 1],
        samples=6,
        size=32,
        data=str(tmp_path),
        granularity="tensor",
        progress=False,
    )
    assert [r["bits"] for r in rows] == [8, 1]
    r8, r1 = rows
    assert r8["data"].startswith("imagefolder:") and r8["samples"] == 6
    assert r8["top1_baseline"] == r8["top1"] == 1.0
    assert r1["top1_baseline"] == 1.0 and r1["top1"] <= r8["top1"]
    with pytest.raises(ValueError, match="image folder"):
        evaluate(
            "resnet18", bits=[8], samples=2, size=32, data=str(tmp_path / "empty"), progress=False
        )


def test_fidelity_benchmark_writes_outputs(tmp_path):
    from benchmarks.fidelity import main, render_tables, run

    doc = run(quick=True, out=tmp_path, models=["llama-tiny"], progress=False)
    assert doc["meta"]["untrained_models"] == ["llama-tiny"]
    assert {r["bits"] for r in doc["rows"]} == {8, 4, 2}
    assert all(r["samples"] >= 64 for r in doc["rows"])  # untrained rows rest on >= 64 inputs
    (s,) = doc["summary"]
    assert s["model"] == "llama-tiny" and s["ratio"] > 1.0 and s["trained"] is False
    assert s["select_samples"] == s["samples"] == 32  # chosen on one half, reported on the other
    md = (tmp_path / "fidelity.md").read_text()
    assert "untrained" in md.lower() and "llama-tiny" in md
    assert "samples (choose / report)" in md and "| 32 / 32 |" in md
    blocks = render_tables(doc)
    assert set(blocks) == {"models", "best_split", "imagenet", "low_bit"}
    assert doc["rule_rows"] == []  # only the real-weight models are run again with the rule
    assert f'clip="{doc["rule"]["clip"]}"' in blocks["low_bit"]
    assert "llama-tiny (64 random token sequences)" in blocks["models"]
    assert json.loads((tmp_path / "fidelity.json").read_text())["rows"] == doc["rows"]
    assert (tmp_path / "fidelity.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["--quick", "--out", str(tmp_path), "--models", "nosuch", "--quiet"]) == 2


def test_summary_chooses_on_one_half_and_reports_the_other():
    from benchmarks.fidelity import summary

    def row(split, select, report):
        halves = {
            part: {"samples": 10, "tensor": {"agreement": v, "wire_bytes": 100.0}}
            for part, v in (("select", select), ("report", report))
        }
        return {
            "model": "m",
            "trained": False,
            "weights": "untrained",
            "data": "synthetic 8x8",
            "split": split,
            "bits": 8,
            "agreement": (select + report) / 2,
            "raw_bytes": 400,
            "raw_fp16_bytes": 200,
            "halves": halves,
        }

    # "b" is better on all samples and on the report half, but "a" wins on the select half
    (s,) = summary([row("a", 0.9, 0.5), row("b", 0.8, 1.0)])
    assert s["best_split"] == "a" and s["select_value"] == 0.9 and s["value"] == 0.5
    assert s["samples"] == s["select_samples"] == 10 and s["ratio"] == 4.0


def test_imagenet_table_sets_clipped_rows_beside_the_full_range_ones():
    from benchmarks.fidelity import model_markdown

    row = {"model": "m", "split": "s1", "bits": 4, "samples": 360, "agreement": 0.92, "kl": 0.02,
           "ref_classes": 55, "wire_bytes": 27000.0, "ratio": 11.0, "granularity": "channel"}  # fmt: skip
    clipped = {
        "mse": [{**row, "agreement": 0.9333, "kl": 0.0143, "wire_bytes": 31000.0}],
        "wmse": [{**row, "agreement": 0.9556, "kl": 0.0104, "wire_bytes": 30000.0}],
    }
    md = model_markdown([row, {**row, "model": "other"}], "m", clipped).splitlines()
    assert len(md) == 3 and "clip=mse" in md[0] and "clip=wmse" in md[0]
    assert md[2].startswith("| s1 | 4 | 360 | 0.9200 |")
    assert md[2].endswith(
        "| 0.9333 | 1.43e-02 | 31,000 | per-channel | 0.9556 | 1.04e-02 | 30,000 | per-channel |"
    )
    assert md[0].count("|") == md[1].count("|") == md[2].count("|")  # every row has every column
    assert model_markdown([row], "m").splitlines()[2].endswith("| per-channel |")


def test_wilson_interval_matches_known_values_and_rejects_no_samples():
    from benchmarks.fidelity import wilson

    lo, hi = wilson(95, 100)  # textbook: 0.8883 .. 0.9785
    assert abs(lo - 0.8883) < 1e-4 and abs(hi - 0.9785) < 1e-4
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0 and wilson(10, 10)[0] < 1.0
    assert wilson(300, 324)[1] - wilson(300, 324)[0] < wilson(30, 36)[1] - wilson(30, 36)[0]
    with pytest.raises(ValueError, match="n must be positive"):
        wilson(0, 0)


def test_low_bit_table_gives_intervals_counts_and_the_unclipped_figure():
    from benchmarks.fidelity import rule_figures, rule_markdown

    row = {"model": "m", "split": "s1", "bits": 4, "samples": 324, "agreement": 0.95, "clip": "x",
           "wire_bytes": 30000.0, "ratio": 11.0}  # fmt: skip
    plain = {**row, "clip": None, "agreement": 0.9, "kl": 0.02, "wire_bytes": 27000.0}
    f = rule_figures({**row, "kl": 0.01}, plain)
    assert f["metric"] == "agreement" and f["samples"] == 324 and f["plain_value"] == 0.9
    assert f["ci95"][0] < 0.95 < f["ci95"][1] and f["plain_wire_bytes"] == 27000.0
    assert f["plain_ci95"][0] < 0.9 < f["plain_ci95"][1] and f["plain_kl"] == 0.02
    text = {**row, "agreement": None, "retrieval_top1": 0.875, "cosine": 0.999, "samples": 16}
    del text["agreement"]
    g = rule_figures(text)
    assert g["metric"] == "retrieval_top1" and g["samples"] == 16 and g["plain_value"] is None
    md = rule_markdown([f, g]).splitlines()
    assert len(md) == 4 and "95% interval" in md[0]
    assert md[2].startswith("| m | s1 | 4 | 324 | agreement | 0.9500 | 0.")
    assert "| 1.00e-02 | 0.9000 | 0." in md[2] and "| 2.00e-02 |" in md[2]
    assert "| 0.999000 |" in md[3]
    assert md[0].count("|") == md[2].count("|") == md[3].count("|")


def test_fidelity_rows_of_untrained_models_repeat(tmp_path):
    """The benchmark seeds torch before each model: an untrained model's random weights, and so its rows
    (bytes on the wire, agreement, KL), are the same in every run."""
    import torch

    from benchmarks.fidelity import run

    def figures(doc):
        return [
            (r["split"], r["bits"], r["wire_bytes"], r["agreement"], r["kl"]) for r in doc["rows"]
        ]

    first = run(quick=True, out=tmp_path / "a", models=["mobilenet_v2"], progress=False)
    torch.manual_seed(1234)  # whatever the global generator holds before the run
    torch.rand(10)
    second = run(quick=True, out=tmp_path / "b", models=["mobilenet_v2"], progress=False)
    assert figures(first) == figures(second)
