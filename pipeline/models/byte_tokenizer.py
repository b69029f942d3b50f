"""A byte-level tokenizer for models that ship without one (the random ``llama-tiny``).

Text is UTF-8; byte ``b`` is token ``OFFSET + b``, below which sit the Llama defaults ``<unk>`` 0,
``<s>`` 1 and ``</s>`` 2. It has the two calls of a Hugging Face tokenizer that generation uses:
``encode(text, add_special_tokens=True)`` and ``decode(ids, skip_special_tokens=False)``. A token that
is no byte (a random model may emit any id of its vocabulary) decodes as ``<id>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

OFFSET = 3


class ByteTokenizer:
    """UTF-8 bytes as token ids ``OFFSET..OFFSET+255``; needs a vocabulary of at least 259."""

    unk_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < OFFSET + 256:
            raise ValueError(
                f"a byte tokenizer needs a vocabulary of at least {OFFSET + 256}, got {vocab_size}"
            )
        self.vocab_size = int(vocab_size)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [OFFSET + b for b in text.encode("utf-8")]
        return [self.bos_token_id, *ids] if add_special_tokens else ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        parts: list[str] = []
        run = bytearray()
        for i in map(int, ids):
            if OFFSET <= i < OFFSET + 256:
                run.append(i - OFFSET)
                continue
            parts.append(run.decode("utf-8", errors="replace"))
            run.clear()
            special = i in (self.unk_token_id, self.bos_token_id, self.eos_token_id)
            if not (special and skip_special_tokens):
                parts.append(f"<{i}>")
        parts.append(run.decode("utf-8", errors="replace"))
        return "".join(parts)


def tokenizer_for(loaded: Any) -> Any:
    """The model's own tokenizer, or a :class:`ByteTokenizer` over its vocabulary when it has none."""
    if loaded.tokenizer is not None:
        return loaded.tokenizer
    return ByteTokenizer(int(loaded.raw.config.vocab_size))
