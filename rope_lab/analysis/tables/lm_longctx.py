"""Tables and plots for ``task=lm_longctx`` sweeps: ppl by evaluation length and passkey accuracy."""

from __future__ import annotations

from pathlib import Path

from rope_lab.analysis.base_bound import base_sweep_tables
from rope_lab.analysis.plots import plot_curve
from rope_lab.analysis.results import RunResult, markdown_table, metric_table
from rope_lab.analysis.tables import table_maker


@table_maker("lm_longctx")
def lm_tables(runs: list[RunResult], out_dir: Path) -> list[Path]:
    header, rows = metric_table(runs, "val/ppl@")
    pk_header, pk_rows = metric_table(runs, "val/passkey@")
    text = "## Perplexity by evaluation length\n\n" + markdown_table(rows, header)
    if pk_rows and len(pk_header) > 1:
        text += "\n\n## Passkey accuracy\n\n" + markdown_table(pk_rows, pk_header)
    table = out_dir / "lm_longctx.md"
    table.write_text(text + "\n")
    series = {r.label: {float(k.split("@")[1]): v for k, v in r.metrics.items() if k.startswith("val/ppl@")}
              for r in runs}
    train_len = runs[0].config.get("task", {}).get("train_length") if runs else None
    plot = plot_curve(series, out_dir / "ppl_vs_length.png", "evaluation length (tokens)", "perplexity",
                      logy=True, vline=train_len)
    return [table, plot] + base_sweep_tables(runs, out_dir)  # base_bound/sweep: table + accuracy vs base
