"""Split generation: a causal LM's head on the edge, its tail in the cloud, a KV cache on each side.

    splitstream generate --model llama-tiny --split 2 --bits 8 --prompt "Hello" --max-new-tokens 32

The edge runs the embedding and the first k decoder layers; the cloud runs the rest and picks the next
token greedily. The prompt's hidden states go up once (prefill); after that every step sends the one
hidden vector of the newest position up, coded with our codec (``bits=0``: raw fp32, no codec), over
an emulated uplink, and the cloud sends the chosen token id (4 bytes) back over an emulated downlink
with its own delay. The sender waits for each message to arrive, so the measured wall time holds the
link's time. With ``cache=False`` both sides instead recompute the whole prefix every step and the edge
sends every position's hidden state again: the baseline the KV caches are measured against.

Python::

    from pipeline.generation.generate import load_generator
    gen = load_generator("llama-tiny", split=2, bits=8)
    report = gen.run(["Hello"], max_new_tokens=32)           # the report described in README.md
    one = gen.generate(gen.encode("Hello"), max_new_tokens=32)   # one Generation, token ids in/out

Agreement with the unsplit model (``reference=True``) is measured two ways, both by the unsplit model
with its own KV cache, outside the timed loop: ``agreement`` is the share of steps at which the unsplit
model, given the same prefix, picks the same token as the split one (the codec's effect on each
decision); ``sequence_agreement`` compares the two free-running greedy continuations position by
position (one early difference changes every later prefix, so it is the stricter figure).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.models.kv_split import new_cache, split_cached
from pipeline.stream.link import EmulatedLink, LinkSpec, resolve_link

TOKEN_ID = struct.Struct("<I")
"""The downlink message: one token id, u32 little endian."""

PARTS = ("head", "encode", "uplink", "decode", "tail", "downlink")
"""The timed parts of one step, in the order they happen."""

GROUPS = {
    "compute": ("head", "tail"),
    "codec": ("encode", "decode"),
    "link": ("uplink", "downlink"),
}


class HiddenCoder:
    """How hidden states cross the uplink: a codec frame at ``bits`` 1..8, or raw fp32 at ``bits=0``.

    A raw message is the fp32 values and nothing else: both sides know the hidden size, so the row count
    follows from the length. With ``session`` each sequence's frames go through a pair of
    ``codec.Session`` ends (see :meth:`sessions`): the prompt's frame carries the quantization grid and
    table, and each later one-row frame only its symbols."""

    def __init__(
        self, bits: int, granularity: str = "tensor", level: int = 3, session: bool = False
    ) -> None:
        if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= 8:
            raise ValueError(f"bits must be 0 (raw fp32, no codec) or 1..8, got {bits!r}")
        if granularity not in ("tensor", "channel"):
            raise ValueError(f"granularity must be 'tensor' or 'channel', got {granularity!r}")
        if session and not bits:
            raise ValueError("a codec session needs bits 1..8 (bits=0 sends raw fp32)")
        self.bits, self.granularity, self.level = bits, granularity, int(level)
        self.session = bool(session)

    @property
    def axis(self) -> int | None:
        return 2 if self.granularity == "channel" else None

    def sessions(self) -> tuple[Any, Any]:
        """A fresh (sending, receiving) pair of codec sessions for one sequence, or (None, None)."""
        if not self.session:
            return None, None
        import codec

        return codec.Session(self.bits, self.axis), codec.Session(self.bits, self.axis)

    def encode(self, hidden: torch.Tensor, session: Any = None) -> bytes:
        if not self.bits:
            return hidden.detach().float().cpu().numpy().tobytes()
        if session is not None:
            return session.encode(hidden.detach())
        import codec

        return codec.encode(hidden.detach(), bits=self.bits, axis=self.axis, level=self.level)

    def decode(
        self, blob: bytes, hidden_size: int, like: torch.Tensor, session: Any = None
    ) -> torch.Tensor:
        """The (1, T, H) hidden states in ``blob``, on ``like``'s device and in its dtype."""
        if session is not None:
            arr = session.decode(blob)
        elif self.bits:
            import codec

            arr = codec.decode(blob)
        else:
            if len(blob) % (4 * hidden_size):
                raise ValueError(
                    f"a raw message of {len(blob)} bytes is not whole rows of {hidden_size} fp32 values"
                )
            arr = np.frombuffer(bytearray(blob), np.float32).reshape(1, -1, hidden_size)
        if arr.ndim != 3 or arr.shape[0] != 1 or arr.shape[2] != hidden_size:
            raise ValueError(f"expected hidden states (1, T, {hidden_size}), got {arr.shape}")
        return torch.from_numpy(np.ascontiguousarray(arr)).to(like.device, like.dtype)


