"""Plot helpers (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def finite_points(points: dict[float, float]) -> dict[float, float]:
    """Drop non-finite values (a diverged metric), so a plot, on a log scale too, still draws the rest."""
    return {x: y for x, y in points.items() if math.isfinite(x) and math.isfinite(y)}


def plot_curve(series: dict[str, dict[float, float]], path: Path | str, xlabel: str, ylabel: str,
               logy: bool = False, logx: bool = True, title: str | None = None, vline: float | None = None,
               vline_label: str = "training length") -> Path:
    """One line per series name: {x: y}. Writes a PNG and returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    series = {name: {x: y for x, y in finite_points(pts).items() if y > 0 or not logy} for name, pts in series.items()}
    if not any(series.values()):  # every value diverged: say so instead of an empty (or log-scale-breaking) axis
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        logx = logy = False
    for name, pts in series.items():
        xs = sorted(pts)
        ax.plot(xs, [pts[x] for x in xs], marker="o", label=name)
    if vline is not None:
        ax.axvline(vline, color="grey", linestyle="--", label=vline_label)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
