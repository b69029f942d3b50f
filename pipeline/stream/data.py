"""Sample sources: deterministic, indexable by sample id, so any stage can rebuild a sample.

``digits``: the held-out split of scikit-learn's digits (labels known, accuracy is real).
``synthetic``: seeded Gaussian tensors of a fixed shape (no labels; fidelity = agreement).
``text``: sentences or prompts (``data.path``: one per line, or JSONL with a ``text`` field; else
:data:`DEFAULT_TEXTS`), tokenized where the source runs (the edge) with the model's own tokenizer and
padded to the longest sequence of each batch.
Sample id ``i`` maps to item ``i % len(dataset)``, so streams can be longer than the set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_TEXTS = (
    "Rain again.",
    "The ferry leaves at noon.",
    "She tuned the old piano before the concert started.",
    "Two hikers reached the summit just as the clouds lifted and the valley below came into view.",
    "Bread rises faster in a warm kitchen.",
    "Where did I leave my keys?",
    "The committee postponed its decision until the auditors had checked every invoice from the "
    "last three years, line by line.",
    "A fox crossed the snowy field at dawn.",
    "Prices for fresh vegetables climbed sharply after the late frost damaged most of the harvest.",
    "He fixed the bicycle chain with a borrowed tool.",
    "Quiet, please.",
    "The museum's new wing shows sculptures made from recycled ship parts.",
    "Our train was delayed by a signal failure outside the city.",
    "Children built a sandcastle that the evening tide slowly carried away.",
    "The software update changed how the camera stores its photographs, so older viewers can no "
    "longer open them without a converter.",
    "Lanterns lit the narrow street.",
    "Bees visit the lavender every morning.",
    "After the storm the power stayed off for two days in the northern districts.",
    "I think the soup needs more salt.",
    "The astronomer measured the faint star's brightness on twelve nights in a row.",
    "Close the window.",
    "A small bakery on the corner sells the best cinnamon rolls in town.",
    "The river flooded the meadow, and by morning ducks were swimming where cows had grazed the "
    "day before.",
    "Her essay argued that public libraries are the most democratic buildings a city has.",
)
"""The text source's built-in sentences when ``data.path`` is not given: short and long ones, so
every batch has padding to skip."""

TEXT_KINDS = ("encoder", "decoder")
"""Model kinds (``pipeline.models.LoadedModel.kind``) whose stream carries text."""

BYTE_TOKENIZER = "bytes"
"""The ``TextSpec.tokenizer`` of a model that has no tokenizer of its own (``llama-tiny``'s random
weights): ``pipeline.models.byte_tokenizer``, a BOS id followed by the text's UTF-8 bytes."""


@dataclass(frozen=True)
class TextSpec:
    """A text source: its sentences (by value, so no node needs the file), the tokenizer to load where
    the source runs (a local Hugging Face directory, or :data:`BYTE_TOKENIZER`), the longest sequence
    the model takes, and its vocabulary size (for the byte tokenizer)."""

    texts: tuple[str, ...]
    tokenizer: str = BYTE_TOKENIZER
    max_tokens: int = 512
    vocab_size: int = 1000
    origin: str = "built-in"


UNBOUNDED = 1 << 40
"""The id range of an endless source's edge: edge ``e`` numbers its samples from ``e * UNBOUNDED``."""


@dataclass(frozen=True)
class SourceSpec:
    """What a source produces; small and picklable so actors can rebuild the source.

    ``kind`` is a built-in source (``digits``, ``synthetic``, ``text``: sample ``i`` is item
    ``i % size``), a reader of the user's files (``images``, ``video``, ``table``: ``reader`` is its
    :mod:`pipeline.stream.sources` spec, sample ``i`` is item ``i``, or frame ``i - first id`` of a
    looping video), or ``iterable``: items handed over by the driver with each batch."""

    kind: str
    shape: tuple[int, ...] = (3, 32, 32)
    seed: int = 0
    text: TextSpec | None = None  # text, or a table of text: how to tokenize
    reader: Any = None  # images, video, table: the reader's spec
    transform: Any = None  # images, video, table, iterable: a sources.Transform, or None

    @property
    def user_data(self) -> bool:
        """True for the user's data (files or an iterable), whose samples carry their own keys."""
        return self.reader is not None or self.kind == "iterable"


