"""YaRN study at CPU scale: one tiny LM trained at L = 128, evaluated at 1x/2x/4x/8x L with every scaling
(factor 8, original length 128) without fine-tuning, then after a short fine-tune at 2L.

    python scripts/reproduce.py yarn [--steps 300] [--ft-steps 60]
Writes results.csv, results.md and ppl_vs_length.png next to this file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
L0, FACTOR, LENGTHS = 128, 8.0, [128, 256, 512, 1024]
SCALINGS = {
    "none": {"name": "none"},
    "linear (PI)": {"name": "linear", "factor": FACTOR},
    "ntk": {"name": "ntk", "factor": FACTOR},
    "dynamic_ntk": {"name": "dynamic_ntk", "factor": FACTOR, "original_max_position_embeddings": L0},
    "yarn": {"name": "yarn", "factor": FACTOR, "original_max_position_embeddings": L0},
    "llama3": {"name": "llama3", "factor": FACTOR, "original_max_position_embeddings": L0},
    # hand-made monotone factors (1 .. FACTOR), not LongRoPE's searched ones (no search at this scale)
    "longrope": {"name": "longrope", "short_factor": [1.0] * 16, "factor": FACTOR,
                 "long_factor": [1.0 + (FACTOR - 1) * i / 15 for i in range(16)], "original_max_position_embeddings": L0},
}


def train(run_dir: Path, steps: int) -> Path:
    if not (run_dir / "results.json").exists():
        cmd = [sys.executable, "train.py", "experiment=yarn/train", f"trainer.max_steps={steps}",
               f"trainer.val_check_interval={steps}", f"hydra.run.dir={run_dir}"]
        subprocess.run(cmd, cwd=ROOT, check=True)
    return sorted(run_dir.rglob("*.ckpt"))[-1]


def ppl(module, dm, lengths) -> dict[int, float]:
    from rope_lab.tasks.lm.datamodule import EvalWindows

    out = {}
    module.eval()
    with torch.no_grad():
        for n in lengths:
            ds = EvalWindows(dm.val_stream, n, 8)
            batch = {"tokens": torch.stack([ds[i]["tokens"] for i in range(len(ds))])}
            out[n] = float(module._nll(batch)[0].mean().exp())
    return out


def build_with(ckpt: Path, scaling: dict, train_length: int = L0):
    from rope_lab.run import build

    cfg = OmegaConf.load(ckpt.parents[1] / ".hydra" / "config.yaml")
    OmegaConf.update(cfg, "pe.scaling", scaling, merge=False)
    OmegaConf.update(cfg, "task.train_length", train_length, merge=False)
    _, module, dm, _ = build(cfg)
    module.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    dm.setup()
    return module, dm


def finetune(module, dm, steps: int) -> None:
    module.total_steps = steps
    module.optim_cfg.warmup_steps = min(module.optim_cfg.warmup_steps, steps // 5)
    dm.total_steps = steps
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=dm.train_dataloader())


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--ft-steps", type=int, default=60)
    args = parser.parse_args(argv)
    start = time.time()
    torch.set_num_threads(2)
    L.seed_everything(0)
    ckpt = train(HERE / "runs" / "base", args.steps)
    rows = []
    for label, scaling in SCALINGS.items():
        module, dm = build_with(ckpt, scaling)
        rows.append((label, "no fine-tune", ppl(module, dm, LENGTHS)))
        module, dm = build_with(ckpt, scaling, train_length=2 * L0)
        L.seed_everything(0)
        finetune(module, dm, args.ft_steps)
        rows.append((label, f"fine-tuned {args.ft_steps} steps at {2 * L0}", ppl(module, dm, LENGTHS)))
        print(rows[-2], rows[-1], flush=True)
    write(rows, time.time() - start)


def write(rows, seconds: float) -> None:
    from rope_lab.analysis.plots import plot_curve
    from rope_lab.analysis.results import markdown_table

    header = ["scaling", "setting", *[f"ppl@{n}" for n in LENGTHS]]
    table = [[a, b, *[p[n] for n in LENGTHS]] for a, b, p in rows]
    (HERE / "results.csv").write_text("\n".join(",".join(map(str, r)) for r in [header, *table]) + "\n")
    (HERE / "results.md").write_text(markdown_table(table, header) + f"\n\nwall time {seconds / 60:.1f} min\n")
    plot_curve({f"{a} ({'ft' if 'fine' in b else 'no ft'})": {float(n): v for n, v in p.items()} for a, b, p in rows},
               HERE / "ppl_vs_length.png", "evaluation length", "perplexity", logy=True, vline=L0)
    print((HERE / "results.md").read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
