"""HeadModel and TailModel actors: the two halves of the split network (torch, CPU or GPU).

Text models: the head takes a dict of token ids and attention mask and returns the transformer's wire
dict (``pipeline.models.hf_split``), kept as a dict of arrays; the tail takes that dict back. What the
tail hands the sink depends on the model's ``kind``: top-1 predictions (image models, and the next token
after each prompt of a decoder LM), sentence embeddings (encoders), and for a decoder LM the logits of
every valid position of the samples the sink checks against the uncompressed model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from actors.base import StageBase, limit_threads
from pipeline.stream.data import nbytes

ModelFactory = Callable[[], tuple[Any, Any]]


def _device(use_gpu: bool) -> str:
    import torch

    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


def _tensor(x: np.ndarray):
    """A torch view of ``x`` (copied when read-only, as arrays from Ray's object store are)."""
    import torch

    return torch.from_numpy(x if x.flags.writeable else x.copy())


def _to_device(x: Any, device: str) -> Any:
    """An array, or a dict of arrays, as torch tensors on ``device``."""
    if isinstance(x, dict):
        return {k: _tensor(v).to(device) for k, v in x.items()}
    return _tensor(x).to(device)


def _to_numpy(out: Any) -> Any:
    """A head's output as NumPy: a tensor (bf16 as fp32), or the dict of a transformer's head."""
    import torch

    if isinstance(out, dict) and all(isinstance(v, torch.Tensor) for v in out.values()):
        return {k: _to_numpy(v) for k, v in out.items()}
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"head returned {type(out).__name__}, expected a tensor or a dict of them")
    if out.dtype == torch.bfloat16:
        out = out.float()
    return out.detach().cpu().numpy()


def last_valid(mask: Any) -> Any:
    """Index of each row's last valid position (mask != 0); 0 for a row with none."""
    import torch

    m = torch.as_tensor(mask) != 0
    idx = torch.arange(m.shape[1], device=m.device).expand_as(m)
    return torch.where(m, idx, torch.zeros_like(idx)).amax(1)


class HeadModel(StageBase):
    """Runs the head on a batch of inputs and emits the intermediate features."""

    stage = "head"

    def __init__(
        self, factory: ModelFactory, replica: int = 0, use_gpu: bool = False, threads: int = 1
    ) -> None:
        super().__init__(replica, threads)
        import torch  # noqa: F401  (loaded before its pools are sized)

        limit_threads(self.threads)
        head, _ = factory()
        self.device = _device(use_gpu)
        self.model = head.to(self.device).eval()

    def process(self, batch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``{"ids","x","labels","t_src"}`` -> ``(meta, {"ids","feat","labels","t_src"})``."""
        import torch

        start = self._begin()
        x = _to_device(batch["x"], self.device)
        with torch.inference_mode():
            feat = _to_numpy(self.model(**x) if isinstance(x, dict) else self.model(x))
        out = {k: batch[k] for k in ("ids", "labels", "t_src")}
        out["feat"] = feat
        n = len(batch["ids"])
        return self._meta(start, n, nbytes(batch["x"]), nbytes(feat)), out


def top_classes(logits: Any, k: int) -> dict[str, np.ndarray]:
    """The ``k`` most likely classes of each row of ``logits`` ``(n, classes)``, best first, with
    their softmax probabilities: ``top_k`` int64 and ``scores`` float32, ``(n, min(k, classes))``."""
    import torch

    probs = torch.softmax(logits.float(), dim=-1)
    scores, idx = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return {"top_k": idx.cpu().numpy().astype(np.int64), "scores": scores.cpu().numpy()}


class TailModel(StageBase):
    """Runs the tail on decoded features and emits top-1 predictions (and, for text models, what the
    sink's fidelity checks need: see the module docstring).

    ``kind`` is the model's (``vision``, ``custom``, ``encoder``, ``decoder``); ``reference_samples``
    is ``fidelity.reference_samples``: a decoder LM returns full logits for those ids only."""

    stage = "tail"

    def __init__(
        self,
        factory: ModelFactory,
        replica: int = 0,
        use_gpu: bool = False,
        threads: int = 1,
        *,
        kind: str = "vision",
        reference_samples: int = 0,
        top_k: int = 0,
    ) -> None:
        super().__init__(replica, threads)
        import torch  # noqa: F401  (loaded before its pools are sized)

        limit_threads(self.threads)
        _, tail = factory()
        self.device = _device(use_gpu)
        self.model = tail.to(self.device).eval()
        self.kind = kind
        self.reference_samples = reference_samples
        self.top_k = top_k

    def process(self, batch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``{"ids","feat","labels","t_src"}`` -> ``(meta, {"ids","preds","labels","t_src", ...})``:
        encoders add ``embedding`` (mean over valid tokens, ``(n, H)``) and have no ``preds``; decoder
        LMs predict the token after each sample's last valid one and add ``valid_logits`` (a list:
        ``(tokens, V)`` per sample with id below ``reference_samples``, else None). With ``top_k``,
        a classifier adds ``top_k`` and ``scores`` (see :func:`top_classes`).

        A batch can arrive empty when the decoder rejected all its frames."""
        import torch

        start = self._begin()
        out = {k: batch[k] for k in ("ids", "labels", "t_src")}
        out["preds"] = np.zeros(0, dtype=np.int64)
        if len(batch["ids"]):
            with torch.inference_mode():
                y = self.model(_to_device(batch["feat"], self.device))
                if isinstance(batch["feat"], dict):
                    out.update(self._text(batch["ids"], batch["feat"]["attention_mask"], y))
                else:
                    preds = y.argmax(-1).cpu().numpy().astype(np.int64)
                    out["preds"] = preds[..., -1] if preds.ndim > 1 else preds
                    if self.top_k and y.ndim == 2:
                        out.update(top_classes(y, self.top_k))
        n = len(batch["ids"])
        sent = [out["preds"], out.get("embedding"), *(out.get("valid_logits") or [])]
        size = sum(nbytes(a) for a in sent if a is not None)
        return self._meta(start, n, nbytes(batch["feat"]), size), out

    def _text(self, ids: np.ndarray, mask: np.ndarray, y: Any) -> dict[str, Any]:
        """The sink's share of a text model's output ``y`` (``(n, T, H)`` states or logits)."""
        import torch

        from pipeline.evaluation.fidelity import mean_pool

        m = torch.as_tensor(mask, device=y.device)
        if self.kind == "encoder":
            emb = mean_pool(y, m).float().cpu().numpy()
            return {"preds": None, "embedding": emb}
        rows = torch.arange(len(ids), device=y.device)
        preds = y[rows, last_valid(m)].argmax(-1).cpu().numpy().astype(np.int64)
        checked = [
            y[i][m[i] != 0].float().cpu().numpy() if int(i_d) < self.reference_samples else None
            for i, i_d in enumerate(ids)
        ]
        return {"preds": preds, "valid_logits": checked}
