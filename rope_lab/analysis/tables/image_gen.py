"""Tables and plots for ``task=image_gen`` sweeps: classifier accuracy, FID and KID by generation resolution."""

from __future__ import annotations

from pathlib import Path

from rope_lab.analysis.plots import plot_curve
from rope_lab.analysis.results import RunResult, markdown_table, metric_table
from rope_lab.analysis.tables import table_maker


@table_maker("image_gen")
def image_gen_tables(runs: list[RunResult], out_dir: Path) -> list[Path]:
    text = []
    for name, title in (("acc", "Classifier accuracy on generated samples"), ("fid", "FID (classifier features)"),
                        ("kid", "KID (classifier features)")):
        header, rows = metric_table(runs, f"val/{name}@res=")
        if len(header) > 1:
            text.append(f"## {title} by generation resolution (px)\n\n" + markdown_table(rows, header))
    baselines = baseline_rows(runs)
    if baselines:
        text.append("## Trivial generators on the same requests, at the training resolution (no model)\n\n"
                    + markdown_table(baselines, ["baseline", "acc", "fid", "kid"]))
    table = out_dir / "image_gen.md"
    table.write_text("\n\n".join(text) + "\n")
    series = {r.label: {float(k.split("=")[1]): v for k, v in r.metrics.items() if k.startswith("val/acc@res=")}
              for r in runs}
    train = runs[0].config.get("task", {}).get("image_size") if runs else None
    plot = plot_curve(series, out_dir / "acc_vs_resolution.png", "generation resolution (px)",
                      "classifier accuracy", logx=False, vline=train, vline_label="training resolution")
    return [table, plot]


def baseline_rows(runs: list[RunResult]) -> list[list]:
    """One row per trivial generator (tasks/image_gen/baselines.py) from the first run that logged them."""
    for run in runs:
        names = [k.split("=", 1)[1] for k in run.metrics if k.startswith("val/fid@baseline=")]
        if names:
            return [[name] + [run.metrics.get(f"val/{m}@baseline={name}", "") for m in ("acc", "fid", "kid")]
                    for name in names]
    return []
