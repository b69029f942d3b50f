"""HeadModel and TailModel actors: the two halves of the split network (torch, CPU or GPU)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from actors.base import StageBase, limit_threads

ModelFactory = Callable[[], tuple[Any, Any]]


def _device(use_gpu: bool) -> str:
    import torch

    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


def _tensor(x: np.ndarray):
    """A torch view of ``x`` (copied when read-only, as arrays from Ray's object store are)."""
    import torch

    return torch.from_numpy(x if x.flags.writeable else x.copy())


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
        with torch.inference_mode():
            feat = self.model(_tensor(batch["x"]).to(self.device))
        if not isinstance(feat, torch.Tensor):
            raise TypeError(f"head returned {type(feat).__name__}, expected a tensor")
        if feat.dtype == torch.bfloat16:
            feat = feat.float()
        feat_np = feat.detach().cpu().numpy()
        out = {k: batch[k] for k in ("ids", "labels", "t_src")}
        out["feat"] = feat_np
        n = len(batch["ids"])
        return self._meta(start, n, int(batch["x"].nbytes), int(feat_np.nbytes)), out


class TailModel(StageBase):
    """Runs the tail on decoded features and emits top-1 predictions."""

    stage = "tail"

    def __init__(
        self, factory: ModelFactory, replica: int = 0, use_gpu: bool = False, threads: int = 1
    ) -> None:
        super().__init__(replica, threads)
        import torch  # noqa: F401  (loaded before its pools are sized)

        limit_threads(self.threads)
        _, tail = factory()
        self.device = _device(use_gpu)
        self.model = tail.to(self.device).eval()

    def process(self, batch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``{"ids","feat","labels","t_src"}`` -> ``(meta, {"ids","preds","labels","t_src"})``.

        A batch can arrive empty when the decoder rejected all its frames."""
        import torch

        start = self._begin()
        preds = np.zeros(0, dtype=np.int64)
        if len(batch["ids"]):
            with torch.inference_mode():
                logits = self.model(_tensor(batch["feat"]).to(self.device))
            preds = logits.argmax(-1).cpu().numpy().astype(np.int64)
            if preds.ndim > 1:  # sequence models: keep the last position's prediction
                preds = preds[..., -1]
        out = {k: batch[k] for k in ("ids", "labels", "t_src")}
        out["preds"] = preds
        n = len(batch["ids"])
        return self._meta(start, n, int(batch["feat"].nbytes), int(preds.nbytes)), out
