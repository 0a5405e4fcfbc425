"""Evaluate a checkpoint without retraining, with any overrides of the run's own config:

    python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt task.eval_lengths=[256,4096]

The training run's config (``<run>/.hydra/config.yaml``) is the base; the command-line overrides (Hydra
override grammar) change it. Results go to ``<run>/eval/<time>_<uid>/`` (results.json, metrics.csv, plots);
the run itself is never touched.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP; see rope_lab/__init__.py
import sys

from rope_lab.evaluate import evaluate, parse_overrides

os.environ.setdefault("WANDB_MODE", "offline")


def main(argv: list[str]) -> dict:
    values = parse_overrides(argv)
    if "ckpt_path" not in values:
        sys.exit("usage: python eval.py ckpt_path=<run>/checkpoints/last.ckpt [key=value ...]")
    ckpt = values.pop("ckpt_path")
    return evaluate(ckpt, values)


if __name__ == "__main__":
    main(sys.argv[1:])
