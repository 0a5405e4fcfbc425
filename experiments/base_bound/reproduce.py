"""Base bound (Men, Xu et al., NeurIPS 2024): (a) the exact lower-bound table next to the paper's and Su's
values; (b) the sweep experiment=base_bound/sweep (tiny LMs at context 256 with bases around the bound) turned
into the paper-style table and a passkey-accuracy-vs-base plot by scripts/make_tables.py.

    python scripts/reproduce.py base_bound [--max-length 65536] [--steps 300] [--skip-sweep]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-length", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts"))
    from base_bound import main as table

    start = time.time()
    table(["--max-length", str(args.max_length), "--out", str(HERE / "table.md")])
    print(f"table: {time.time() - start:.0f} s")
    if args.skip_sweep:
        return
    sweep = HERE / "runs" / "sweep"
    subprocess.run([sys.executable, "train.py", "-m", "experiment=base_bound/sweep", f"trainer.max_steps={args.steps}",
                    f"trainer.val_check_interval={args.steps}", f"hydra.sweep.dir={sweep}"], cwd=ROOT, check=True)
    subprocess.run([sys.executable, "scripts/make_tables.py", str(sweep), "--out", str(HERE)], cwd=ROOT, check=True)
    print(f"total wall time {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main(sys.argv[1:])
