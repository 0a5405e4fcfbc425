"""DiT resolution extrapolation: train a class-conditional rectified-flow DiT on 28 px Fashion-MNIST with each
PE, generate at 28/40/56 px, score with the in-project classifier (accuracy, FID/KID on its features).

    python scripts/reproduce.py dit [--steps N] [--pes ape rope_axial rope_mixed] [--out DIR] [--mmdit]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from rope_lab.analysis.plots import plot_curve
from rope_lab.analysis.results import markdown_table
from rope_lab.experiment import run_config

HERE = Path(__file__).resolve().parent
PE_OVERRIDES = {"ape": ["pe=ape", "pe.kind=sinusoidal"], "rope_axial": ["pe=rope_axial"],
                "rope_mixed": ["pe=rope_mixed"], "nope": ["pe=nope"]}


def small(steps: int) -> list[str]:
    """A CPU-sized DiT (dim 64, depth 4) and schedule; the experiment config holds the full-size settings."""
    return [f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "backbone.dim=64",
            "backbone.n_heads=4", "task.batch_size=32", "task.eval_samples=100", "task.sample_steps=12"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--pes", nargs="+", default=["ape", "rope_axial", "rope_mixed"], choices=sorted(PE_OVERRIDES))
    p.add_argument("--out", type=Path, default=HERE / "runs")
    p.add_argument("--mmdit", action="store_true", help="also train the MM-DiT (FLUX ids, text stream)")
    args = p.parse_args(argv)
    results = {}
    for pe in args.pes:
        results[pe] = run_config(["experiment=dit/resolution"] + PE_OVERRIDES[pe] + small(args.steps), args.out / pe)
    if args.mmdit:
        results["mmdit+rope_axial(flux ids)"] = run_config(["experiment=dit/mmdit", "pe.axes_dim=[4,6,6]"]
                                                          + small(args.steps),
                                                          args.out / "mmdit")
    sizes = sorted({int(k.split("=")[1]) for m in results.values() for k in m if k.startswith("val/acc@res=")})
    header = ["pe"] + [f"{k}@{s}" for k in ("acc", "fid") for s in sizes]
    rows = [[pe] + [m.get(f"val/{k}@res={s}", float("nan")) for k in ("acc", "fid") for s in sizes]
            for pe, m in results.items()]
    (args.out / "results.md").write_text(markdown_table(rows, header) + "\n")
    with open(args.out / "results.csv", "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    series = {pe: {s: m[f"val/acc@res={s}"] for s in sizes} for pe, m in results.items()}
    plot_curve(series, args.out / "acc_vs_resolution.png", "generation resolution (px)", "classifier accuracy",
               vline=28)
    print(markdown_table(rows, header))
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
