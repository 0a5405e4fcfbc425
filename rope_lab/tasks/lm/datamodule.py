"""Byte-level long-context LM data: random training windows, fixed validation windows per length, passkey.

Tokens are UTF-8 bytes (vocabulary 256): no tokenizer download, and every character count is a token count.
Training windows are a deterministic function of (seed, sample index), and the loader is resumable, so
``ckpt_path=last`` continues with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from rope_lab.tasks.lm.corpus import is_validation, load_corpus
from rope_lab.tasks.lm.passkey import PasskeyDataset

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
    position_offset: int = 0  # add to every position (large-offset / bf16 studies)
    num_workers: int = 0


def encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8", errors="replace"), dtype=np.uint8)


def decode(tokens) -> str:
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")


class TrainWindows(Dataset):
    """Item i: a random window of length L+1 from the training stream, drawn from a generator seeded by
    (seed, i); with probability ``passkey_fraction`` a passkey sample of the same length instead."""

    def __init__(self, stream: np.ndarray, length: int, size: int, seed: int, passkey: PasskeyDataset | None,
                 passkey_fraction: float) -> None:
        if len(stream) <= length + 1:
            raise ValueError(f"training text has {len(stream)} tokens, fewer than train_length+1={length + 1}")
        self.stream, self.length, self.size, self.seed = stream, length, size, seed
        self.passkey, self.passkey_fraction = passkey, passkey_fraction

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i])
        if self.passkey is not None and rng.random() < self.passkey_fraction:
            item = self.passkey.sample(rng, self.length + 1, float(rng.random()))
            return {"tokens": item["tokens"], "loss_mask": item["loss_mask"]}
        start = int(rng.integers(0, len(self.stream) - self.length - 1))
        window = torch.from_numpy(self.stream[start : start + self.length + 1].astype(np.int64))
        return {"tokens": window, "loss_mask": torch.ones(self.length, dtype=torch.bool)}


class EvalWindows(Dataset):
    """``count`` evenly spaced windows of length L+1 from the validation stream (the same on every run)."""

    def __init__(self, stream: np.ndarray, length: int, count: int) -> None:
        if len(stream) <= length + 1:
            raise ValueError(f"validation text has {len(stream)} tokens; cannot evaluate length {length}")
        self.stream, self.length = stream, length
        self.starts = np.linspace(0, len(stream) - length - 1, count).astype(np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict:
        s = int(self.starts[i])
        window = torch.from_numpy(self.stream[s : s + self.length + 1].astype(np.int64))
        return {"tokens": window, "loss_mask": torch.ones(self.length, dtype=torch.bool)}


class ResumableSampler(Sampler[int]):
    """Sequential indices from ``start``; the loader records how many were consumed for checkpoints."""

    def __init__(self, size: int) -> None:
        self.size, self.start = size, 0

    def __iter__(self):
        return iter(range(self.start, self.size))

    def __len__(self) -> int:
        return self.size - self.start


class ResumableLoader(DataLoader):
    """A DataLoader with ``state_dict``/``load_state_dict``; Lightning saves it in checkpoints (fit loop)."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int = 0) -> None:
        self.resumable_sampler = ResumableSampler(len(dataset))
        super().__init__(dataset, batch_size=batch_size, sampler=self.resumable_sampler, num_workers=num_workers,
                         drop_last=True)
        self.consumed = 0

    def __iter__(self):
        self.consumed = self.resumable_sampler.start
        for batch in super().__iter__():
            self.consumed += self.batch_size
            yield batch
        self.resumable_sampler.start = 0  # the next epoch starts from the beginning

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.resumable_sampler.start = int(state["consumed"])


class LMDataModule(L.LightningDataModule):
    def __init__(self, cfg: LMDataConfig, seed: int, total_steps: int) -> None:
        super().__init__()
        self.cfg, self.seed, self.total_steps = cfg, seed, total_steps
        self.source = None

    def setup(self, stage: str | None = None) -> None:
        if self.source is not None:
            return
        c = self.cfg
        docs, self.source = load_corpus(c.corpus, c.data_dir, c.data_path, c.hf_dataset, c.hf_config, c.hf_split,
                                        c.hf_text_field, c.hf_data_files)
        sep = "\n\n"
        val = [d.text for d in docs if is_validation(d.name, c.val_fraction)]
        train = [d.text for d in docs if not is_validation(d.name, c.val_fraction)]
        if not val or not train:
            raise ValueError(f"corpus {c.corpus} has too few documents for a train/validation split ({len(docs)})")
        self.train_stream, self.val_stream = encode(sep.join(train)), encode(sep.join(val))
        log.info("corpus %s from %s: %d train / %d val documents, %d / %d tokens", c.corpus, self.source,
                 len(train), len(val), len(self.train_stream), len(self.val_stream))
        self.passkey = PasskeyDataset(self.val_stream, c.passkey_digits)
        self.train_passkey = PasskeyDataset(self.train_stream, c.passkey_digits)

    def train_dataloader(self) -> DataLoader:
        c = self.cfg
        size = self.total_steps * c.batch_size
        ds = TrainWindows(self.train_stream, c.train_length, size, self.seed, self.train_passkey,
                          c.passkey_train_fraction)
        return ResumableLoader(ds, c.batch_size, c.num_workers)

    def val_names(self) -> list[str]:
        names = [f"ppl@{n}" for n in self.cfg.eval_lengths]
        return names + [f"passkey@len={n}/depth={d}" for n in self.cfg.passkey_lengths for d in self.cfg.passkey_depths]

    def val_dataloader(self) -> list[DataLoader]:
        c = self.cfg
        loaders = [DataLoader(EvalWindows(self.val_stream, n, c.eval_windows), self._eval_batch(n))
                   for n in c.eval_lengths]
        for n in c.passkey_lengths:
            for d in c.passkey_depths:
                ds = self.passkey.fixed(n + 1, d, c.passkey_samples, seed=self.seed)
                loaders.append(DataLoader(ds, self._eval_batch(n)))
        return loaders

    def _eval_batch(self, length: int) -> int:
        return max(1, min(self.cfg.eval_windows, self.cfg.eval_batch_tokens // length))
