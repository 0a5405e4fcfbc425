"""Plot helpers (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def finite_points(points: dict[float, float]) -> dict[float, float]:
    """Drop non-finite values (a diverged metric), so a plot, on a log scale too, still draws the rest."""
    return {x: y for x, y in points.items() if math.isfinite(x) and math.isfinite(y)}


MAX_LABELLED_TICKS = 16


def plot_curve(series: dict[str, dict[float, float]], path: Path | str, xlabel: str, ylabel: str,
               logy: bool = False, logx: bool = True, title: str | None = None, vline: float | None = None,
               vline_label: str = "training length",
               bands: dict[str, dict[float, tuple[float, float]]] | None = None) -> Path:
    """One line per series name: {x: y}, with an optional shaded (low, high) band per series and x (a confidence
    interval; non-finite bounds are left out). Writes a PNG and returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    many = len(series) > 10  # beyond the default 10 colours: tab20's, and the legend beside the axes
    fig, ax = plt.subplots(figsize=(8.5 if many else 6, 4.5 if many else 4))
    if many:
        ax.set_prop_cycle(color=[plt.cm.tab20(i % 20) for i in range(len(series))])
    series = {name: {x: y for x, y in finite_points(pts).items() if y > 0 or not logy} for name, pts in series.items()}
    if not any(series.values()):  # every value diverged: say so instead of an empty (or log-scale-breaking) axis
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        logx = logy = False
    for name, pts in series.items():
        xs = sorted(pts)
        (line,) = ax.plot(xs, [pts[x] for x in xs], marker="o", label=name, ms=3 if many else 6)
        band = {x: b for x, b in (bands or {}).get(name, {}).items() if x in pts and all(map(math.isfinite, b))
                and (min(b) > 0 or not logy)}
        if band:
            bx = sorted(band)
            ax.fill_between(bx, [band[x][0] for x in bx], [band[x][1] for x in bx], color=line.get_color(),
                            alpha=0.15, linewidth=0)
    if vline is not None:
        ax.axvline(vline, color="grey", linestyle="--", label=vline_label)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    evaluated = sorted({x for pts in series.values() for x in pts})
    if 0 < len(evaluated) <= MAX_LABELLED_TICKS:  # ticks at the evaluated values, written as plain numbers
        ax.set_xticks(evaluated, [f"{x:g}" for x in evaluated], fontsize=8 if len(evaluated) > 8 else None)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if many:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_labelled_grid(images, path: Path | str, columns: list[str], row_labels: list[str] | None = None,
                       title: str = "", ncol: int | None = None) -> Path:
    """A grid of grayscale images in [0, 1] (N, 1, H, W), each titled with ``columns[i]`` (e.g. its class name), a
    label per row on the left; a PNG a reader can read without knowing the batch order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(images)
    ncol = ncol or min(n, 10)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(0.9 * ncol + (0.8 if row_labels else 0), 1.0 * nrow + 0.4),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(images[i][0].float().cpu().clamp(0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(columns[i], fontsize=6, pad=2)
        if row_labels and i % ncol == 0:
            ax.set_ylabel(row_labels[i // ncol], fontsize=7)
    return save_figure(fig, path, title)


def save_figure(fig, path: Path, title: str = "") -> Path:
    """Suptitle (if any), tight layout, a 120-dpi PNG at ``path``; the figure is closed."""
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
