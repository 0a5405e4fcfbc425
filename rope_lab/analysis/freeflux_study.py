"""FreeFlux probing (Wei et al., ICCV 2025, "FreeFlux: Understanding and Exploiting Layer-Specific Roles in
RoPE-Based MMDiT") as a seeded analysis study: experiments/freeflux/study.yaml runs :func:`study_seed` per seed.

A seed trains its own RoPE DiT (dim 64, depth 6, rope_axial; ``train.py`` overrides of
experiments/freeflux/reproduce.py plus ``seed=<seed>``), then probes every attention layer (its keys lose RoPE or
see shifted image positions; rope_lab/analysis/rope_probing.py) and scores PSNR against the unmodified sample. The
ranking of layers is then compared across independently trained models, and next to a null baseline: the PSNR
between the unmodified sample and the unmodified sample from another noise draw (the level that means "a different
image altogether"; a probe scoring near it destroyed the sample).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rope_lab.analysis.rope_probing import freeflux_manipulations, probe_layers, psnr

BUDGETS = {"full": 400}  # training steps of each seed's DiT (the committed single-seed run's budget)


def metric_name(manipulation: str) -> str:
    """'none' (keys without RoPE) -> probe/psnr@keys_no_rope; 'shift:1,1' -> probe/psnr@shift_1_1."""
    return "probe/psnr@" + ("keys_no_rope" if manipulation == "none" else manipulation.replace(":", "_").replace(",", "_"))

BASELINE = "baseline: another noise draw"


def train_overrides(steps: int, seed: int) -> list[str]:
    return ["experiment=freeflux/probe", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
            "backbone.dim=64", "backbone.depth=6", "task.batch_size=32", "task.eval_samples=100",
            "task.sample_steps=12", f"seed={seed}"]


def trained(overrides: list[str], run_dir: Path):
    """(module, model) of the run in ``run_dir``, trained now (train.py, as every study run) unless the same command
    on the same code already finished there."""
    from rope_lab.analysis.study import train_one
    from rope_lab.experiment import load_trained

    train_one(run_dir, overrides)
    return load_trained(overrides, run_dir)


def study_seed(seed: int, budget: str = "full", samples_per_class: int = 2, sample_steps: int = 12,
               root: Path | None = None) -> dict[str, dict[str, float]]:
    """{"layer i": {metric: PSNR}, BASELINE: {"probe/psnr_mean": PSNR vs another noise draw}} for one seed."""
    from rope_lab.analysis.study import EXPERIMENTS
    from rope_lab.tasks.image_gen.module import generate

    if budget not in BUDGETS:
        raise ValueError(f"freeflux study: no budget {budget!r}; choose one of {list(BUDGETS)}")
    overrides = train_overrides(BUDGETS[budget], seed)
    run_dir = (root or EXPERIMENTS / "freeflux" / "runs" / "seeds" / budget) / f"dit_seed{seed}"
    module, model = trained(overrides, run_dir)
    c = module.cfg
    gen = lambda y, z: generate(model, y, z, guidance=c.guidance, steps=sample_steps,  # noqa: E731
                                sampler=c.sampler)
    g = torch.Generator().manual_seed(1000 + seed)  # probe noise: fixed per seed, independent of training
    labels = torch.arange(10).repeat(samples_per_class)
    noise, other = (torch.randn(len(labels), 1, c.image_size, c.image_size, generator=g) for _ in range(2))
    grid = model.token_grid(c.image_size, c.image_size)
    table = probe_layers(model, gen, labels, noise, freeflux_manipulations(grid[0]))
    out = {}
    for layer, by_manipulation in table.items():
        row = {metric_name(m): v for m, v in by_manipulation.items()}
        row["probe/psnr_mean"] = sum(row.values()) / len(row)
        out[f"layer {layer}"] = row
    with torch.no_grad():
        out[BASELINE] = {"probe/psnr_mean": float(psnr(gen(labels, noise), gen(labels, other)).mean())}
    return out
