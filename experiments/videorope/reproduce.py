"""Reproduce VideoRoPE's V-NIAH-D comparison (and V-NIAH) at CPU scale.

    python scripts/reproduce.py videorope                 # full: 6 variants x vniah_d (+ --with-vniah)
    python scripts/reproduce.py videorope --quick         # shortened (fewer steps and eval samples)

Runs ``python train.py -m experiment=videorope/<task>`` into ``--out`` (default: experiments/videorope/runs)
and writes the summary table and side-by-side heat-maps there (``scripts/make_tables.py``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["trainer.max_steps=400", "trainer.val_check_interval=400", "task.eval_samples=8"]


def sweep(task: str, out: Path, extra: list[str]) -> Path:
    sweep_dir = out / task
    cmd = [sys.executable, "train.py", "-m", f"experiment=videorope/{task}", f"hydra.sweep.dir={sweep_dir}", *extra]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return sweep_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "runs")
    parser.add_argument("--quick", action="store_true", help="shortened runs: " + " ".join(QUICK))
    parser.add_argument("--with-vniah", action="store_true", help="also run V-NIAH (no distractor)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    extra = (QUICK if args.quick else []) + args.overrides
    tasks = ["vniah_d"] + (["vniah"] if args.with_vniah else [])
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_tables import main as make_tables

    for task in tasks:
        make_tables([str(sweep(task, args.out, extra))])


if __name__ == "__main__":
    main(sys.argv[1:])
