"""Rate vs fidelity of a split model through the codec: ``python -m pipeline.evaluation.evaluate``.

For each split point and bit width, the head's features of a few samples are encoded one
sample per frame (as the pipeline sends them), decoded, and fed to the tail. A row reports
sizes (raw fp32/fp16 vs wire bytes), the compression ratio, codec times, and fidelity
against labels (``top1``) and against the uncompressed model (``agreement``, ``kl``,
``cosine`` ...). Quantization is tried per tensor and per channel; the row keeps the one
with better fidelity (to 1e-3; ties go to the smaller frame) and says which (``granularity``).

Inputs: the digits test set, MiniLM's built-in sentences, random tokens for a tokenizer-less
LM, a CIFAR-100 root or ImageNet-style folder (``data=ROOT``), ``data="photos"`` (crops of
real photographs bundled with scikit-learn and scikit-image, ``pipeline.models.photos``),
``data="photos:seed=N"`` (seeded random crops of the same photographs, ``random_crops``), or else
smooth synthetic images. With ``halves=True`` every row also carries its metrics on two
disjoint halves of the samples (``row["halves"]``), so a caller can choose a split on one
half and report it on the other.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from codec import CodecSettings
from pipeline.evaluation import fidelity as fm
from pipeline.models import LoadedModel, feature_of, load_model, with_feature

DEFAULT_BITS = (8, 6, 4, 2)
GRANULARITIES = ("auto", "tensor", "channel")

SENTENCES = [
    "A man is playing a guitar on the street.",
    "Someone plays an acoustic guitar outdoors.",
    "The stock market fell sharply on Monday.",
    "Shares dropped steeply at the start of the week.",
    "A child is riding a bicycle in the park.",
    "A kid cycles through a green park.",
    "The recipe calls for two cups of flour.",
    "You need two cups of flour for this cake.",
    "Heavy rain caused flooding in the city center.",
    "Downtown streets were flooded after the storm.",
    "The cat is sleeping on the warm windowsill.",
    "A kitten naps in the sun by the window.",
    "Scientists discovered a new species of frog.",
    "Researchers found a previously unknown frog.",
    "The train to Berlin leaves at nine o'clock.",
    "Our flight to Tokyo was delayed by two hours.",
]


@dataclass
class EvalData:
    """Inputs in batches (each a tuple of head arguments), optional labels, and where they came from."""

    batches: list[tuple[torch.Tensor, ...]]
    labels: torch.Tensor | None
    source: str
    groups: torch.Tensor | None = None  # samples that belong together (one photo, a sentence pair)

    def halves(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of two disjoint halves: samples of even-numbered groups, then odd ones
        (a group is a photograph, a sentence pair, or else one sample)."""
        n = sum(b[0].shape[0] for b in self.batches)
        groups = self.groups if self.groups is not None else torch.arange(n)
        odd = groups % 2 == 1
        select, report = (~odd).nonzero().flatten(), odd.nonzero().flatten()
        if len(select) == 0 or len(report) == 0:
            raise ValueError(f"halves need samples from at least two groups, got {n} sample(s)")
        return select, report


def _batches(tensors: tuple[torch.Tensor, ...], batch: int) -> list[tuple[torch.Tensor, ...]]:
    n = tensors[0].shape[0]
    return [tuple(t[i : i + batch] for t in tensors) for i in range(0, n, batch)]