class Links:
    """The uplink (hidden states) and downlink (token ids) of one sequence; the sender waits until its
    message has arrived. Returns the seconds each message took."""

    def __init__(self, uplink: LinkSpec, downlink: LinkSpec) -> None:
        self.up, self.down = EmulatedLink(uplink), EmulatedLink(downlink)

    @staticmethod
    def _send(link: EmulatedLink, nbytes: int) -> float:
        t0 = time.perf_counter()
        wait = link.reserve(nbytes).arrival - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return time.perf_counter() - t0

    def send_up(self, nbytes: int) -> float:
        return self._send(self.up, nbytes)

    def send_down(self, nbytes: int) -> float:
        return self._send(self.down, nbytes)


@dataclass
class Step:
    """One message up and one token id down: what crossed and how long each part took (ms)."""

    rows: int  # hidden vectors in the uplink message (the prompt's length at prefill, 1 after)
    up_bytes: int
    raw_bytes: int  # what the same rows take as fp32
    down_bytes: int
    token: int
    ms: dict[str, float]


@dataclass
class Generation:
    """One sequence generated through the split: the prompt, the new tokens, every step, and the
    comparison with the unsplit model (when asked for)."""

    prompt_ids: list[int]
    tokens: list[int]
    finish: str  # "length", "eos" (a stop id was generated, and is in tokens) or "stop"
    steps: list[Step]
    reference: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """The per-sequence report (see README.md, split generation)."""
        out = _summary([self])
        out.update(
            prompt_tokens=len(self.prompt_ids),
            finish=self.finish,
            tokens=list(self.tokens),
            uplink_rows=[s.rows for s in self.steps],
            **{k: v for k, v in self.reference.items() if k not in ("matches", "margins")},
        )
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SplitGenerator:
    """Greedy generation through a split Llama-style causal LM (see the module docstring)."""

    def __init__(
        self,
        lm: nn.Module,
        split: str | int,
        bits: int = 8,
        granularity: str = "tensor",
        level: int = 3,
        uplink: LinkSpec | None = None,
        downlink: LinkSpec | None = None,
        cache: bool = True,
        device: str | torch.device | None = None,
        tokenizer: Any = None,
        name: str = "model",
        session: bool = False,
    ) -> None:
        self.coder = HiddenCoder(bits, granularity, level, session)
        self.lm = lm.eval()
        self.device = torch.device(device) if device else next(lm.parameters()).device
        self.head, self.tail = (m.to(self.device) for m in split_cached(lm, split))
        self.split = split
        self.k = self.head.k
        self.hidden_size = int(lm.config.hidden_size)
        self.max_positions = int(getattr(lm.config, "max_position_embeddings", 0) or 0)
        self.uplink, self.downlink = uplink or LinkSpec(), downlink or LinkSpec()
        self.cache = bool(cache)
        self.tokenizer, self.name = tokenizer, name

    # ------------------------------------------------------------------ text
    def encode(self, text: str) -> list[int]:
        """Prompt token ids (with the tokenizer's special tokens, e.g. BOS)."""
        if self.tokenizer is None:
            raise ValueError(f"{self.name} has no tokenizer: pass token ids to generate()")
        ids = list(self.tokenizer.encode(text))
        if not ids:
            raise ValueError(f"the prompt {text!r} has no tokens")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True) if self.tokenizer else ""

    def stop_ids(self) -> set[int]:
        """The end-of-sequence ids of the tokenizer and the model config."""
        ids: set[int] = set()
        for src in (self.tokenizer, self.lm.config):
            eos = getattr(src, "eos_token_id", None)
            ids.update([eos] if isinstance(eos, int) else list(eos or []))
        return ids

    # ------------------------------------------------------------------ generation
    def _check(self, prompt_ids: Sequence[int], max_new_tokens: int) -> None:
        if (
            isinstance(max_new_tokens, bool)
            or not isinstance(max_new_tokens, int)
            or max_new_tokens < 1
        ):
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if not prompt_ids:
            raise ValueError("the prompt has no tokens")
        vocab = int(self.lm.config.vocab_size)
        bad = [i for i in prompt_ids if not 0 <= int(i) < vocab]
        if bad:
            raise ValueError(
                f"prompt token ids {bad[:5]} are outside the vocabulary (0..{vocab - 1})"
            )
        if self.max_positions and len(prompt_ids) + max_new_tokens > self.max_positions:
            raise ValueError(
                f"{len(prompt_ids)} prompt tokens + {max_new_tokens} new tokens exceed the model's "
                f"{self.max_positions} positions"
            )

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int = 32,
        stop_ids: Sequence[int] | set[int] = (),
        stop: Callable[[list[int]], bool] | None = None,
        reference: bool = True,
    ) -> Generation:
        """Generate up to ``max_new_tokens`` greedily. Stops after a token in ``stop_ids`` (kept in
        ``tokens``) or when ``stop(tokens)`` is true."""
        prompt = [int(i) for i in prompt_ids]
        self._check(prompt, max_new_tokens)
        dev, links = self.device, Links(self.uplink, self.downlink)
        tx, rx = self.coder.sessions()
        head_cache = new_cache() if self.cache else None
        tail_cache = new_cache() if self.cache else None
        stops = {int(i) for i in stop_ids}
        tokens: list[int] = []
        steps: list[Step] = []
        finish = "length"
        send = torch.tensor([prompt], device=dev)  # what the edge feeds its head this step
        start = 0
        for _ in range(max_new_tokens):
            t = [time.perf_counter()]
            hidden = self.head(send, start, head_cache)
            _sync(dev)
            t.append(time.perf_counter())
            blob = self.coder.encode(hidden, tx)
            t.append(time.perf_counter())
            links.send_up(len(blob))
            t.append(time.perf_counter())
            received = self.coder.decode(blob, self.hidden_size, hidden, rx)
            t.append(time.perf_counter())
            token = int(self.tail(received, start, tail_cache)[0].argmax())
            t.append(time.perf_counter())
            message = TOKEN_ID.pack(token)
            links.send_down(len(message))
            (token,) = TOKEN_ID.unpack(message)  # what the edge reads
            t.append(time.perf_counter())
            ms = {p: (b - a) * 1e3 for p, a, b in zip(PARTS, t[:-1], t[1:], strict=True)}
            rows = received.shape[1]
            steps.append(
                Step(rows, len(blob), 4 * rows * self.hidden_size, len(message), token, ms)
            )
            tokens.append(token)
            if token in stops:
                finish = "eos"
                break
            if stop is not None and stop(tokens):
                finish = "stop"
                break
            if self.cache:
                start += send.shape[1]
                send = torch.tensor([[token]], device=dev)
            else:
                send = torch.tensor([prompt + tokens], device=dev)
        gen = Generation(prompt, tokens, finish, steps)
        if reference:
            gen.reference = self.compare(prompt, tokens)
        return gen

    def _unsplit(self, ids: list[int], start: int, cache: Any) -> torch.Tensor:
        """The unsplit model's next-token logits (V,) after ``ids`` at positions from ``start``."""
        x = torch.tensor([ids], device=self.device)
        pos = torch.arange(start, start + len(ids), device=self.device).unsqueeze(0)
        out = self.lm(input_ids=x, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].float()

    @torch.no_grad()
    def compare(self, prompt: list[int], tokens: list[int]) -> dict[str, Any]:
        """The unsplit model, with its own KV cache, against the split's ``tokens``: per-step agreement
        given the same prefix, and its own free-running greedy continuation (timed per token)."""
        cache, feed, start, matches, margins = new_cache(), prompt, 0, [], []
        for tok in tokens:
            logits = self._unsplit(feed, start, cache)
            top = logits.topk(2).values if logits.numel() > 1 else logits.repeat(2)
            matches.append(int(logits.argmax()) == tok)
            margins.append(float(top[0] - top[1]))
            start, feed = start + len(feed), [tok]
        cache, feed, start, free = new_cache(), prompt, 0, []
        times = []
        for _ in tokens:
            t0 = time.perf_counter()
            free.append(int(self._unsplit(feed, start, cache).argmax()))
            times.append(time.perf_counter() - t0)
            start, feed = start + len(feed), [free[-1]]
        same = [a == b for a, b in zip(free, tokens, strict=True)]
        return {
            "matches": matches,
            "margins": margins,
            "agreement": float(np.mean(matches)),
            "disagreement_margins": [m for m, ok in zip(margins, matches, strict=True) if not ok],
            "reference_tokens": free,
            "sequence_agreement": float(np.mean(same)),
            "first_divergence": same.index(False) if False in same else None,
            "unsplit_ms_per_token": float(np.mean(times[1:]) * 1e3) if len(times) > 1 else None,
        }

    def run(
        self,
        prompts: Sequence[str | Sequence[int]],
        max_new_tokens: int = 32,
        stop_at_eos: bool = True,
        reference: bool = True,
    ) -> dict[str, Any]:
        """Generate for every prompt (text, or token ids); the report over all of them, with one entry
        per prompt under ``prompts``."""
        if not prompts:
            raise ValueError("no prompts")
        gens, entries = [], []
        for p in prompts:
            ids = self.encode(p) if isinstance(p, str) else [int(i) for i in p]
            stops = self.stop_ids() if stop_at_eos else set()
            gen = self.generate(ids, max_new_tokens, stops, reference=reference)
            gens.append(gen)
            entry = {"prompt": p if isinstance(p, str) else None, **gen.report()}
            entry["text"] = self.decode(gen.tokens)
            entries.append(entry)
        return {
            "model": self.name,
            "split": self.k,
            "bits": self.coder.bits,
            "codec": "none (raw fp32)" if not self.coder.bits else "splitstream",
            "granularity": self.coder.granularity,
            "session": self.coder.session,
            "level": self.coder.level,
            "cache": self.cache,
            "device": str(self.device),
            "hidden_size": self.hidden_size,
            "uplink": asdict(self.uplink),
            "downlink": asdict(self.downlink),
            **_summary(gens),
            "prompts": entries,
        }


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _times(steps: list[Step]) -> dict[str, float | None]:
    """Mean ms per step of every part, of each group of parts, and of the whole step."""
    out: dict[str, float | None] = {p: _mean([s.ms[p] for s in steps]) for p in PARTS}
    for group, parts in GROUPS.items():
        out[group] = _mean([sum(s.ms[p] for p in parts) for s in steps])
    out["total"] = _mean([sum(s.ms.values()) for s in steps])
    return out


