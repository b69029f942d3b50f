"""Task-fidelity metrics comparing a compressed split model with the uncompressed one.

All functions take torch tensors and return plain floats so rows serialize to JSON.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (0..1) of ``logits`` (N, K) against integer ``labels`` (N,)."""
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits has {logits.shape[0]} rows but labels has {labels.shape[0]}")
    return float((logits.argmax(-1) == labels).float().mean())


def _flat(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(..., K) -> (M, K), keeping only positions where ``mask`` is set (if given)."""
    if mask is not None:
        return x[mask.bool()]
    return x.reshape(-1, x.shape[-1])


def agreement(ref: torch.Tensor, test: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Fraction of positions where the arg-max of ``test`` equals that of ``ref``."""
    r, t = _flat(ref, mask), _flat(test, mask)
    return float((r.argmax(-1) == t.argmax(-1)).float().mean())


def kl_divergence(ref: torch.Tensor, test: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean KL(softmax(ref) || softmax(test)) in nats over positions (rows of logits)."""
    r, t = _flat(ref, mask).double(), _flat(test, mask).double()
    lr, lt = F.log_softmax(r, -1), F.log_softmax(t, -1)
    return float((lr.exp() * (lr - lt)).sum(-1).mean().clamp_min(0.0))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings: mean of token states over real tokens (sentence-transformers style)."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


def cosine(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Mean cosine similarity between matching rows of ``ref`` and ``test`` (N, D)."""
    return float(cosine_per_sample(ref, test).mean())


def _rankdata(x: torch.Tensor) -> torch.Tensor:
    return x.argsort(-1).argsort(-1).double()


def retrieval_agreement(ref: torch.Tensor, test: torch.Tensor) -> tuple[float, float]:
    """Retrieval over the set itself (each embedding queries all others by cosine).

    Returns ``(top1_agreement, spearman)``: the fraction of queries whose nearest neighbour
    is unchanged, and the mean Spearman correlation of the full rankings.
    """
    n = ref.shape[0]
    if n < 3:
        raise ValueError(f"retrieval agreement needs >= 3 embeddings, got {n}")
    eye = torch.eye(n, dtype=torch.bool)

    def sims(e: torch.Tensor) -> torch.Tensor:
        e = F.normalize(e.double(), dim=-1)
        return (e @ e.T).masked_fill(eye, -2.0)

    sr, st = sims(ref), sims(test)
    nn_agree = float((sr.argmax(-1) == st.argmax(-1)).double().mean())
    rr = _rankdata(sr[~eye].view(n, n - 1))
    rt = _rankdata(st[~eye].view(n, n - 1))
    rr = rr - rr.mean(-1, keepdim=True)
    rt = rt - rt.mean(-1, keepdim=True)
    rho = (rr * rt).sum(-1) / (rr.norm(dim=-1) * rt.norm(dim=-1)).clamp_min(1e-12)
    return nn_agree, float(rho.mean())


def perplexity(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> float:
    """Perplexity of next-token prediction: position t predicts token t+1 (real tokens only)."""
    lp = F.log_softmax(logits[:, :-1].double(), -1)
    target = input_ids[:, 1:]
    valid = (attention_mask[:, 1:] * attention_mask[:, :-1]).bool()
    nll = -lp.gather(-1, target.unsqueeze(-1)).squeeze(-1)[valid]
    if nll.numel() == 0:
        raise ValueError("perplexity needs at least two real tokens in some sequence")
    return float(math.exp(float(nll.mean())))


def cosine_per_sample(ref: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each row of ``test`` with the same row of ``ref`` (N, D) -> (N,)."""
    return F.cosine_similarity(ref.double(), test.double(), dim=-1)


def token_fidelity(
    ref: torch.Tensor, test: torch.Tensor, input_ids: torch.Tensor
) -> dict[str, float | int]:
    """One sequence's next-token fidelity: ``ref`` and ``test`` are its logits at its valid positions
    (L, V), ``input_ids`` its L tokens. ``positions`` (L) and ``agree`` (positions whose arg-max
    matches), ``transitions`` (L - 1 next tokens known) and ``loglik_delta``: the sequence's
    log-likelihood of its own tokens under ``test`` minus under ``ref``, in nats (summed)."""
    if ref.shape != test.shape or ref.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"logits {tuple(ref.shape)} / {tuple(test.shape)} for {input_ids.shape[0]} tokens"
        )
    agree = int((ref.argmax(-1) == test.argmax(-1)).sum())
    target = input_ids[1:].long().unsqueeze(-1)
    lr = F.log_softmax(ref[:-1].double(), -1).gather(-1, target)
    lt = F.log_softmax(test[:-1].double(), -1).gather(-1, target)
    return {
        "positions": int(ref.shape[0]),
        "agree": agree,
        "transitions": int(target.shape[0]),
        "loglik_delta": float((lt - lr).sum()),
    }
