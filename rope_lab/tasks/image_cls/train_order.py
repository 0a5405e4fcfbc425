"""The training order of ``task=image_cls`` as a pure function of (seed, sample index), so that the rank-sharded
:class:`~rope_lab.tasks.data.ResumableLoader` resumes it exactly, mid-epoch and under DDP.

Sample i of the run is image ``perm_e[i mod n]`` of epoch ``e = i // n``, where ``perm_e`` is a permutation seeded by
(seed, e): the same epoch-wise reshuffling as ``DataLoader(shuffle=True)``, but addressable. Its augmentation (timm's
random-resized crop, flip, RandAugment ...) draws from Python's, NumPy's and torch's global generators, reseeded
from (seed, i) for that one sample and restored afterwards, so a sample looks the same whichever rank reads it and
whether or not the run was resumed (Lightning does not restore the global generators from a checkpoint)."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset


def _sample_seed(seed: int, index: int) -> int:
    return zlib.crc32(f"image_cls/{seed}/{index}".encode())


@contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's CPU global generators with ``seed`` inside the block; restore them after."""
    py, npy, pt = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(pt)


class EpochShuffledSamples(Dataset):
    """``size`` training samples drawn epoch by epoch from ``base`` in a seeded order, each augmented by
    ``augment`` (or by ``base``'s own transform) under generators seeded by (seed, sample index).

    ``augment`` maps one ``(image, label)`` item to another; ``None`` leaves the item as ``base`` returns it."""

    def __init__(self, base: Dataset, size: int, seed: int,
                 augment: Callable[[tuple], tuple] | None = None) -> None:
        if len(base) == 0:
            raise ValueError("the training set is empty")
        self.base, self.size, self.seed, self.augment = base, int(size), int(seed), augment

    def __len__(self) -> int:
        return self.size

    @lru_cache(maxsize=2)  # noqa: B019 -- at most two epochs are live at a time; the dataset lives as long as its run
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.base))

    def base_index(self, index: int) -> int:
        """Which item of ``base`` the run's sample ``index`` is."""
        if not 0 <= index < self.size:
            raise IndexError(f"sample {index} outside 0..{self.size - 1}")
        epoch, offset = divmod(index, len(self.base))
        return int(self._permutation(epoch)[offset])

    def __getitem__(self, index: int) -> tuple:
        with seeded_global_rngs(_sample_seed(self.seed, index)):
            item = self.base[self.base_index(index)]
            return item if self.augment is None else self.augment(item)