def _summary(gens: list[Generation]) -> dict[str, Any]:
    """Figures pooled over sequences: bytes and times per generated token (decode steps: every step
    after the prefill), message counts, agreement with the unsplit model."""
    prefill = [g.steps[0] for g in gens]
    decode = [s for g in gens for s in g.steps[1:]]
    every = [s for g in gens for s in g.steps]
    new = sum(len(g.tokens) for g in gens)
    out: dict[str, Any] = {
        "sequences": len(gens),
        "new_tokens": new,
        "messages": {
            "uplink": len(every),
            "downlink": len(every),
            "decode_steps": len(decode),
            "max_rows_per_decode_step": max((s.rows for s in decode), default=None),
        },
        "bytes_per_token": sum(s.up_bytes + s.down_bytes for s in every) / new,
        "uplink_bytes_per_token": _mean([s.up_bytes for s in decode]),
        "downlink_bytes_per_token": _mean([s.down_bytes for s in decode]),
        "prefill_uplink_bytes": _mean([s.up_bytes for s in prefill]),
        "raw_uplink_bytes_per_token": _mean([s.raw_bytes for s in decode]),
        "ms_per_token": _times(decode),
        "prefill_ms": _times(prefill),
    }
    refs = [g.reference for g in gens if g.reference]
    if refs:
        matches = [m for r in refs for m in r["matches"]]
        free = [
            a == b
            for g in gens
            for a, b in zip(g.reference["reference_tokens"], g.tokens, strict=True)
        ]
        unsplit = [r["unsplit_ms_per_token"] for r in refs if r["unsplit_ms_per_token"] is not None]
        margins = [m for r in refs for m in r["margins"]]
        flips = [m for r in refs for m in r["disagreement_margins"]]
        out.update(
            agreement=float(np.mean(matches)),
            sequence_agreement=float(np.mean(free)),
            median_margin=float(np.median(margins)),
            max_disagreement_margin=max(flips, default=None),
            unsplit_ms_per_token=_mean(unsplit),
        )
    return out


