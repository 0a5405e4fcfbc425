"""Tables for ``task=trajectory`` sweeps (experiment=drope/aircraft): minADE / minFDE / miss rate per PE, per horizon,
next to the constant-velocity floor computed on the same scenes."""

from __future__ import annotations

from pathlib import Path

from rope_lab.analysis.plots import plot_curve
from rope_lab.analysis.results import RunResult, markdown_table
from rope_lab.analysis.tables import table_maker

KINDS = ("minADE", "minFDE", "miss_rate")


def _label(r: RunResult) -> str:
    """The PE plus distinguishing overrides (the sweep's variant file is already named by the PE)."""
    keep = [o for o in r.overrides if not o.startswith(("experiment=", "+experiment/", "trainer.", "debug=", "hydra.",
                                                        "task.max_eval", "task.batch"))]
    return r.pe + (f" ({', '.join(keep)})" if keep else "")


def _horizons(runs: list[RunResult], split: str) -> list[str]:
    keys = {k.split("@h=")[1] for r in runs for k in r.metrics if k.startswith(f"{split}/minADE@h=")}
    return sorted(keys, key=float)


def headline_rows(runs: list[RunResult], split: str) -> tuple[list[str], list[list]]:
    """One row per run: minADE, minFDE, miss rate at the full horizon (metres / fraction), sorted by minADE."""
    header = ["pe", *(f"{k} (m)" if k != "miss_rate" else k for k in KINDS), "steps"]
    rows = [[_label(r), *(r.metrics.get(f"{split}/{k}", float("nan")) for k in KINDS),
             r.config.get("trainer", {}).get("max_steps", "?")] for r in runs]
    rows.sort(key=lambda row: row[1])
    if runs:
        m = runs[0].metrics
        rows.append(["constant velocity (reference)", m.get(f"{split}/cv_minADE", float("nan")),
                     m.get(f"{split}/cv_minFDE", float("nan")), float("nan"), "-"])
    return header, rows


@table_maker("trajectory")
def trajectory_tables(runs: list[RunResult], out_dir: Path) -> list[Path]:
    text = []
    for split in ("test", "val"):
        header, rows = headline_rows(runs, split)
        text.append(f"## {split}: K-mode metrics at the full horizon\n\n" + markdown_table(rows, header))
        hs = _horizons(runs, split)
        per_h = [[_label(r)] + [r.metrics.get(f"{split}/{k}@h={h}", float("nan")) for k in KINDS for h in hs]
                 for r in runs]
        text.append(f"## {split}: per horizon (s)\n\n"
                    + markdown_table(per_h, ["pe"] + [f"{k}@{h}s" for k in KINDS for h in hs]))
    table = out_dir / "trajectory.md"
    table.write_text("\n\n".join(text) + "\n")
    series = {_label(r): {float(h): r.metrics[f"test/minADE@h={h}"] for h in _horizons(runs, "test")
                        if f"test/minADE@h={h}" in r.metrics} for r in runs}
    plot = plot_curve(series, out_dir / "minade_vs_horizon.png", "horizon (s)", "test minADE@K (m)", logx=False)
    return [table, plot]
