"""RoPE-ViT (Heo et al., ECCV 2024) multi-resolution trend at CPU scale: train the same ViT on Fashion-MNIST
with each PE at one resolution, test at 0.75x..2.25x, write the accuracy table, the trend checks and the
accuracy-vs-resolution plot next to this file (runs go to multirun/rope_vit/).

    python scripts/reproduce.py rope_vit [--steps N] [--pes ape rope_axial rope_mixed ...] [--val-samples N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PES = ["ape", "rope_axial", "rope_mixed", "rope_axial_ape", "rope_mixed_ape"]


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600, help="training steps per PE (experiment default 600)")
    p.add_argument("--pes", nargs="+", default=PES, choices=PES)
    p.add_argument("--val-samples", type=int, default=2000)
    p.add_argument("--out", type=Path, default=ROOT / "multirun" / "rope_vit" / time.strftime("%Y-%m-%d_%H-%M-%S"),
                   help="sweep dir (runs); tables and plot go next to this README unless --tables is given")
    p.add_argument("--tables", type=Path, default=HERE)
    args = p.parse_args(argv)
    pes = ",".join(args.pes)
    cmd = [sys.executable, "train.py", "experiment=rope_vit/multires", f"hydra.sweeper.params.pe='{pes}'",
           f"hydra.sweep.dir={args.out}", f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}",
           f"task.val_samples={args.val_samples}"]
    env = {**os.environ, "ROPE_LAB_KERNEL": os.environ.get("ROPE_LAB_KERNEL", "eager")}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    sys.path.insert(0, str(ROOT))
    from scripts.make_tables import main as make_tables

    make_tables([str(args.out), "--out", str(args.tables)])
    return args.tables


if __name__ == "__main__":
    main(sys.argv[1:])