def load_generator(
    model: str | os.PathLike[str],
    split: str | int,
    weights: Any = None,
    **options: Any,
) -> SplitGenerator:
    """A :class:`SplitGenerator` for a registry causal LM (``llama-tiny``) or a local Hugging Face
    Llama-architecture directory; ``options`` are :class:`SplitGenerator`'s. A model without tokenizer
    files gets a byte-level one (``pipeline.models.byte_tokenizer``)."""
    from pipeline.models import load_model
    from pipeline.models.byte_tokenizer import tokenizer_for

    loaded = load_model(model, weights)
    if loaded.kind != "decoder":
        raise ValueError(
            f"{loaded.name}: split generation needs a causal LM; this is a {loaded.kind} model"
        )
    return SplitGenerator(
        loaded.raw, split, tokenizer=tokenizer_for(loaded), name=loaded.name, **options
    )


def read_prompts(path: str | os.PathLike[str]) -> list[str]:
    """Prompts from a file: one per line, or JSON Lines with a ``text`` field; blank lines skipped."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"--prompts {str(p)!r}: cannot read ({exc.strerror or exc})") from exc
    prompts = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                text = json.loads(line)["text"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{p}:{n}: a JSON line needs a string 'text' field") from exc
            if not isinstance(text, str):
                raise ValueError(f"{p}:{n}: a JSON line needs a string 'text' field")
            prompts.append(text)
        else:
            prompts.append(line)
    if not prompts:
        raise ValueError(f"--prompts {str(p)!r} holds no prompts")
    return prompts


def format_report(report: dict[str, Any]) -> str:
    """A few lines for the terminal: the generated text per prompt, then the pooled figures."""
    lines = []
    for e in report["prompts"]:
        agree = f", agreement {e['agreement']:.3f}" if "agreement" in e else ""
        lines.append(
            f"[{e['prompt_tokens']} prompt tokens -> {e['new_tokens']} new, {e['finish']}{agree}]"
        )
        lines.append(f"  {e['prompt'] or ''!s}{e['text']}")
    t = report["ms_per_token"]
    link_up, link_down = report["uplink"], report["downlink"]
    lines += [
        "",
        f"model {report['model']}, split after {report['split']} layers, "
        f"{report['bits']} bits ({report['codec']}), {'KV caches' if report['cache'] else 'no cache'}",
        f"uplink {link_up['bandwidth_mbps'] or 'unlimited'} Mbit/s {link_up['delay_ms']:g} ms, "
        f"downlink {link_down['bandwidth_mbps'] or 'unlimited'} Mbit/s {link_down['delay_ms']:g} ms",
        f"tokens: {report['new_tokens']} in {report['sequences']} sequence(s), "
        f"{report['messages']['uplink']} messages up, {report['messages']['downlink']} down",
        f"bytes per token: {report['bytes_per_token']:.1f} in all "
        f"(decode step: {_fmt(report['uplink_bytes_per_token'])} up, raw "
        f"{_fmt(report['raw_uplink_bytes_per_token'])}; {_fmt(report['downlink_bytes_per_token'])} "
        f"down; prefill {_fmt(report['prefill_uplink_bytes'])} up)",
    ]
    if t["total"] is not None:
        lines.append(
            f"ms per token: {t['total']:.2f} = compute {t['compute']:.2f} + codec {t['codec']:.2f} "
            f"+ link {t['link']:.2f}"
        )
    if "agreement" in report:
        lines.append(
            f"agreement with unsplit greedy: {report['agreement']:.3f} per step, "
            f"{report['sequence_agreement']:.3f} free-running"
        )
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``splitstream generate``."""
    ap.add_argument("--model", required=True, help="llama-tiny or a local HF Llama directory")
    ap.add_argument("--weights", default=None, help="weights for a registry model (a directory)")
    ap.add_argument("--split", required=True, help="k (layers in the head) or layers.<i>")
    ap.add_argument("--bits", type=int, default=8, help="1..8, or 0 for raw fp32 (default 8)")
    ap.add_argument("--granularity", choices=("tensor", "channel"), default="tensor")
    ap.add_argument("--level", type=int, default=3, help="codec level 1..9 (default 3)")
    ap.add_argument(
        "--session",
        action="store_true",
        help="one codec session per sequence: grid and table sent once, not with every token",
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--prompts", metavar="FILE", help="one prompt per line, or JSONL with 'text'")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--ignore-eos", action="store_true", help="always generate --max-new-tokens")
    ap.add_argument("--no-cache", action="store_true", help="recompute the prefix every step")
    ap.add_argument("--no-reference", action="store_true", help="skip the unsplit comparison")
    ap.add_argument("--link", default="lte", help="uplink profile (default lte; 'unlimited')")
    ap.add_argument("--bandwidth-mbps", type=float, default=None, help="override the uplink rate")
    ap.add_argument("--delay-ms", type=float, default=None, help="override the uplink delay")
    ap.add_argument(
        "--downlink-delay-ms",
        type=float,
        default=None,
        help="downlink delay (default: the uplink's)",
    )
    ap.add_argument(
        "--downlink-mbps", type=float, default=None, help="downlink rate (default unlimited)"
    )
    ap.add_argument("--device", default=None, help="cpu (default) or cuda[:n]")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the report as JSON")


def run_cli(args: argparse.Namespace) -> int:
    """``splitstream generate``: 0 on success, 2 for bad input (the message says which)."""
    try:
        uplink = resolve_link(args.link, bandwidth_mbps=args.bandwidth_mbps, delay_ms=args.delay_ms)
        down_delay = uplink.delay_ms if args.downlink_delay_ms is None else args.downlink_delay_ms
        downlink = LinkSpec(bandwidth_mbps=args.downlink_mbps, delay_ms=down_delay)
        split: str | int = int(args.split) if str(args.split).isdigit() else args.split
        prompts = [args.prompt] if args.prompt is not None else read_prompts(args.prompts)
        if args.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {args.threads}")
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: no CUDA device here")
        gen = load_generator(
            args.model,
            split,
            args.weights,
            bits=args.bits,
            granularity=args.granularity,
            level=args.level,
            session=args.session,
            uplink=uplink,
            downlink=downlink,
            cache=not args.no_cache,
            device=args.device or "cpu",
        )
        report = gen.run(
            prompts,
            args.max_new_tokens,
            stop_at_eos=not args.ignore_eos,
            reference=not args.no_reference,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
        print(f"report written to {path}")
    return 0
