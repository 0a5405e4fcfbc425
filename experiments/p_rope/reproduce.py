"""p-RoPE study at CPU scale: NoPE, RoPE and p-RoPE (p = 0.25, 0.5, 0.75) trained with the same LM budget
(experiment=p_rope/compare), validation ppl, and the frequency-usage heat-maps of RoPE and 0.75-RoPE.

    python scripts/reproduce.py p_rope [--steps 300]
Writes results.csv, results.md, usage_rope.png and usage_p0.75.png next to this file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNS = {"NoPE": ["pe=nope"], "RoPE": ["pe=rope"], "0.25-RoPE": ["pe=p_rope", "pe.p=0.25"],
        "0.5-RoPE": ["pe=p_rope", "pe.p=0.5"], "0.75-RoPE": ["pe=p_rope", "pe.p=0.75"]}


def train(name: str, overrides: list[str], steps: int) -> Path:
    run_dir = HERE / "runs" / name
    if not (run_dir / "results.json").exists():
        cmd = [sys.executable, "train.py", "experiment=p_rope/compare", *overrides, f"trainer.max_steps={steps}",
               f"trainer.val_check_interval={steps}", f"hydra.run.dir={run_dir}"]
        subprocess.run(cmd, cwd=ROOT, check=True)
    return run_dir


def main(argv: list[str]) -> None:
    from rope_lab.analysis.frequency_usage import main as usage
    from rope_lab.analysis.results import markdown_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    start = time.time()
    rows = []
    for name, overrides in RUNS.items():
        metrics = json.loads((train(name, overrides, args.steps) / "results.json").read_text())["metrics"]
        rows.append([name, metrics.get("val/ppl@128", float("nan")), metrics.get("val/ppl@256", float("nan"))])
    for name, png in (("RoPE", "usage_rope.png"), ("0.75-RoPE", "usage_p0.75.png")):
        usage([str(HERE / "runs" / name), "--out", str(HERE / png), "--length", "128", "--batches", "2"])
    header = ["encoding", "val ppl@128 (train length)", "val ppl@256"]
    (HERE / "results.csv").write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    text = markdown_table(rows, header) + f"\n\nsteps {args.steps}, wall time {(time.time() - start) / 60:.1f} min\n"
    (HERE / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
