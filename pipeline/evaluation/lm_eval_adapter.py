"""lm-evaluation-harness model ``splitstream``: split + codec-compressed causal-LM inference.

Every forward pass runs the head (embedding + first k decoder layers), encodes the hidden
states with ``codec.encode`` (one frame per sequence), decodes them and runs the tail, so
task scores show what the codec costs. ``generate_until`` generates through the split with a KV
cache on each side (``pipeline.generation.generate``): the prompt's hidden states are coded once,
then one hidden vector per new token. Usage (lm_eval 0.4.13 has no plugin entry point for
models, so this module registers the model and then runs lm_eval's own CLI)::

    python -m pipeline.evaluation.lm_eval_adapter --model splitstream \\
        --model_args pretrained=DIR,split=2,bits=8 --tasks TASK [--include_path YAML_DIR]

or from Python: ``import pipeline.evaluation.lm_eval_adapter`` then
``lm_eval.simple_evaluate(model="splitstream", model_args="pretrained=DIR,split=2,bits=8", ...)``.

Model args: ``pretrained`` (local HF causal-LM directory with a tokenizer, or ``llama-tiny``),
``split`` (int k: cut after k decoder layers, or ``layers.<i>``), ``bits`` (1..8, or 0 for
no compression), ``granularity`` (``channel`` default, or ``tensor``), ``level`` (codec
level), ``max_length``, ``max_gen_toks``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from codec import CodecSettings
from pipeline.evaluation.evaluate import codec_roundtrip
from pipeline.generation.generate import Generation, SplitGenerator
from pipeline.models import feature_of, load_model, with_feature

MODEL_NAME = "splitstream"
TARGET = "pipeline.evaluation.lm_eval_adapter:SplitStreamLM"


def register() -> None:
    """Register ``splitstream`` with lm_eval's model registry (idempotent, lazy placeholder).

    lm_eval's built-in models are registered first so they stay available.
    """
    import lm_eval.models  # noqa: F401  (fills the registry with the built-in placeholders)
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=TARGET)


class SplitStreamLM(LM):
    """A causal LM evaluated through head -> codec -> tail (see module docstring)."""

    def __init__(
        self,
        pretrained: str,
        split: int | str = 1,
        bits: int = 8,
        granularity: str = "channel",
        level: int = 3,
        max_length: int | None = None,
        max_gen_toks: int = 32,
        batch_size: Any = 1,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if not isinstance(bits, int) or not 0 <= bits <= 8:
            raise ValueError(f"bits must be 0 (uncompressed) or 1..8, got {bits!r}")
        if granularity not in ("channel", "tensor"):
            raise ValueError(f"granularity must be 'channel' or 'tensor', got {granularity!r}")
        # lm_eval's CLI defaults to cuda:0; use it only where a GPU exists, else the CPU
        dev = str(device or "cpu")
        self._device = torch.device(
            dev if dev.startswith("cuda") and torch.cuda.is_available() else "cpu"
        )
        loaded = load_model(str(pretrained))
        if loaded.kind != "decoder":
            raise ValueError(
                f"pretrained={pretrained!r} is a {loaded.kind} model, need a causal LM"
            )
        if loaded.tokenizer is None:
            raise ValueError(
                f"pretrained={pretrained!r} has no tokenizer files (tokenizer.json ...)"
            )
        self.tok = loaded.tokenizer
        head, tail = loaded.split(split)
        self.head, self.tail = head.to(self._device), tail.to(self._device)
        self.bits, self.level = bits, int(level)
        self.axis = 2 if granularity == "channel" else None
        cfg = loaded.raw.config
        self._max_length = int(max_length or getattr(cfg, "max_position_embeddings", 512))
        self.max_gen_toks = int(max_gen_toks)
        self.stats = {"frames": 0, "raw_bytes": 0, "wire_bytes": 0, "generated_tokens": 0}
        self.generator = SplitGenerator(
            loaded.raw, split, bits, granularity, self.level, device=self._device
        )
        self.last_generation: Generation | None = None
        prefix = (
            self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        )
        if prefix is None:
            raise ValueError(
                "the tokenizer needs a bos or eos token to condition the first token on"
            )
        self.prefix_token_id = int(prefix)

    @property
    def max_length(self) -> int:
        return self._max_length

    @torch.no_grad()
    def logprobs(self, ids: Sequence[int]) -> torch.Tensor:
        """Log-softmax over the vocabulary at every position of one token sequence (T, V)."""
        x = torch.tensor([list(ids)], dtype=torch.long, device=self._device)
        wire = self.head(x, torch.ones_like(x))
        if self.bits:
            feat = feature_of(wire)
            dec, nbytes, _, _ = codec_roundtrip(
                feat, CodecSettings(self.bits, self.level, self.axis)
            )
            wire = with_feature(wire, dec.to(self._device))
            self.stats["frames"] += 1
            self.stats["raw_bytes"] += 4 * feat.numel()
            self.stats["wire_bytes"] += nbytes
        return F.log_softmax(self.tail(wire)[0].double(), -1).cpu()

    def _encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def _score(self, context: list[int], target: list[int]) -> tuple[float, bool]:
        """Sum log p(target | context) and whether target is the greedy continuation."""
        ids = (context + target)[-(self.max_length + 1) :]
        lp = self.logprobs(ids[:-1])[-len(target) :]
        tgt = torch.tensor(target[-lp.shape[0] :])
        total = float(lp.gather(-1, tgt.unsqueeze(-1)).sum())
        return total, bool((lp.argmax(-1) == tgt).all())

    def loglikelihood(
        self, requests: list[Any], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        out = []
        for req in tqdm(requests, desc="splitstream loglikelihood", disable=disable_tqdm):
            context, continuation = req.args
            ctx = self._encode(context) if context else []
            cont = self._encode(continuation)
            if not cont:
                out.append((0.0, True))
                continue
            out.append(self._score([self.prefix_token_id, *ctx], cont))
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in tqdm(requests, desc="splitstream rolling", disable=disable_tqdm):
            (text,) = req.args
            total = 0.0
            windows = get_rolling_token_windows(
                self._encode(text), self.prefix_token_id, self.max_length, 1
            )
            for ctx, pred in map(make_disjoint_window, windows):
                total += self._score(list(ctx), list(pred))[0]
            out.append(total)
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy generation through the split with a KV cache on each side
        (``pipeline.generation.generate``): the prompt's hidden states cross the codec once, then one
        hidden vector per new token."""
        out = []
        for req in tqdm(requests, desc="splitstream generate", disable=disable_tqdm):
            context, gen_kwargs = req.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.get("until") or []
            if isinstance(until, str):
                until = [until]
            limit = min(int(gen_kwargs.get("max_gen_toks", self.max_gen_toks)), self.max_length - 1)
            ids = [self.prefix_token_id, *self._encode(context)][-(self.max_length - limit) :]

            def stop(new: list[int], until: list[str] = until) -> bool:
                return any(u in self.tok.decode(new, skip_special_tokens=True) for u in until)

            eos = self.tok.eos_token_id
            gen = self.generator.generate(
                ids, limit, stop_ids=() if eos is None else (eos,), stop=stop, reference=False
            )
            self.last_generation = gen
            new = gen.tokens[:-1] if gen.finish == "eos" else gen.tokens
            self.stats["generated_tokens"] += len(gen.tokens)
            if self.bits:
                self.stats["frames"] += len(gen.steps)
                self.stats["raw_bytes"] += sum(s.raw_bytes for s in gen.steps)
                self.stats["wire_bytes"] += sum(s.up_bytes for s in gen.steps)
            text = self.tok.decode(new, skip_special_tokens=True)
            for u in until:
                text = text.split(u)[0]
            out.append(text)
        return out


def main(argv: Sequence[str] | None = None) -> None:
    """Run lm_eval's CLI with the ``splitstream`` model registered (same arguments as lm_eval)."""
    from lm_eval.__main__ import cli_evaluate

    register()
    args = list(sys.argv[1:] if argv is None else argv)
    saved = sys.argv
    sys.argv = ["lm_eval", *args]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


register()

if __name__ == "__main__":
    main()