@dataclass
class Samples:
    """One batch as a source loads it: the inputs of the good samples (positions ``good`` of the
    request), their labels, every sample's key (None: its id), and the rejected positions' reasons."""

    x: Any
    labels: np.ndarray | None
    good: np.ndarray
    keys: list[str] | None = None
    rejected: dict[int, str] = field(default_factory=dict)


def edge_ranges(samples: int | None, edges: int, size: int | None) -> list[tuple[int, int]]:
    """``(first id, samples)`` of each edge. A built-in source (``size`` None) gives every edge its
    own ``samples`` ids, or :data:`UNBOUNDED` of them. The user's finite data (``size`` items) is
    split into contiguous shards of its first ``samples`` items (all without ``samples``); an endless
    one (a looping video: ``size`` None with ``samples`` None) gives each edge its own range."""
    if size is None:
        n = UNBOUNDED if samples is None else samples
        return [(e * UNBOUNDED if samples is None else e * n, n) for e in range(edges)]
    total = size if samples is None else min(samples, size)
    cuts = [total * e // edges for e in range(edges + 1)]
    return [(cuts[e], cuts[e + 1] - cuts[e]) for e in range(edges)]


def load_texts(path: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """The sentences of ``data.path``: JSONL (a ``.jsonl`` file, or one whose first line is a JSON
    object) takes each line's ``text`` field, any other file each non-blank line; None gives
    :data:`DEFAULT_TEXTS`. Raises ``ValueError`` naming the key, the file and the line."""
    if path is None:
        return DEFAULT_TEXTS
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"data.path: cannot read {str(p)!r}: {exc}") from None
    numbered = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
    jsonl = p.suffix == ".jsonl" or (bool(numbered) and numbered[0][1].startswith("{"))
    texts = []
    for no, line in numbered:
        if not jsonl:
            texts.append(line)
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"data.path: {p}:{no}: not a JSON object: {exc}") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise ValueError(f"data.path: {p}:{no}: a JSONL line needs a string field 'text'")
        if item["text"].strip():
            texts.append(item["text"])
    if not texts:
        raise ValueError(f"data.path: {str(p)!r} holds no sentences")
    return tuple(texts)


def load_tokenizer(spec: TextSpec) -> Any:
    """The tokenizer named by ``spec``, offline: a Hugging Face tokenizer padding on the right (so a
    token's position does not depend on its batch), or the byte tokenizer. Raises ``ValueError``."""
    if spec.tokenizer == BYTE_TOKENIZER:
        from pipeline.models.byte_tokenizer import ByteTokenizer

        return ByteTokenizer(spec.vocab_size)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread, like every stage's pools
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec.tokenizer, local_files_only=True)
    tok.padding_side = "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if tok.pad_token is None:
        raise ValueError(f"the tokenizer of {spec.tokenizer!r} has no pad, eos or unk token")
    return tok