def _synthetic_images(n: int, shape: Sequence[int], seed: int) -> torch.Tensor:
    """Smooth random images (low-resolution noise upsampled, plus fine noise), roughly unit scale."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    coarse = torch.randn((n, c, max(2, h // 8), max(2, w // 8)), generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return img + 0.25 * torch.randn((n, c, h, w), generator=g)


def _image_folder_data(root: Path, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    from torchvision import datasets, transforms

    if (root / "cifar-100-python").is_dir():
        tf = transforms.Compose(
            [
                transforms.Resize(size),
                transforms.ToTensor(),
                transforms.Normalize((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
            ]
        )
        ds: Any = datasets.CIFAR100(str(root), train=False, download=False, transform=tf)
        source = f"cifar100:{root}"
    else:
        folder = root / "val" if (root / "val").is_dir() else root
        tf = transforms.Compose(
            [
                transforms.Resize(int(size * 256 / 224)),
                transforms.CenterCrop(size),
                transforms.ToTensor(),
                transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ]
        )
        try:
            ds = datasets.ImageFolder(str(folder), transform=tf)
        except (FileNotFoundError, RuntimeError) as exc:
            raise ValueError(
                f"--data {root}: neither CIFAR-100 (cifar-100-python/) nor an "
                f"image folder of class subdirectories ({exc})"
            ) from exc
        source = f"imagefolder:{folder}"
    step = max(1, len(ds) // n)  # spread over the set so many classes appear
    items = [ds[i] for i in range(0, len(ds), step)][:n]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items]), source


def load_eval_data(
    loaded: LoadedModel,
    samples: int = 32,
    data: str | None = None,
    size: int | None = None,
    batch: int = 16,
    seed: int = 0,
) -> EvalData:
    """Pick the evaluation inputs for ``loaded`` (see module docstring for the rules)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if loaded.kind == "encoder":
        if loaded.tokenizer is None:
            raise ValueError(
                f"{loaded.name}: a sentence encoder needs its tokenizer in the model directory"
            )
        enc = loaded.tokenizer(SENTENCES[: max(3, samples)], padding=True, return_tensors="pt")
        pairs = torch.arange(enc["input_ids"].shape[0]) // 2  # SENTENCES come in paraphrase pairs
        return EvalData(
            _batches((enc["input_ids"], enc["attention_mask"]), batch), None, "sentences", pairs
        )
    if loaded.kind == "decoder":
        seq = 32
        if loaded.tokenizer is not None:
            tok = loaded.tokenizer
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token or tok.unk_token
            enc = tok(SENTENCES[:samples], padding=True, return_tensors="pt")
            return EvalData(
                _batches((enc["input_ids"], enc["attention_mask"]), batch), None, "sentences"
            )
        vocab = int(getattr(loaded.raw.config, "vocab_size", 1000))
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, vocab, (samples, seq), generator=g)
        mask = torch.ones_like(ids)
        return EvalData(_batches((ids, mask), batch), None, "random-tokens")
    if loaded.name == "digits-resnet":
        from pipeline.models.train import digits_data

        _, _, x, y = digits_data()
        return EvalData(_batches((x[:samples],), batch), y[:samples], "digits-test")
    shape = tuple(loaded.input_shape or (3, 224, 224))
    if size is not None:
        shape = (shape[0], size, size)
    if data == "photos":
        from pipeline.models.photos import photo_crops

        crops = photo_crops(samples, shape[-1])
        return EvalData(_batches((crops.images,), batch), None, crops.source, crops.photo)
    if data is not None and data.startswith("photos:seed="):
        from pipeline.models.photos import random_crops

        try:
            crop_seed = int(data.split("=", 1)[1])
        except ValueError as exc:
            raise ValueError(f"data={data!r}: expected photos:seed=<integer>") from exc
        crops = random_crops(samples, crop_seed, shape[-1])
        return EvalData(_batches((crops.images,), batch), None, crops.source, crops.photo)
    if data is not None:
        x, y, source = _image_folder_data(Path(data).expanduser(), samples, shape[-1])
        return EvalData(_batches((x,), batch), y, source)
    images = _synthetic_images(samples, shape, seed)
    return EvalData(_batches((images,), batch), None, f"synthetic {shape[1]}x{shape[2]}")


def codec_roundtrip(
    feat: torch.Tensor, settings: CodecSettings
) -> tuple[torch.Tensor, int, float, float]:
    """Encode/decode ``feat`` one sample per frame; returns (decoded, bytes, enc s, dec s)."""
    out, sizes, t_enc, t_dec = _roundtrip_frames(feat, settings)
    return out, sum(sizes), t_enc, t_dec


def _roundtrip_frames(
    feat: torch.Tensor, settings: CodecSettings
) -> tuple[torch.Tensor, list[int], float, float]:
    """``codec_roundtrip`` with the size of each sample's frame."""
    import codec

    out, sizes, t_enc, t_dec = [], [], 0.0, 0.0
    for i in range(feat.shape[0]):
        x = feat[i : i + 1]
        t0 = time.perf_counter()
        blob = codec.encode(x, **settings.as_dict())
        t1 = time.perf_counter()
        y = codec.decode(blob)
        t2 = time.perf_counter()
        t_enc, t_dec = t_enc + t1 - t0, t_dec + t2 - t1
        sizes.append(len(blob))
        out.append(torch.from_numpy(y).to(feat.dtype).reshape(x.shape))
    return torch.cat(out), sizes, t_enc, t_dec


