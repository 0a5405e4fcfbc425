"""EliteKV (Zhou et al., arXiv 2503.01586; official code: github.com/CiaranZhou/EliteKV) as a seeded analysis study:
experiments/elitekv/study.yaml runs :func:`study_seed` per seed.

A seed trains its own RoPE LM (the default byte-level decoder with MHA at L = 128; ``seed=<seed>``), converts it to
EliteKV at 25 % of the KV cache with RoPElite chunks and with the uniform-chunk baseline (rope_lab/analysis/
elitekv.py: calibration, J-LRD by SVD), and uptrains all three models, the RoPE model included, for the same steps
with the same data order (``seed=<100 + seed>``: a new order, shared by the three). Perplexity right after the
conversion and after uptraining, on held-out text.
"""

from __future__ import annotations

from pathlib import Path

BUDGETS = {"full": (600, 200), "quick": (150, 50)}  # (base steps, uptraining steps); the committed run: 600 + 200
CHUNKS, KV_DIM, CALIB_BATCHES = 4, 32, 4  # r = 4 of 16 chunks per head, joint K/V latent 32: 25 % of the cache
LENGTHS = (128, 256)
COMMON = ["backbone.n_kv_heads=4", f"task.eval_lengths=[{','.join(map(str, LENGTHS))}]", "task.passkey_lengths=[128]",
          "task.passkey_depths=[0.5]", "trainer.enable_progress_bar=false"]
ROPE, ELITE, UNIFORM = "RoPE (MHA)", "EliteKV RoPElite", "EliteKV uniform"
CONVERTED = "ppl@128_converted"


def uptraining(steps: int, seed: int) -> list[str]:
    """A new data order, a lower peak learning rate and a short warm-up, validated at the end."""
    return [f"seed={seed}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "optim.lr=1e-3",
            "optim.warmup_steps=10"]


def study_seed(seed: int, budget: str = "full", root: Path | None = None) -> dict[str, dict[str, float]]:
    """{model: {ppl@128_converted, val/ppl@128, val/ppl@256}} for one seed (RoPE's "converted" is as trained)."""
    from rope_lab.analysis.elitekv import convert_run, heldout_ppl, load_run
    from rope_lab.analysis.study import EXPERIMENTS, train_one

    if budget not in BUDGETS:
        raise ValueError(f"elitekv study: no budget {budget!r}; choose one of {list(BUDGETS)}")
    steps, up_steps = BUDGETS[budget]
    root = (root or EXPERIMENTS / "elitekv" / "runs" / "seeds" / budget) / f"seed{seed}"
    up = uptraining(up_steps, 100 + seed)
    train_one(root / "rope", [*COMMON, f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
                              f"seed={seed}"])
    ckpt = root / "rope" / "checkpoints" / "last.ckpt"
    _, source, datamodule = load_run(ckpt)
    rope_up, _ = train_one(root / "rope_uptrained", [*COMMON, *up, f"init_ckpt={ckpt}"])
    out = {ROPE: {CONVERTED: heldout_ppl(source, datamodule), **_ppl(rope_up)}}
    for name, selection in ((ELITE, "ropelite"), (UNIFORM, "uniform")):
        done = convert_run(ckpt, root / f"convert_{selection}", CHUNKS, KV_DIM, selection, CALIB_BATCHES)
        metrics, _ = train_one(root / f"elitekv_{selection}", [*COMMON, *up, *done.overrides])
        out[name] = {CONVERTED: heldout_ppl(done.model, datamodule), **_ppl(metrics)}
    return out


def _ppl(metrics: dict) -> dict[str, float]:
    return {f"val/ppl@{n}": metrics[f"val/ppl@{n}"] for n in LENGTHS}