def tokenize(tok: Any, texts: Sequence[str], max_tokens: int) -> dict[str, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64, ``(n, T)``) of ``texts``, truncated to
    ``max_tokens`` and right-padded to the longest of them (not to a global maximum)."""
    if not callable(tok):  # the byte tokenizer: padded with id 0 (masked out)
        seqs = [tok.encode(t)[:max_tokens] for t in texts]
        width = max((len(s) for s in seqs), default=0)
        ids = np.zeros((len(seqs), width), dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)], mask[i, : len(s)] = s, 1
        return {"input_ids": ids, "attention_mask": mask}
    enc = tok(
        list(texts), padding="longest", truncation=True, max_length=max_tokens, return_tensors="np"
    )
    return {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}


def nbytes(x: Any) -> int:
    """Bytes of an array, or of every array in a dict of them (a text batch, a transformer's
    features)."""
    if isinstance(x, dict):
        return sum(int(v.nbytes) for v in x.values())
    return int(x.nbytes)


class SampleSource:
    """Indexable samples: ``get(ids) -> (x, labels int64 [n] or None)``; ``x`` is float32
    ``[n, *shape]``, or for text a dict of ``input_ids`` and ``attention_mask`` (see :func:`tokenize`)."""

    def __init__(self, spec: SourceSpec, threads: int = 1) -> None:
        self.spec = spec
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None
        self._tok: Any = None
        self._reader: Any = None
        if spec.text is not None and spec.kind != "text":  # a table of text
            self._tok = load_tokenizer(spec.text)
        if spec.reader is not None:
            from pipeline.stream.sources import open_reader

            self._reader = open_reader(spec.reader, threads)
        elif spec.kind == "iterable":
            pass
        elif spec.kind == "text":
            if spec.text is None or not spec.text.texts:
                raise ValueError("data.source: a text source needs sentences")
            self._tok = load_tokenizer(spec.text)
        elif spec.kind == "digits":
            from pipeline.models.train import digits_data

            _, _, x_te, y_te = digits_data()
            self._x = x_te.numpy().astype(np.float32)
            self._y = y_te.numpy().astype(np.int64)
        elif spec.kind != "synthetic":
            raise ValueError(f"data.source: unknown source {spec.kind!r}")

    @property
    def has_labels(self) -> bool:
        """True when the source knows the ground-truth label of each sample."""
        if self._reader is not None:
            return bool(self._reader.has_labels)
        return self._y is not None

    def keys(self, ids: np.ndarray) -> list[str] | None:
        """The keys of samples ``ids`` without loading them where the source knows them (a file
        listing, a video's frame times); a table keyed by a column reads those rows. None: the
        samples are keyed by their ids."""
        if self._reader is None:
            return None
        index = np.asarray(ids, dtype=np.int64) % UNBOUNDED
        spec = self.spec.reader
        if hasattr(spec, "key"):
            return [spec.key(int(i)) for i in index]
        if isinstance(getattr(spec, "keys", None), tuple):
            return [spec.keys[int(i)] if 0 <= i < len(spec.keys) else str(i) for i in index]
        if getattr(spec, "key_column", None) is None:
            return [str(int(i)) for i in index]
        return list(self._reader.read(index).keys)

    def load(self, index: np.ndarray, items: list[Any] | None = None) -> Samples:
        """The samples of ids ``index`` (an iterable source: ``items``, handed over by the driver),
        with their keys and the reasons of those that failed to load. A built-in source's samples all
        load and are keyed by their ids (``keys`` None)."""
        if self._reader is None and items is None:
            x, labels = self.get(index)
            return Samples(x, labels, np.arange(len(index)))
        if items is not None:
            from pipeline.stream.sources import convert_items

            loaded = convert_items(
                list(items), self.spec.transform, int(index[0]) if len(index) else 0
            )
        else:  # an endless source's edge e numbers its samples from e * UNBOUNDED
            loaded = self._reader.read(np.asarray(index, dtype=np.int64) % UNBOUNDED)
        good = np.array([j for j in range(len(loaded.keys)) if j not in loaded.rejected], np.int64)
        x: Any = loaded.x
        if isinstance(x, list):  # text items: tokenized here, on the edge
            if self._tok is None:
                raise ValueError("data.column: text needs a text model (minilm, llama-tiny, ...)")
            assert self.spec.text is not None
            x = tokenize(self._tok, x, self.spec.text.max_tokens)
        return Samples(x, loaded.labels, good, list(loaded.keys), dict(loaded.rejected))

    @property
    def size(self) -> int | None:
        """Number of distinct samples (None for an unbounded synthetic source)."""
        if self._reader is not None:
            return self._reader.size
        if self.spec.text is not None:
            return len(self.spec.text.texts)
        return None if self._x is None else len(self._x)

    def get(self, ids: Sequence[int] | np.ndarray) -> tuple[Any, np.ndarray | None]:
        """Inputs and labels (or None) for sample ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._reader is not None:
            got = self.load(ids)
            return got.x, got.labels
        if self._tok is not None:
            t = self.spec.text
            assert t is not None
            return tokenize(self._tok, [t.texts[i % len(t.texts)] for i in ids], t.max_tokens), None
        if self._x is not None and self._y is not None:
            idx = ids % len(self._x)
            return self._x[idx], self._y[idx]
        out = np.empty((len(ids), *self.spec.shape), dtype=np.float32)
        for j, i in enumerate(ids):
            rng = np.random.default_rng([self.spec.seed, int(i)])
            out[j] = rng.standard_normal(self.spec.shape, dtype=np.float32)
        return out, None


def resolve_source(
    source: str, model_name: str, shape: list[int] | None, input_size: int | None, seed: int
) -> SourceSpec:
    """Pick the source for a config: ``auto`` = digits for digits models, synthetic otherwise."""
    kind = source
    if kind == "auto":
        kind = "digits" if model_name.startswith("digits") else "synthetic"
    if shape is None:
        side = input_size or 32
        shape = [1, side, side] if kind == "digits" else [3, side, side]
    if any(int(s) <= 0 for s in shape):
        raise ValueError(f"data.shape: dimensions must be positive, got {shape}")
    return SourceSpec(kind=kind, shape=tuple(int(s) for s in shape), seed=seed)


def resolve_text_source(
    source: str, path: str | None, shape: list[int] | None, seed: int, text: dict[str, Any]
) -> SourceSpec:
    """The source of a text model: ``auto`` or ``text``, sentences from ``path`` (or the built-in
    ones); ``text`` holds the :class:`TextSpec` fields the model decides (tokenizer, max_tokens,
    vocab_size). Raises ``ValueError`` naming the key at fault."""
    if source not in ("auto", "text"):
        raise ValueError(f"data.source: a text model reads text (auto or text), not {source!r}")
    if shape is not None:
        raise ValueError("data.shape: text inputs have no fixed shape (each batch is padded to its "
                         "longest sequence)")  # fmt: skip
    origin = "built-in" if path is None else str(path)
    spec = TextSpec(load_texts(path), origin=origin, **text)
    try:
        load_tokenizer(spec)
    except (OSError, ValueError) as exc:
        raise ValueError(f"model.name: the model's tokenizer does not load: {exc}") from None
    return SourceSpec("text", (), seed, spec)


def arrival_offsets(
    n: int,
    rate_sps: float,
    pattern: str = "steady",
    period_s: float = 2.0,
    duty: float = 0.5,
    seed: int = 0,
    steps: Sequence[tuple[float, float]] | None = None,
) -> np.ndarray:
    """When each of ``n`` samples arrives, in seconds after the first, at a mean of ``rate_sps``.

    ``steady``: evenly spaced. ``poisson``: exponential gaps (seeded). ``bursty``: a camera that
    fires in bursts, one per ``period_s``, each ``duty`` of the period long, at ``rate_sps / duty``
    within the burst and silent in between (the same mean rate). ``steps``: evenly spaced at
    ``factor x rate_sps`` from each step's start on (``steps`` as ``[(start_s, factor), ...]``)."""
    k = np.arange(n, dtype=np.float64)
    if pattern == "steps":
        if not steps:
            raise ValueError("data.arrival: steps arrivals need data.load_steps")
        starts = np.array([t for t, _ in steps], np.float64)
        rates = rate_sps * np.array([f for _, f in steps], np.float64)
        done = np.concatenate([[0.0], np.cumsum(np.diff(starts) * rates[:-1])])  # by each start
        end = starts[-1] + max(0.0, n - done[-1]) / rates[-1] + 1.0  # the last step runs on
        return np.interp(k, np.append(done, done[-1] + (end - starts[-1]) * rates[-1]),
                         np.append(starts, end))  # fmt: skip
    if pattern == "steady":
        return k / rate_sps
    if pattern == "poisson":
        gaps = np.random.default_rng([seed, 7]).exponential(1.0 / rate_sps, size=n)
        gaps[0] = 0.0
        return np.cumsum(gaps)
    if pattern == "bursty":
        per_period = rate_sps * period_s  # samples in one burst
        burst, within = np.divmod(k, per_period)
        return burst * period_s + within / per_period * duty * period_s
    raise ValueError(f"data.arrival: unknown pattern {pattern!r}")
