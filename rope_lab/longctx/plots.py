"""The plots of a pretrained-model evaluation, drawn from its metrics only (as ``analysis/`` reads results)."""

from __future__ import annotations

import re
from pathlib import Path

from rope_lab.analysis.heatmaps import plot_heatmap, plot_heatmaps
from rope_lab.analysis.plots import plot_curve

LENGTH = "context length (tokens)"


def _cells(metrics: dict[str, float], pattern: str) -> dict[str, dict[tuple[int, float], float]]:
    """Metrics matching ``pattern`` (groups: name, length, depth) -> {name: {(length, depth): value}}."""
    out: dict[str, dict[tuple[int, float], float]] = {}
    for key, value in metrics.items():
        m = re.fullmatch(pattern, key)
        if m:
            out.setdefault(m.group(1), {})[(int(m.group(2)), float(m.group(3)))] = value
    return out


def write_plots(metrics: dict[str, float], out_dir: Path, name: str) -> list[Path]:
    written = []
    by_position: dict[str, dict[float, float]] = {}
    for key, value in metrics.items():
        m = re.fullmatch(r"ppl_by_position/len=(\d+)/pos=(\d+)-(\d+)", key)
        if m:
            by_position.setdefault(f"L={m.group(1)}", {})[(int(m.group(2)) + int(m.group(3))) / 2] = value
    if by_position:
        written.append(plot_curve(by_position, out_dir / "ppl_by_position.png", "token position", "perplexity",
                                  logy=True, logx=False, title=f"{name}: perplexity by position"))
    sliding = {float(m.group(1)): v for k, v in metrics.items()
               if (m := re.fullmatch(r"sliding_window/ppl@window=(\d+)/stride=\d+", k))}
    if sliding:
        written.append(plot_curve({name: sliding}, out_dir / "sliding_window_ppl.png", "window (tokens)",
                                  "perplexity", logy=True, title="sliding-window perplexity"))
    passkey = _cells(metrics, r"(passkey)/len=(\d+)/depth=([\d.]+)")
    if passkey:
        written.append(plot_heatmap(passkey["passkey"], out_dir / "passkey_heatmap.png", f"{name}: passkey",
                                    xlabel=LENGTH))
    ruler = _cells(metrics, r"ruler/(\w+)/len=(\d+)/depth=([\d.]+)")
    if ruler:
        written.append(plot_heatmaps(ruler, out_dir / "ruler_heatmaps.png", xlabel=LENGTH))
        curves = {task: {float(n): metrics[f"ruler/{task}/len={n}"] for n, _ in cells} for task, cells in ruler.items()}
        curves["mean"] = {float(m.group(1)): v for k, v in metrics.items()
                          if (m := re.fullmatch(r"ruler/len=(\d+)", k))}
        written.append(plot_curve(curves, out_dir / "ruler_vs_length.png", LENGTH, "score (string match)",
                                  title=f"{name}: RULER"))
    return written