def _metrics(
    loaded: LoadedModel,
    data: EvalData,
    ref: list[Any],
    test: list[Any],
    idx: torch.Tensor | None = None,
) -> dict[str, float]:
    """Fidelity of outputs ``test`` vs ``ref`` (lists per batch) for the model kind, over all
    samples or those in ``idx``. ``ref_classes`` counts the distinct arg-max outputs of the
    uncompressed model: agreement over inputs that all land in one class says little."""
    r, t = torch.cat(ref), torch.cat(test)
    inputs = [torch.cat(col) for col in zip(*data.batches, strict=True)]
    labels = data.labels
    if idx is not None:
        r, t, inputs = r[idx], t[idx], [x[idx] for x in inputs]
        labels = None if labels is None else labels[idx]
    if loaded.kind == "encoder":
        masks = inputs[1]
        er, et = fm.mean_pool(r, masks), fm.mean_pool(t, masks)
        out = {"cosine": fm.cosine(er, et)}
        if er.shape[0] >= 3:
            nn_agree, rho = fm.retrieval_agreement(er, et)
            out |= {"retrieval_top1": nn_agree, "retrieval_spearman": rho}
        return out
    if loaded.kind == "decoder":
        ids, masks = inputs[0], inputs[1]
        ppl_ref, ppl = fm.perplexity(r, ids, masks), fm.perplexity(t, ids, masks)
        return {
            "agreement": fm.agreement(r, t, masks),
            "kl": fm.kl_divergence(r, t, masks),
            "ref_classes": int(r[masks.bool()].argmax(-1).unique().numel()),
            "ppl_baseline": ppl_ref,
            "ppl": ppl,
            "ppl_delta": ppl - ppl_ref,
        }
    out = {
        "agreement": fm.agreement(r, t),
        "kl": fm.kl_divergence(r, t),
        "ref_classes": int(r.argmax(-1).unique().numel()),
    }
    if labels is not None:
        out["top1"] = fm.top1(t, labels)
        out["top1_baseline"] = fm.top1(r, labels)
        out["top1_drop"] = out["top1_baseline"] - out["top1"]
    return out


def primary_metric(row: dict[str, Any]) -> str:
    """The fidelity key a row is judged by: top1 > cosine > agreement."""
    for key in ("top1", "cosine", "agreement"):
        if key in row:
            return key
    raise KeyError("row has no fidelity metric")


def _score(result: tuple[dict[str, float], int, float, float, int | None]) -> tuple[float, int]:
    """Better fidelity first (resolved to 1e-3, finer is noise at these sample counts); a tie
    goes to the smaller frame."""
    m, nbytes = result[0], result[1]
    return (round(m[primary_metric(m)], 3), -nbytes)


