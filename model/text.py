"""The text tokeniser: a WordPiece vocabulary built from the training captions, run by `tokenizers`.

The vocabulary is every character seen (alone and as a "##" continuation, so an unseen word is
spelled out rather than lost to [UNK]) plus the whole words by descending frequency, ties broken
alphabetically. It is built here rather than by the library's trainer because that trainer's output
varies between runs, and a resumed run must rebuild exactly the same ids.

Nothing is downloaded; the tokenizer.json is saved with the model and loaded with it.
Id 0 is [PAD]; the encoder masks pad positions out of attention and pooling.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

PAD, UNK = "[PAD]", "[UNK]"


class TextTokenizer:
    """Captions -> (ids LongTensor (B, L), mask BoolTensor (B, L)), L = longest in batch, <= max_len."""

    def __init__(self, tokenizer: Tokenizer, max_len: int):
        if tokenizer.token_to_id(PAD) != 0:
            raise ValueError(f"tokenizer must map {PAD} to id 0, got {tokenizer.token_to_id(PAD)}")
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.tokenizer.enable_truncation(max_len)
        self.tokenizer.enable_padding(pad_id=0, pad_token=PAD)

    @classmethod
    def train(cls, captions: Iterable[str], vocab_size: int, max_len: int) -> "TextTokenizer":
        normalizer = normalizers.BertNormalizer(lowercase=True)
        pre = pre_tokenizers.BertPreTokenizer()
        counts: Counter[str] = Counter()
        for caption in captions:
            counts.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(caption)))
        chars = sorted({c for w in counts for c in w})
        pieces = [PAD, UNK] + chars + [f"##{c}" for c in chars]
        if len(pieces) > vocab_size:
            raise ValueError(f"vocab_size={vocab_size} is too small for the {len(pieces)} characters and specials seen")
        words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in pieces]
        vocab = {tok: i for i, tok in enumerate(pieces + words[: vocab_size - len(pieces)])}
        tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, max_input_chars_per_word=100))
        tok.normalizer = normalizer
        tok.pre_tokenizer = pre
        tok.decoder = decoders.WordPiece()
        return cls(tok, max_len)

    @classmethod
    def load(cls, path: str | Path, max_len: int) -> "TextTokenizer":
        return cls(Tokenizer.from_file(str(path)), max_len)

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    def to_json(self) -> str:
        """The tokenizer as the JSON text save() writes (to hand it to another process)."""
        return self.tokenizer.to_str()

    @classmethod
    def from_json(cls, text: str, max_len: int) -> "TextTokenizer":
        return cls(Tokenizer.from_str(text), max_len)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        # one caption (a served query): encode, which skips the batch's thread pool, busy under concurrent requests
        encoded = [self.tokenizer.encode(texts[0])] if len(texts) == 1 else self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encoded], dtype=torch.long)  # (B, L)
        mask = torch.tensor([e.attention_mask for e in encoded], dtype=torch.bool)  # (B, L)
        return ids, mask
