"""RoAd (Liao & Monz, NeurIPS 2024) vs LoRA vs full fine-tuning at CPU scale: pretrain a RoPE-Axial ViT on
Fashion-MNIST at 16 px, adapt it to 28 px (where its accuracy collapses) with each method at two learning rates,
and write the table and the claim checks to experiments/road/results.md (runs go to multirun/road/).

    python scripts/reproduce.py road [--pretrain-steps 600] [--steps 200] [--val-samples 2000]

Claim (abstract and peft docs): RoAd1 matches LoRA at fewer trainable parameters, with a learning rate ~10x LoRA's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rope_lab.analysis.reproduce import run_entry, shown, write_report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
QKV = "adapter.target_modules=[qkv]"
#: method -> overrides of experiment=road/resolution, each run at every learning rate of LRS (full fine-tuning: the
#: two lowest; it diverges at 0.1). The grid reaches 10x the best LoRA rate: RoAd is said to want ~10x LoRA's.
METHODS = {
    "full fine-tuning": [],
    "LoRA r=1": ["adapter=lora", "adapter.r=1", "adapter.alpha=2", QKV],
    "LoRA r=2": ["adapter=lora", "adapter.r=2", "adapter.alpha=4", QKV],
    "RoAd1": ["adapter=road", "adapter.variant=road_1", QKV],
    "RoAd2": ["adapter=road", "adapter.variant=road_2", QKV],
}
LRS = (1e-3, 1e-2, 1e-1)
PRETRAIN = ["task.train_resolution=16", "optim.lr=2e-3", "optim.weight_decay=0.05", "optim.warmup_steps=40"]


def train(run_dir: Path, overrides: list[str], steps: int, val_samples: int) -> dict:
    """One train.py run (or its finished record: reruns skip finished runs); returns its results.json."""
    if not (run_dir / "results.json").exists():
        cmd = ["train.py", "experiment=road/resolution", f"hydra.run.dir={run_dir}",
               f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", f"task.val_samples={val_samples}",
               "trainer.enable_progress_bar=false", *overrides]
        run_entry(cmd)
    return json.loads((run_dir / "results.json").read_text())


def table(pretrained: dict, rows: list[tuple[str, float, dict]]) -> list[str]:
    acc = lambda r, res: r["metrics"][f"val/acc@res={res}"]  # noqa: E731
    lines = ["| method | lr | trainable params | acc@28 (adapted to) | acc@16 (pretrained at) |", "|---|---|---|---|---|",
             f"| none (pretrained at 16 px) | - | 0 | {acc(pretrained, 28):.4f} | {acc(pretrained, 16):.4f} |"]
    lines += [f"| {m} | {lr:g} | {r['n_trainable_params']:,} | {acc(r, 28):.4f} | {acc(r, 16):.4f} |"
              for m, lr, r in rows]
    return lines


def checks(pretrained: dict, rows: list[tuple[str, float, dict]]) -> list[str]:
    best = {}
    for method, lr, r in rows:
        if method not in best or r["metrics"]["val/acc@res=28"] > best[method][1]["metrics"]["val/acc@res=28"]:
            best[method] = (lr, r)
    acc = {m: r["metrics"]["val/acc@res=28"] for m, (_, r) in best.items()}
    params = {m: r["n_trainable_params"] for m, (_, r) in best.items()}
    lora = max(("LoRA r=1", "LoRA r=2"), key=acc.get)
    base = pretrained["metrics"]["val/acc@res=28"]
    matched = acc["RoAd1"] >= acc[lora] - 0.01
    fewer = params["RoAd1"] < params["LoRA r=1"]
    return [
        f"- (1) RoAd1 matches the best LoRA ({lora}): {acc['RoAd1']:.4f} vs {acc[lora]:.4f} (within 0.01: "
        f"{'held' if matched else 'NOT held'}), with {params['RoAd1']:,} vs {params[lora]:,} trainable parameters "
        f"(fewer than LoRA r=1's {params['LoRA r=1']:,}: {'held' if fewer else 'NOT held'})",
        f"- (2) RoAd1's best learning rate is {best['RoAd1'][0]:g}, LoRA's ({lora}) {best[lora][0]:g} "
        f"(~10x LoRA's: {'held' if best['RoAd1'][0] >= 10 * best[lora][0] else 'NOT held'})",
        f"- (3) every adapter recovers accuracy at 28 px over no adaptation ({base:.4f}): "
        f"{'held' if all(a > base for a in acc.values()) else 'NOT held'}",
    ]


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-steps", type=int, default=600)
    p.add_argument("--steps", type=int, default=200, help="adaptation steps per method and learning rate")
    p.add_argument("--val-samples", type=int, default=2000)
    p.add_argument("--out", type=Path, default=ROOT / "multirun" / "road" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    p.add_argument("--tables", type=Path, default=HERE)
    args = p.parse_args(argv)
    started = time.time()
    pretrained = train(args.out / "pretrain", PRETRAIN, args.pretrain_steps, args.val_samples)
    ckpt = args.out / "pretrain" / "checkpoints" / "last.ckpt"
    rows = []
    for method, overrides in METHODS.items():
        for lr in LRS if overrides else LRS[:2]:
            name = f"{method.replace(' ', '_').replace('=', '')}_lr{lr:g}"
            rows.append((method, lr, train(args.out / name, [*overrides, f"init_ckpt={ckpt}", f"optim.lr={lr}"],
                                           args.steps, args.val_samples)))
    lines = [f"# RoAd vs LoRA vs full fine-tuning (ViT, Fashion-MNIST, 16 px -> 28 px)", "",
             f"Written by `python scripts/reproduce.py road` on {time.strftime('%Y-%m-%d')} (this invocation "
             f"{(time.time() - started) / 60:.1f} min; runs already finished in {shown(args.out)} are reused). Pretraining {args.pretrain_steps} steps at "
             f"16 px, adaptation {args.steps} steps at 28 px, {args.val_samples} test images per resolution, one seed.",
             "", *table(pretrained, rows), "", "## Claims", "", *checks(pretrained, rows), ""]
    return write_report(args.tables, lines)


if __name__ == "__main__":
    main(sys.argv[1:])
