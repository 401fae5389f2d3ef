"""Captions and prompts -> token ids with the checkpoint's own tokenizer.json (the `tokenizers` library).

Special tokens written in a caption are encoded as plain text: no caption can insert a placeholder or a
boundary token into the sequence the encoder builds. No special token is added either: the encoder
places every special token itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer


class OmniTokenizer:
    """Captions -> (ids int64 (B, L), mask bool (B, L)), right-padded with `pad_id`, L <= max_len."""

    def __init__(self, tokenizer: Tokenizer, max_len: int, pad_id: int):
        self.tokenizer = tokenizer
        self.tokenizer.encode_special_tokens = True
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_len = max_len
        self.pad_id = pad_id

    @classmethod
    def load(cls, path: str | Path, max_len: int, pad_id: int) -> "OmniTokenizer":
        return cls(Tokenizer.from_file(str(path)), max_len, pad_id)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """The ids of `text` (a prompt), not cut to max_len."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids if text else []

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [e.ids[: self.max_len] for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        width = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return ids, mask
