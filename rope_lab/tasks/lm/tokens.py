"""Text -> token ids for the LM task: UTF-8 bytes (the default: vocabulary 256, no download) or a Hugging Face
tokenizer from a local directory (``task.tokenizer=<dir>``, loaded with ``AutoTokenizer``), e.g. the tokenizer saved
next to a pretrained checkpoint (``backbone=hf_causal_lm``).

Documents are encoded one by one (no special tokens) and joined with the encoded separator, so document boundaries
are exact token offsets for packing; with bytes this is exactly the bytes of the joined text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VOCAB_BYTES = 256


class ByteCodec:
    """UTF-8 bytes: every character count is a token count."""

    vocab_size = VOCAB_BYTES
    source = None  # what TaskSpec.extra["tokenizer"] reports: None = byte-level

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8", errors="replace"), dtype=np.uint8)

    def stream(self, texts: list[str], sep: str) -> tuple[np.ndarray, np.ndarray]:
        """(the joined texts' tokens, the offset where each document starts)."""
        starts = np.cumsum([0] + [len(self.encode(t + sep)) for t in texts[:-1]])
        return self.encode(sep.join(texts)), starts


class HFTokenizerCodec:
    """A transformers tokenizer (fast or slow) saved in a local directory."""

    def __init__(self, path: str) -> None:
        from rope_lab.extras import require

        transformers = require("transformers", "task.tokenizer")
        if not Path(path).expanduser().is_dir():
            raise FileNotFoundError(f"task.tokenizer={path!r} is not a directory (a tokenizer saved with "
                                    f"save_pretrained, e.g. the checkpoint dir); null uses UTF-8 bytes")
        self.source = path
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(Path(path).expanduser()))
        self.vocab_size = len(self.tokenizer)  # added tokens included

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._ids([text])[0], dtype=np.int64)

    def stream(self, texts: list[str], sep: str) -> tuple[np.ndarray, np.ndarray]:
        sep_ids = self._ids([sep])[0]
        pieces = [ids + sep_ids for ids in self._ids(texts[:-1])] + self._ids(texts[-1:])
        starts = np.cumsum([0] + [len(p) for p in pieces[:-1]])
        return np.concatenate([np.asarray(p, dtype=np.int64) for p in pieces]), starts


def build_codec(tokenizer: str | None) -> ByteCodec | HFTokenizerCodec:
    return ByteCodec() if tokenizer is None else HFTokenizerCodec(tokenizer)
