"""Long-context LM data: random training windows, fixed validation windows per length, passkey.

Tokens are UTF-8 bytes by default (vocabulary 256): no tokenizer download, and every character count is a token
count; ``task.tokenizer=<dir>`` uses a Hugging Face tokenizer instead (rope_lab/tasks/lm/tokens.py).
Training windows are a deterministic function of (seed, sample index), and the loader is resumable, so
``ckpt_path=last`` continues with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rope_lab.tasks.data import ResumableLoader, TaskDataModule, train_samples
from rope_lab.tasks.lm.corpus import is_validation, load_corpus
from rope_lab.tasks.lm.passkey import PasskeyDataset
from rope_lab.tasks.lm.tokens import ByteCodec, HFTokenizerCodec, build_codec

log = logging.getLogger(__name__)
VOCAB_SIZE = 256


@dataclass
class LMDataConfig:
    corpus: str = "python_docs"
    data_dir: str = "${paths.data_dir}"
    data_path: str | None = None
    hf_dataset: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    hf_text_field: str = "text"
    hf_data_files: str | None = None
    tokenizer: str | None = None  # a local HF tokenizer dir (AutoTokenizer); None: UTF-8 bytes
    val_fraction: float = 0.1
    train_length: int = 128
    batch_size: int = 16
    eval_lengths: list[int] = field(default_factory=lambda: [128, 256, 512, 1024])
    eval_windows: int = 16
    eval_batch_tokens: int = 8192
    passkey_lengths: list[int] = field(default_factory=lambda: [128, 512])
    passkey_depths: list[float] = field(default_factory=lambda: [0.1, 0.5, 0.9])
    passkey_samples: int = 8
    passkey_digits: int = 5
    passkey_train_fraction: float = 0.0
    # weight of the key digits in a training passkey sample's loss (1 = plain LM loss; > 1: answer-weighted, the
    # positive control of the base-bound study: retrieval is learnt in a CPU budget)
    passkey_answer_weight: float = 1.0
    position_offset: int = 0  # add to every position (large-offset / bf16 studies)
    packing: bool = False  # windows span several documents; each token carries its document id (Positions.segment)
    anchor_token: int | None = None  # packing only: prepend this byte as a shared anchor (AnchorAttention, segment 0)
    num_workers: int = 0
    # RULER-style tasks (rope_lab.longctx.ruler_tasks), greedy decoding, run by eval.py after validation; [] = none
    ruler_tasks: list[str] = field(default_factory=list)
    ruler_lengths: list[int] = field(default_factory=list)  # [] = eval_lengths
    ruler_samples: int = 4  # per (task, length, depth); depths = passkey_depths
    ruler_threshold: float = 0.856  # effective length: the largest length scoring above it (RULER's Llama-2-7B at 4K)


def encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8", errors="replace"), dtype=np.uint8)


def decode(tokens) -> str:
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")


class Packer:
    """Packed windows: a window of the document stream keeps each token's document id (1, 2, ... within the
    window); with ``anchor_token`` the window starts with the shared anchor (segment 0, AnchorAttention)."""

    def __init__(self, stream: np.ndarray, doc_starts: np.ndarray, anchor_token: int | None,
                 vocab_size: int = VOCAB_SIZE) -> None:
        if anchor_token is not None:
            if not 0 <= anchor_token < vocab_size:
                raise ValueError(f"task.anchor_token must be a token id in [0, {vocab_size}); got {anchor_token}")
            if (stream == anchor_token).any():
                raise ValueError(f"task.anchor_token={anchor_token} occurs in the corpus; the anchor must be unique "
                                 f"(AnchorContext asserts the same). Choose a byte absent from the text, e.g. 0.")
        self.stream, self.doc_starts, self.anchor = stream, doc_starts, anchor_token
        self.n_anchor = 0 if anchor_token is None else 1

    def window(self, start: int, total: int) -> dict:
        n = total - self.n_anchor
        doc = np.searchsorted(self.doc_starts, np.arange(start, start + n), side="right")
        return self._with_anchor(self.stream[start : start + n].astype(np.int64), doc - doc[0] + 1)

    def single(self, item: dict) -> dict:
        """A one-document sample (passkey) in packed form."""
        tokens = item["tokens"].numpy()
        out = self._with_anchor(tokens, np.ones(len(tokens), dtype=np.int64))
        return {**item, **{k: out[k] for k in ("tokens", "segment")},
                **({"answer_mask": torch.cat([torch.zeros(self.n_anchor, dtype=torch.bool), item["answer_mask"]])}
                   if "answer_mask" in item else {})}

    def _with_anchor(self, tokens: np.ndarray, segment: np.ndarray) -> dict:
        if self.anchor is not None:
            tokens, segment = np.concatenate([[self.anchor], tokens]), np.concatenate([[0], segment])
        return {"tokens": torch.from_numpy(tokens.astype(np.int64)), "segment": torch.from_numpy(segment),
                "loss_mask": torch.ones(len(tokens) - 1, dtype=torch.bool)}


class TrainWindows(Dataset):
    """Item i: a random window of length L+1 from the training stream, drawn from a generator seeded by
    (seed, i); with probability ``passkey_fraction`` a passkey sample of the same length instead."""

    def __init__(self, stream: np.ndarray, length: int, size: int, seed: int, passkey: PasskeyDataset | None,
                 passkey_fraction: float, packer: Packer | None = None) -> None:
        if len(stream) <= length + 1:
            raise ValueError(f"training text has {len(stream)} tokens, fewer than train_length+1={length + 1}")
        self.stream, self.length, self.size, self.seed = stream, length, size, seed
        self.passkey, self.passkey_fraction, self.packer = passkey, passkey_fraction, packer

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i])
        if self.passkey is not None and rng.random() < self.passkey_fraction:
            n = self.length + 1 - (self.packer.n_anchor if self.packer else 0)
            item = self.passkey.sample(rng, n, float(rng.random()))
            if self.packer is not None:
                return self.packer.single({"tokens": item["tokens"], "loss_mask": item["loss_mask"]})
            return {"tokens": item["tokens"], "loss_mask": item["loss_mask"], "answer": item["answer_mask"]}
        start = int(rng.integers(0, len(self.stream) - self.length - 1))
        if self.packer is not None:
            return self.packer.window(start, self.length + 1)
        window = torch.from_numpy(self.stream[start : start + self.length + 1].astype(np.int64))
        item = {"tokens": window, "loss_mask": torch.ones(self.length, dtype=torch.bool)}
        if self.passkey is not None and self.packer is None:  # same keys as a passkey item in the same batch
            item["answer"] = torch.zeros(self.length, dtype=torch.bool)
        return item


class EvalWindows(Dataset):
    """``count`` evenly spaced windows of length L+1 from the validation stream (the same on every run)."""

    def __init__(self, stream: np.ndarray, length: int, count: int, packer: Packer | None = None) -> None:
        if len(stream) <= length + 1:
            raise ValueError(f"validation text has {len(stream)} tokens; cannot evaluate length {length}")
        self.stream, self.length, self.packer = stream, length, packer
        self.starts = np.linspace(0, len(stream) - length - 1, count).astype(np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict:
        s = int(self.starts[i])
        if self.packer is not None:
            return self.packer.window(s, self.length + 1)
        window = torch.from_numpy(self.stream[s : s + self.length + 1].astype(np.int64))
        return {"tokens": window, "loss_mask": torch.ones(self.length, dtype=torch.bool)}


class LMDataModule(TaskDataModule):
    def __init__(self, cfg: LMDataConfig, seed: int, total_steps: int,
                 codec: ByteCodec | HFTokenizerCodec | None = None) -> None:
        super().__init__(seed, total_steps)
        self.cfg = cfg
        self.codec = codec if codec is not None else build_codec(cfg.tokenizer)

    def load(self) -> str:
        c = self.cfg
        docs, source = load_corpus(c.corpus, c.data_dir, c.data_path, c.hf_dataset, c.hf_config, c.hf_split,
                                        c.hf_text_field, c.hf_data_files)
        sep = "\n\n"
        val = [d.text for d in docs if is_validation(d.name, c.val_fraction)]
        train = [d.text for d in docs if not is_validation(d.name, c.val_fraction)]
        if not val or not train:
            raise ValueError(f"corpus {c.corpus} has too few documents for a train/validation split ({len(docs)})")
        (self.train_stream, train_starts), (self.val_stream, val_starts) = (self.codec.stream(train, sep),
                                                                              self.codec.stream(val, sep))
        self.train_packer = self.val_packer = None
        if c.packing:
            vocab = self.codec.vocab_size
            self.train_packer = Packer(self.train_stream, train_starts, c.anchor_token, vocab)
            self.val_packer = Packer(self.val_stream, val_starts, c.anchor_token, vocab)
        elif c.anchor_token is not None:
            raise ValueError("task.anchor_token needs task.packing=true (the anchor is shared by packed documents)")
        log.info("corpus %s from %s: %d train / %d val documents, %d / %d tokens", c.corpus, source,
                 len(train), len(val), len(self.train_stream), len(self.val_stream))
        self.val_texts = val  # RULER's essay haystack (generation_metrics)
        self.passkey = PasskeyDataset(self.val_stream, c.passkey_digits, self.codec.encode)
        self.train_passkey = PasskeyDataset(self.train_stream, c.passkey_digits, self.codec.encode)
        return source

    def train_dataloader(self) -> DataLoader:
        c = self.cfg
        size = train_samples(self, c.batch_size)
        ds = TrainWindows(self.train_stream, c.train_length, size, self.seed, self.train_passkey,
                          c.passkey_train_fraction, self.train_packer)
        return ResumableLoader(ds, c.batch_size, c.num_workers)

    def eval_lengths(self) -> list[int]:
        """The perplexity lengths: ``eval_lengths``, plus the training length if missing (``val/ppl`` is read there)."""
        lengths = list(self.cfg.eval_lengths)
        return lengths if self.cfg.train_length in lengths else [*lengths, self.cfg.train_length]

    def val_names(self) -> list[str]:
        names = [f"ppl@{n}" for n in self.eval_lengths()]
        return names + [f"passkey@len={n}/depth={d}" for n in self.cfg.passkey_lengths for d in self.cfg.passkey_depths]

    def val_dataloader(self) -> list[DataLoader]:
        c = self.cfg
        loaders = [DataLoader(EvalWindows(self.val_stream, n, c.eval_windows, self.val_packer), self._eval_batch(n))
                   for n in self.eval_lengths()]
        for n in c.passkey_lengths:
            for d in c.passkey_depths:
                ds = self.passkey.fixed(n + 1, d, c.passkey_samples, seed=self.seed)
                loaders.append(DataLoader(ds, self._eval_batch(n)))
        return loaders

    def _eval_batch(self, length: int) -> int:
        return max(1, min(self.cfg.eval_windows, self.cfg.eval_batch_tokens // length))
