"""Needles and look-alike distractors from Fashion-MNIST (Xiao et al. 2017), composed into haystack videos.

V-NIAH (LongVA, Zhang et al. 2024) inserts one needle image as a frame of a long video and asks a question
whose answer only the needle gives; V-NIAH-D (VideoRoPE, Wei et al. 2025, ``vision_niah_d/``) adds a
look-alike distractor exactly ``cycle`` frames before or after the needle. Here the needle is a Fashion-MNIST
item framed by a white border (the question asks for the framed item); a distractor is an item of a
look-alike class without the border, so the answer is determined by the needle alone.
"""

from __future__ import annotations

import numpy as np

from rope_lab.data.fashion_mnist import CLASSES

# Look-alike classes (our choice: the classes Fashion-MNIST classifiers confuse most; tops with tops,
# footwear with footwear).
LOOK_ALIKE = {
    0: (6, 2, 3),  # T-shirt/top -> Shirt, Pullover, Dress
    1: (3,),  # Trouser -> Dress
    2: (4, 6, 0),  # Pullover -> Coat, Shirt, T-shirt/top
    3: (0, 1, 4),  # Dress -> T-shirt/top, Trouser, Coat
    4: (2, 6, 3),  # Coat -> Pullover, Shirt, Dress
    5: (7, 9),  # Sandal -> Sneaker, Ankle boot
    6: (0, 2, 4),  # Shirt -> T-shirt/top, Pullover, Coat
    7: (5, 9),  # Sneaker -> Sandal, Ankle boot
    8: (0, 4),  # Bag -> T-shirt/top, Coat
    9: (7, 5),  # Ankle boot -> Sneaker, Sandal
}


def to_frame(image: np.ndarray, size: int, border: bool) -> np.ndarray:
    """A 28x28 item centred on a black size x size frame; ``border`` draws the needle's white outline."""
    if size < image.shape[0]:
        raise ValueError(f"frame size {size} is smaller than the {image.shape[0]}-pixel needle")
    frame = np.zeros((size, size), dtype=np.uint8)
    top = (size - image.shape[0]) // 2
    frame[top : top + image.shape[0], top : top + image.shape[1]] = image
    if border:
        frame[0, :] = frame[-1, :] = frame[:, 0] = frame[:, -1] = 255
    return frame


class NeedleBank:
    """Fashion-MNIST items by class; draws a needle and, on request, a look-alike distractor."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels
        self.by_class = {c: np.flatnonzero(labels == c) for c in range(len(CLASSES))}

    def needle(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        i = int(rng.integers(len(self.labels)))
        return self.images[i], int(self.labels[i])

    def distractor(self, rng: np.random.Generator, needle_class: int) -> tuple[np.ndarray, int]:
        cls = int(rng.choice(LOOK_ALIKE[needle_class]))
        pool = self.by_class[cls]
        return self.images[int(pool[rng.integers(len(pool))])], cls


def distractor_slot(needle_at: int, n_units: int, cycle: int, rng: np.random.Generator) -> int | None:
    """Where the distractor goes (haystack index), as VideoRoPE's ``eval_vision_niah_interrupt.py``: ``cycle``
    before or after the needle (50/50); after if the needle is within ``cycle`` of the start, before if within
    ``cycle`` of the end; None (omitted) if neither side fits."""
    before, after = needle_at - cycle, needle_at + cycle
    fits_before, fits_after = before >= 0, after <= n_units
    if fits_before and fits_after:
        return before if rng.random() < 0.5 else after
    if fits_after:
        return after
    if fits_before:
        return before
    return None
