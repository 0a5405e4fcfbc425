"""Depth x length accuracy heat-maps, as in the V-NIAH / V-NIAH-D figures (LongVA; VideoRoPE Fig. 5):
x = haystack length (frames), y = needle depth, colour = exact-match accuracy."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402

# red (0) -> yellow -> green (1): the colour scale of the V-NIAH figures
CMAP = LinearSegmentedColormap.from_list("niah", ["#F0496E", "#EBB839", "#0CD79F"])


def grid(values: dict[tuple[int, float], float]) -> tuple[list[int], list[float], np.ndarray]:
    """{(length, depth): acc} -> (lengths, depths, (depths, lengths) array; NaN where missing)."""
    lengths = sorted({n for n, _ in values})
    depths = sorted({d for _, d in values})
    arr = np.full((len(depths), len(lengths)), np.nan)
    for (n, d), v in values.items():
        arr[depths.index(d), lengths.index(n)] = v
    return lengths, depths, arr


def _draw(ax, values, title: str, train_length: int | None = None, ylabel: bool = True,
          xlabel: str = "haystack frames"):
    lengths, depths, arr = grid(values)
    im = ax.imshow(arr, cmap=CMAP, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            if np.isfinite(arr[i, j]):
                ax.text(j, i, f"{arr[i, j]:.2f}", ha="center", va="center", fontsize=7)
    if train_length is not None and train_length in lengths:
        ax.axvline(lengths.index(train_length) + 0.5, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel("needle depth")
    ax.set_title(title, fontsize=9)
    return im


def plot_heatmap(values: dict[tuple[int, float], float], path: Path | str, title: str,
                 train_length: int | None = None, xlabel: str = "haystack frames") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    im = _draw(ax, values, title, train_length, xlabel=xlabel)
    fig.colorbar(im, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_heatmaps(panels: dict[str, dict[tuple[int, float], float]], path: Path | str,
                  train_length: int | None = None, xlabel: str = "haystack frames") -> Path:
    """Side-by-side heat-maps, one panel per run (label -> values)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False, sharey=True)
    im = None
    for i, (ax, (label, values)) in enumerate(zip(axes[0], panels.items())):
        mean = float(np.nanmean(list(values.values()))) if values else float("nan")
        im = _draw(ax, values, f"{label}\nmean {mean:.3f}", train_length, ylabel=i == 0, xlabel=xlabel)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), label="accuracy", shrink=0.8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
