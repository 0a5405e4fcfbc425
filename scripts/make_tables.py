"""Turn finished runs (a multirun sweep dir or any outputs tree) into markdown tables and plots.

    python scripts/make_tables.py multirun/lm_longctx/2026-11-26/12-00-00_ab12cd [--out DIR]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from rope_lab.analysis.results import load_runs, markdown_table, metric_table
from rope_lab.analysis.tables import load_makers


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="run dir, sweep dir or outputs tree holding results.json files")
    parser.add_argument("--out", type=Path, default=None, help="where to write tables/plots (default: root)")
    args = parser.parse_args(argv)
    if not args.root.exists():
        parser.error(f"{args.root} does not exist")
    runs = load_runs(args.root)
    if not runs:
        parser.error(f"no finished training runs (results.json next to run_config.yaml or .hydra/config.yaml) "
                     f"under {args.root}")
    out = args.out or args.root
    out.mkdir(parents=True, exist_ok=True)
    by_task = defaultdict(list)
    for r in runs:
        by_task[r.task].append(r)
    makers, written = load_makers(), []
    for task, task_runs in by_task.items():
        if task in makers:
            written += makers[task](task_runs, out)
        else:
            header, rows = metric_table(task_runs, "val/")
            path = out / f"{task}.md"
            path.write_text(markdown_table(rows, header) + "\n")
            written.append(path)
    for p in written:
        print(p)
        if p.suffix == ".md":
            print(p.read_text())
    return written


if __name__ == "__main__":
    main()
