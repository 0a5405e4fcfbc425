"""Tables and side-by-side heat-maps for ``task=vniah`` / ``task=vniah_d`` sweeps (VideoRoPE Table 2 / Fig. 5)."""

from __future__ import annotations

import re
from pathlib import Path

from rope_lab.analysis.heatmaps import plot_heatmaps
from rope_lab.analysis.results import RunResult, markdown_table
from rope_lab.analysis.tables import table_maker

CELL = re.compile(r"^(?P<task>vniah(?:_d)?)/acc/len=(?P<len>\d+)/depth=(?P<depth>[0-9.eE+-]+)$")
ORDER = ["rope", "tad_rope", "mrope", "videorope", "vrope", "hope"]


def cells(run: RunResult) -> dict[tuple[int, float], float]:
    out = {}
    for key, value in run.metrics.items():
        m = CELL.match(key)
        if m:
            out[(int(m["len"]), float(m["depth"]))] = float(value)
    return out


def _sorted(runs: list[RunResult]) -> list[RunResult]:
    return sorted(runs, key=lambda r: (ORDER.index(r.pe) if r.pe in ORDER else len(ORDER), r.label))


def summary(runs: list[RunResult], task: str) -> tuple[list[str], list[list]]:
    """One row per run: mean accuracy, then mean per length (over depths)."""
    lengths = sorted({n for r in runs for n, _ in cells(r)})
    rows = []
    for r in _sorted(runs):
        c = cells(r)
        per_len = [sum(v for (n, _), v in c.items() if n == L) / max(1, sum(1 for n, _ in c if n == L))
                   for L in lengths]
        rows.append([r.label, r.metrics.get(f"{task}/acc", float("nan")), *per_len])
    return ["run", "mean acc", *[f"len={n}" for n in lengths]], rows


def make(runs: list[RunResult], out_dir: Path, task: str) -> list[Path]:
    header, rows = summary(runs, task)
    train = runs[0].config.get("task", {}).get("train_frames") if runs else None
    text = (f"## {task}: teacher-forced exact match (mean over depths; training length {train} frames)\n\n"
            + markdown_table(rows, header))
    table = out_dir / f"{task}.md"
    table.write_text(text + "\n")
    short = len({r.pe for r in runs}) == len(runs)  # one run per variant: panel titles by variant name
    panels = {(r.pe if short else r.label): cells(r) for r in _sorted(runs)}
    plot = plot_heatmaps(panels, out_dir / f"{task}_heatmaps.png", train)
    return [table, plot]


@table_maker("vniah_d")
def vniah_d_tables(runs: list[RunResult], out_dir: Path) -> list[Path]:
    return make(runs, out_dir, "vniah_d")


@table_maker("vniah")
def vniah_tables(runs: list[RunResult], out_dir: Path) -> list[Path]:
    return make(runs, out_dir, "vniah")
