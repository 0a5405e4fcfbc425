"""Tables and plots for ``task=image_cls`` sweeps: top-1 accuracy by test resolution (RoPE-ViT Fig. 3 style)
and the three trends of the paper checked on our numbers."""

from __future__ import annotations

from pathlib import Path

from rope_lab.analysis.plots import plot_curve
from rope_lab.analysis.results import RunResult, markdown_table, metric_table
from rope_lab.analysis.tables import table_maker

PREFIX = "val/acc@res="


def accuracy_curves(runs: list[RunResult]) -> dict[str, dict[float, float]]:
    """{run label: {resolution: accuracy}} from ``val/acc@res=R`` metrics."""
    return {r.label: {float(k[len(PREFIX):]): v for k, v in r.metrics.items() if k.startswith(PREFIX)} for r in runs}


def trend_checks(curves: dict[str, dict[float, float]], train_res: float) -> list[str]:
    """The paper's three claims on our curves (labels containing 'ape', 'rope_axial', 'rope_mixed' exactly):
    (1) above the training resolution Mixed > Axial > APE on average; (2) each curve peaks above train_res;
    (3) the Mixed - APE gap grows with resolution (largest at the largest resolution)."""
    lines = []
    mean_above = {k: sum(v for r, v in c.items() if r > train_res) / max(1, sum(r > train_res for r in c))
                  for k, c in curves.items()}
    base = {k.split(" ")[0]: k for k in curves}
    if {"ape", "rope_axial", "rope_mixed"} <= set(base):
        m, a, p = (mean_above[base[n]] for n in ("rope_mixed", "rope_axial", "ape"))
        lines.append(f"(1) mean accuracy above {train_res:g}px: mixed {m:.4f}, axial {a:.4f}, ape {p:.4f} -> "
                     f"order Mixed > Axial > APE {'HOLDS' if m > a > p else 'does NOT hold'}")
    for k, c in curves.items():
        peak = max(c, key=c.get)
        lines.append(f"(2) {k}: peak at {peak:g}px ({c[peak]:.4f}); "
                     f"{'above' if peak > train_res else 'not above'} the training resolution")
    if {"ape", "rope_mixed"} <= set(base):
        mixed, ape = curves[base["rope_mixed"]], curves[base["ape"]]
        above = sorted(r for r in mixed if r >= train_res and r in ape)
        gaps = [mixed[r] - ape[r] for r in above]
        grows = len(gaps) > 1 and gaps[-1] == max(gaps) and gaps[-1] > gaps[0]
        lines.append("(3) Mixed - APE gap at " + ", ".join(f"{r:g}px: {g:+.4f}" for r, g in zip(above, gaps))
                     + f" -> {'grows' if grows else 'does NOT grow'} with resolution")
    return lines


@table_maker("image_cls")
def image_cls_tables(runs: list[RunResult], out_dir: Path) -> list[Path]:
    header, rows = metric_table(runs, PREFIX)
    train_res = runs[0].config.get("task", {}).get("train_resolution") if runs else None
    curves = accuracy_curves(runs)
    text = f"## Top-1 accuracy by test resolution (trained at {train_res} px)\n\n" + markdown_table(rows, header)
    if train_res is not None:
        text += "\n\n## RoPE-ViT trends\n\n" + "\n".join(f"- {line}" for line in trend_checks(curves, train_res))
    table = out_dir / "image_cls.md"
    table.write_text(text + "\n")
    plot = plot_curve(curves, out_dir / "acc_vs_resolution.png", "test resolution (px)", "top-1 accuracy",
                      logx=False, vline=train_res, vline_label="training resolution", title="RoPE-ViT Fig. 3 style")
    return [table, plot]