@torch.no_grad()
def evaluate(
    model: str | LoadedModel,
    splits: Sequence[str] | None = None,
    bits: Sequence[int] = DEFAULT_BITS,
    samples: int = 32,
    data: str | None = None,
    size: int | None = None,
    granularity: str = "auto",
    level: int = 3,
    batch: int = 16,
    weights: Any = None,
    progress: bool = True,
    halves: bool = False,
    clip: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of rate and fidelity, one per (split, bits); see the module docstring.

    ``halves=True`` adds ``row["halves"]``: for ``"select"`` and ``"report"`` (disjoint
    halves, ``EvalData.halves``) the sample count and, per granularity, the metrics and mean
    wire bytes on that half alone.
    """
    from tqdm import tqdm

    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    bad = [b for b in bits if not isinstance(b, int) or not 1 <= b <= 8]
    if bad or not bits:
        raise ValueError(f"bits must be integers in 1..8, got {list(bits)}")
    loaded = model if isinstance(model, LoadedModel) else load_model(model, weights)
    splits = list(splits) if splits else list(loaded.split_points)
    dataset = load_eval_data(loaded, samples, data, size, batch)
    n = sum(b[0].shape[0] for b in dataset.batches)
    parts = dict(zip(("select", "report"), dataset.halves(), strict=True)) if halves else {}
    rows: list[dict[str, Any]] = []
    grans = ["tensor", "channel"] if granularity == "auto" else [granularity]
    bar = tqdm(
        total=len(splits) * len(bits) * len(grans),
        desc=f"evaluate {loaded.name}",
        disable=not progress,
        leave=False,
    )
    for split in splits:
        head, tail = loaded.split(split)
        mids = [head(*b) for b in dataset.batches]
        ref = [tail(m) for m in mids]
        feat0 = feature_of(mids[0])
        numel = feat0[0].numel()
        axis_c = loaded.channel_axis(split)
        for b in bits:
            results = {}
            by_part: dict[str, dict[str, Any]] = {}
            for gran in grans:
                axis = axis_c if gran == "channel" else None
                setting = CodecSettings(b, level, axis, clip)
                test, sizes, t_enc, t_dec = [], [], 0.0, 0.0
                for m in mids:
                    dec, sz, te, td = _roundtrip_frames(feature_of(m), setting)
                    test.append(tail(with_feature(m, dec)))
                    sizes, t_enc, t_dec = sizes + sz, t_enc + te, t_dec + td
                metrics = _metrics(loaded, dataset, ref, test)
                results[gran] = (metrics, sum(sizes), t_enc, t_dec, axis)
                for part, idx in parts.items():
                    on_part = _metrics(loaded, dataset, ref, test, idx)
                    on_part["wire_bytes"] = round(sum(sizes[i] for i in idx.tolist()) / len(idx), 1)
                    by_part.setdefault(part, {"samples": len(idx)})[gran] = on_part
                bar.update(1)
            best = max(results, key=lambda g: _score(results[g]))
            metrics, nbytes, t_enc, t_dec, axis = results[best]
            wire = nbytes / n
            row: dict[str, Any] = {
                "model": loaded.name,
                "kind": loaded.kind,
                "split": split,
                "bits": b,
                "trained": loaded.trained,
                "weights": loaded.weights_source,
                "data": dataset.source,
                "samples": n,
                "feature_shape": list(feat0.shape[1:]),
                "raw_bytes": 4 * numel,
                "raw_fp16_bytes": 2 * numel,
                "wire_bytes": round(wire, 1),
                "ratio": round(4 * numel / wire, 3),
                "ratio_fp16": round(2 * numel / wire, 3),
                "bits_per_element": round(8 * wire / numel, 4),
                "encode_ms": round(1e3 * t_enc / n, 3),
                "decode_ms": round(1e3 * t_dec / n, 3),
                "granularity": best,
                "clip": clip,
                "axis": axis,
                **metrics,
            }
            key = primary_metric(metrics)
            for gran, res in results.items():
                row[f"{key}_per_{gran}"] = res[0][key]
                row[f"wire_bytes_per_{gran}"] = round(res[1] / n, 1)
            if by_part:
                row["halves"] = by_part
            rows.append(row)
    bar.close()
    return rows


@torch.no_grad()
def profile_model(
    model: str | LoadedModel,
    splits: Sequence[str] | None = None,
    bits: Sequence[int] = (8, 6, 4, 3, 2),
    samples: int = 32,
    data: str | None = None,
    size: int | None = None,
    level: int = 3,
    batch: int = 16,
    weights: Any = None,
    progress: bool = True,
) -> list[Any]:
    """Rate-fidelity profiles (``pipeline.stream.rate.RateProfile``), one per split, for the
    stream's adaptive rate control (``rate.profile``).

    Unlike :func:`evaluate`, each batch is coded as one frame, as the stream sends it, so the bytes
    per sample are the stream's. Every bit width is tried per tensor and per channel, and below 8 bits
    also with ``clip="mse"``; fidelity is
    agreement with the uncompressed model (``cosine`` for encoders) and the finer error is the mean
    KL divergence (``1 - cosine`` for encoders)."""
    from tqdm import tqdm

    from pipeline.stream.profiling import profile_settings
    from pipeline.stream.rate import ProfileEntry, RateProfile
    from pipeline.stream.wire import batch_settings, decode_tensor, encode_tensor

    loaded = model if isinstance(model, LoadedModel) else load_model(model, weights)
    splits = list(splits) if splits else list(loaded.split_points)
    dataset = load_eval_data(loaded, samples, data, size, batch)
    n = sum(b[0].shape[0] for b in dataset.batches)
    profiles = []
    bar = tqdm(total=len(splits), desc=f"profile {loaded.name}", disable=not progress, leave=False)
    for split in splits:
        head, tail = loaded.split(split)
        mids = [head(*b) for b in dataset.batches]
        ref = [tail(m) for m in mids]
        entries = []
        # settings name the per-sample channel axis; frames hold batches, one axis further in
        for s in profile_settings(bits, level, loaded.channel_axis(split) - 1):
            coded = batch_settings(s)
            nbytes, test = 0, []
            for m in mids:
                feat = feature_of(m)
                frame = encode_tensor(feat.float().numpy(), "ours", coded)
                nbytes += len(frame)
                dec = torch.from_numpy(decode_tensor(frame)).to(feat.dtype)
                test.append(tail(with_feature(m, dec)))
            met = _metrics(loaded, dataset, ref, test)
            fid = met["cosine"] if "cosine" in met else met["agreement"]
            entries.append(ProfileEntry(s, nbytes / n, float(fid), float(met.get("kl", 1.0 - fid))))
        bar.update(1)
        metric = "cosine" if loaded.kind == "encoder" else "agreement"
        source = f"offline: python -m pipeline.evaluation.evaluate, {n} samples of {dataset.source}"
        profiles.append(RateProfile(loaded.name, split, metric, n, source, entries))
    bar.close()
    return profiles


FIDELITY_COLUMNS = (
    "top1_baseline",
    "top1",
    "agreement",
    "kl",
    "ref_classes",
    "cosine",
    "retrieval_top1",
    "ppl_baseline",
    "ppl",
)


def rows_to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of rows (fidelity columns shown only where some row has them)."""
    fid = [c for c in FIDELITY_COLUMNS if any(c in r for r in rows)]
    cols = [
        "model",
        "trained",
        "split",
        "bits",
        "samples",
        "granularity",
        "raw_bytes",
        "wire_bytes",
        "ratio",
        "encode_ms",
        "decode_ms",
        *fid,
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if isinstance(v, float):
                if c == "kl":
                    v = f"{v:.2e}"
                elif c == "cosine":
                    v = f"{v:.6f}"
                elif c in ("agreement", "top1", "top1_baseline", "retrieval_top1"):
                    v = f"{v:.4f}"
                else:
                    v = f"{v:.2f}"
            cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_rate_fidelity(
    rows: Sequence[dict[str, Any]], path: str | Path, title: str | None = None
) -> Path:
    """PNG of fidelity vs bits per element, one line per (model, split); one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    ncol = min(3, len(models))
    nrow = (len(models) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.6 * nrow), squeeze=False)
    for ax, name in zip(axes.flat, models, strict=False):
        mrows = [r for r in rows if r["model"] == name]
        key = primary_metric(mrows[0])
        for split in dict.fromkeys(r["split"] for r in mrows):
            pts = sorted((r["bits_per_element"], r[key]) for r in mrows if r["split"] == split)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=split)
        if key == "top1" and "top1_baseline" in mrows[0]:
            ax.axhline(mrows[0]["top1_baseline"], color="grey", ls="--", lw=1, label="uncompressed")
        state = "trained" if mrows[0]["trained"] else "untrained"
        ax.set_title(f"{name} ({state}, n={mrows[0]['samples']})", fontsize=10)
        ax.set_xlabel("wire bits per feature element")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(models) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--bits expects comma-separated integers, got {text!r}"
        ) from exc


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.evaluation.evaluate", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--model", required=True, help="registry name or local HF model directory")
    ap.add_argument("--split", default="all", help="split point(s), comma-separated, or 'all'")
    ap.add_argument("--bits", type=_int_list, default=list(DEFAULT_BITS), help="e.g. 8,6,4,2")
    ap.add_argument(
        "--data",
        default=None,
        help="CIFAR-100 root, image folder, 'photos' (bundled photographs) or 'photos:seed=N' "
        "(seeded random crops of them); no downloads",
    )
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--size", type=int, default=None, help="image side for vision models")
    ap.add_argument(
        "--weights", default=None, help="checkpoint file, torchvision weights name or HF dir"
    )
    ap.add_argument("--granularity", choices=GRANULARITIES, default="auto")
    ap.add_argument("--level", type=int, default=3, help="codec level")
    ap.add_argument(
        "--clip",
        choices=["mse", "wmse", "wmse_ends"],
        default=None,
        help="quantization range: least squared error (mse), saturation weighted twice (wmse), "
        "and each end searched alone (wmse_ends)",
    )
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json", default=None, help="write rows as JSON here")
    ap.add_argument("--plot", default=None, help="write the rate-fidelity PNG here")
    ap.add_argument(
        "--profile",
        default=None,
        help="write rate-fidelity profiles (one per split, batch frames) for rate.profile here",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints a Markdown table and optionally writes JSON / PNG."""
    args = build_parser().parse_args(argv)
    splits = (
        None if args.split == "all" else [s.strip() for s in args.split.split(",") if s.strip()]
    )
    try:
        loaded = load_model(args.model, args.weights)
        rows = evaluate(
            loaded,
            splits,
            args.bits,
            args.samples,
            args.data,
            args.size,
            args.granularity,
            args.level,
            args.batch,
            args.weights,
            not args.quiet,
            clip=args.clip,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(rows_to_markdown(rows))
    if not rows[0]["trained"]:
        print(
            f"note: {rows[0]['model']} is untrained (random weights): fidelity is vs the "
            "uncompressed model, not a task accuracy"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1))
    if args.plot:
        plot_rate_fidelity(rows, args.plot)
    if args.profile:
        from pipeline.stream.rate import save_profiles

        profiles = profile_model(
            loaded, splits, args.bits, args.samples, args.data, args.size, args.level, args.batch,
            progress=not args.quiet,
        )  # fmt: skip
        out = save_profiles(profiles, args.profile)
        print(f"rate-fidelity profiles of {len(profiles)} split(s) written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
