"""V-NIAH / V-NIAH-D data: real haystack frames (``rope_lab.data.video_frames``) + Fashion-MNIST needles.

A sequence is ``[prompt][video][question][answer]`` in UTF-8 bytes (vocabulary 256); the video's frames are
grouped into temporal grids of ``temporal_patch_size`` frames, each grid giving H' x W' tokens after the 2x2
merge. The needle (and the distractor) fill one grid each. Training items are a deterministic function of
(seed, index) with a random depth; evaluation uses a fixed set per (length, depth) cell, with needles from
Fashion-MNIST's test split and haystacks from held-out sequences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rope_lab.data.fashion_mnist import CLASSES, load_fashion_mnist
from rope_lab.data.video_frames import load_haystack_frames
from rope_lab.tasks.data import ResumableLoader, TaskDataModule, train_samples
from rope_lab.tasks.vniah.needles import NeedleBank, distractor_slot, to_frame
from rope_lab.tasks.vniah.positions import Segments, layout_coords

log = logging.getLogger(__name__)
VOCAB_SIZE = 256
PAD = 0
ANSWERS = [f"{c}." for c in CLASSES]
ANSWER_LEN = max(len(a) for a in ANSWERS)


@dataclass
class VNIAHConfig:
    data_dir: str = "${paths.data_dir}"
    frames_path: str | None = None  # a folder of frames (or of sequence folders) instead of visp-images-data
    fashion_mnist_path: str | None = None
    distractors: bool = False  # V-NIAH-D: one look-alike distractor `cycle` frames from the needle
    cycle: int = 8  # frames between needle and distractor (VideoRoPE: 200 at 100..2900-frame haystacks)
    frame_size: int = 32
    patch_size: int = 8
    temporal_patch_size: int = 2
    merge_size: int = 2
    fps: float = 2.0  # frames per second of the haystack (Qwen2.5-VL absolute time ids)
    train_frames: int = 16
    eval_frames: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    eval_samples: int = 16
    batch_size: int = 16
    eval_batch_size: int = 16
    prompt: str = "Video: "
    question: str = " Which item is framed? "
    # also decode the answer greedily and log how often it is the needle, the distractor, another class or invalid
    # (<prefix>/answer/{correct,distractor,other,invalid}); costs one forward per answer byte at evaluation
    answer_choice: bool = False
    # a Qwen2-VL checkpoint folder: items go through its processor (chat template, vision tokens, video
    # processor; rope_lab/tasks/vniah/chat.py) and its tokenizer's answer tokens; null: our byte layout above
    processor: str | None = None
    chat_question: str = ("One frame of this video shows a piece of clothing inside a white border. Which item is "
                          "it? Answer with one of: {choices}.")
    num_workers: int = 0


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_question(c: VNIAHConfig) -> str:
    return c.chat_question.format(choices=", ".join(CLASSES))


def make_chat_encoder(c: VNIAHConfig):
    from rope_lab.tasks.vniah.chat import chat_encoder

    return chat_encoder(c.processor, chat_question(c), tuple(ANSWERS))


def check_config(c: VNIAHConfig) -> None:
    """Clear errors for bad grids, lengths and depths."""
    grid = c.frame_size // c.patch_size if c.patch_size > 0 else 0
    if c.patch_size <= 0 or c.frame_size % c.patch_size or grid % c.merge_size:
        raise ValueError(f"frame_size={c.frame_size} must be a multiple of patch_size={c.patch_size} and the patch "
                         f"grid ({grid}) a multiple of merge_size={c.merge_size}")
    for n in [c.train_frames, *c.eval_frames]:
        if n <= 0 or n % c.temporal_patch_size:
            raise ValueError(f"video lengths must be positive multiples of temporal_patch_size="
                             f"{c.temporal_patch_size} frames; got {n}")
    for d in c.depths:
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"needle depth must be in [0, 1]; got {d} (depths={list(c.depths)})")
    if c.processor and c.answer_choice:
        raise ValueError("task.answer_choice decodes answers in the byte vocabulary; it does not run with "
                         f"task.processor={c.processor} (the checkpoint's tokenizer): set task.answer_choice=false")
    if c.distractors:
        if c.cycle <= 0 or c.cycle % c.temporal_patch_size:
            raise ValueError(f"cycle must be a positive multiple of temporal_patch_size={c.temporal_patch_size}; "
                             f"got {c.cycle}")
        if c.train_frames < 2 * c.cycle:
            raise ValueError(f"train_frames={c.train_frames} must be >= 2 * cycle={2 * c.cycle} so that every "
                             f"training item has its distractor")


class VNIAHBuilder:
    """Composes one sequence from a haystack pool and a needle bank."""

    def __init__(self, cfg: VNIAHConfig, pool: np.ndarray, bank: NeedleBank) -> None:
        self.cfg, self.pool, self.bank = cfg, pool, bank
        side = cfg.frame_size // cfg.patch_size // cfg.merge_size
        self.grid_h = self.grid_w = side
        self.prompt, self.question = encode(cfg.prompt), encode(cfg.question)

    def segments(self, grids: int) -> Segments:
        return Segments(len(self.prompt), grids, self.grid_h, self.grid_w, len(self.question) + ANSWER_LEN)

    def video(self, rng: np.random.Generator, n_frames: int, depth: float) -> tuple[np.ndarray, int, int]:
        """(frames (F', S, S) uint8 with the needle and distractor grids inserted, needle label, distractor label
        or -1)."""
        c, tp = self.cfg, self.cfg.temporal_patch_size
        start = int(rng.integers(len(self.pool)))
        frames = self.pool[(start + np.arange(n_frames)) % len(self.pool)]
        units = list(frames.reshape(n_frames // tp, tp, c.frame_size, c.frame_size))
        n_units = len(units)
        image, label = self.bank.needle(rng)
        needle_at = int(depth * n_units)
        inserts, distractor = [(needle_at, to_frame(image, c.frame_size, border=True))], -1
        if c.distractors:
            slot = distractor_slot(needle_at, n_units, c.cycle // tp, rng)
            if slot is not None:
                look_alike, distractor = self.bank.distractor(rng, label)
                inserts.append((slot, to_frame(look_alike, c.frame_size, border=False)))
        for at, frame in sorted(inserts, key=lambda x: -x[0]):
            units.insert(at, np.broadcast_to(frame, (tp, *frame.shape)))
        return np.concatenate(units), label, distractor

    def item(self, rng: np.random.Generator, n_frames: int, depth: float) -> dict:
        video, label, distractor = self.video(rng, n_frames, depth)
        seg = self.segments(len(video) // self.cfg.temporal_patch_size)
        answer = encode(ANSWERS[label])
        tokens = self.prompt + [PAD] * seg.video_tokens + self.question + answer + [PAD] * (ANSWER_LEN - len(answer))
        answer_mask = torch.zeros(seg.length - 1, dtype=torch.bool)
        first = seg.length - ANSWER_LEN - 1  # target index of the first answer byte
        answer_mask[first : first + len(answer)] = True
        coords, modality = layout_coords(seg)
        pixels = torch.from_numpy(video.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)  # (F, 1, S, S)
        return {"tokens": torch.tensor(tokens), "video": pixels, "coords": coords, "modality": modality,
                "answer_mask": answer_mask, "label": label, "distractor": distractor}


class TrainItems(Dataset):
    def __init__(self, builder: VNIAHBuilder, size: int, seed: int) -> None:
        self.builder, self.size, self.seed = builder, size, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i])
        return self.builder.item(rng, self.builder.cfg.train_frames, float(rng.random()))


class VNIAHDataModule(TaskDataModule):
    def __init__(self, cfg: VNIAHConfig, seed: int, total_steps: int) -> None:
        super().__init__(seed, total_steps)
        check_config(cfg)
        self.cfg = cfg

    def load(self) -> str:
        c = self.cfg
        frames, frame_source = load_haystack_frames(c.frame_size, c.data_dir, c.frames_path)
        train_img, train_lbl, fm_source = load_fashion_mnist("train", c.data_dir, c.fashion_mnist_path,
                                                             "task.fashion_mnist_path")
        test_img, test_lbl, _ = load_fashion_mnist("test", c.data_dir, c.fashion_mnist_path, "task.fashion_mnist_path")
        self.train_builder = VNIAHBuilder(c, frames["train"], NeedleBank(train_img, train_lbl))
        self.eval_builder = VNIAHBuilder(c, frames["eval"], NeedleBank(test_img, test_lbl))
        if c.processor:
            from rope_lab.tasks.vniah.chat import ChatBuilder

            encoder = make_chat_encoder(c)
            self.train_builder = ChatBuilder(self.train_builder, encoder)
            self.eval_builder = ChatBuilder(self.eval_builder, encoder)
        source = f"haystack: {frame_source}; needles: fashion_mnist ({fm_source})"
        log.info("V-NIAH data: %s", source)
        return source

    def train_dataloader(self) -> DataLoader:
        ds = TrainItems(self.train_builder, train_samples(self, self.cfg.batch_size), self.seed)
        return ResumableLoader(ds, self.cfg.batch_size, self.cfg.num_workers)

    def cells(self) -> list[tuple[int, float]]:
        return [(n, d) for n in self.cfg.eval_frames for d in self.cfg.depths]

    def val_dataloader(self) -> list[DataLoader]:
        loaders = []
        for n, d in self.cells():
            rng = np.random.default_rng([self.seed, 1, n, int(round(d * 1000))])
            items = [self.eval_builder.item(rng, n, d) for _ in range(self.cfg.eval_samples)]
            loaders.append(DataLoader(items, self.cfg.eval_batch_size))  # a list is a map-style dataset
        return loaders
