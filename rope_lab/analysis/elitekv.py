"""Convert a trained RoPE LLaMA run into EliteKV (arXiv 2503.01586): RoPElite selection + J-LRD weights.

Writes ``<out>/selection.pt`` (the RoPElite ranking, ``pe.selection``; only for ``selection='ropelite'``) and
``<out>/model.pt`` (a plain state dict for ``init_ckpt``), and returns the overrides that build the matching model
(``backbone.attention=elitekv pe=elitekv ...``) for uptraining with train.py. CLI: scripts/elitekv_convert.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from rope_lab.analysis.jlrd import convert_model
from rope_lab.analysis.ropelite import ropelite_ranking
from rope_lab.evaluate import run_dir_of
from rope_lab.pe.variants.text.elitekv import UNIFORM, save_ranking
from rope_lab.tasks.lm.positions import lm_positions

SELECTIONS = ("ropelite", UNIFORM)


@dataclass
class Converted:
    model: torch.nn.Module
    checkpoint: Path
    selection: str  # 'uniform' or the ranking file
    overrides: list[str]


def load_run(ckpt: str | Path):
    """(config, model with the checkpoint's weights, datamodule) of a finished train.py run."""
    from rope_lab.run import build, load_model_weights

    cfg = OmegaConf.load(run_dir_of(Path(ckpt)) / ".hydra" / "config.yaml")
    _, _, datamodule, model = build(cfg, load_init=False)
    load_model_weights(model, str(ckpt))
    return cfg, model.eval(), datamodule


def calibration_batches(datamodule, count: int) -> list[torch.Tensor]:
    """The first ``count`` training batches' input tokens (B, N) (RoPElite calibrates on pretraining-like text)."""
    datamodule.setup("fit")
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append(batch["tokens"][:, :-1])
        if len(batches) == count:
            break
    return batches


def target_overrides(selection: str, chunks: int, kv_dim: int) -> list[str]:
    return ["backbone.attention=elitekv", f"backbone.elitekv_kv_dim={kv_dim}", "pe=elitekv",
            f"pe.selection={selection}", f"pe.chunks_per_head={chunks}"]


def _target_config(cfg: DictConfig, selection: str, chunks: int, kv_dim: int) -> DictConfig:
    target = OmegaConf.create(OmegaConf.to_container(cfg))  # unresolved: ${hydra:...} needs a Hydra run
    target.backbone.attention, target.backbone.elitekv_kv_dim = "elitekv", kv_dim
    target.pe = {"name": "elitekv", "selection": selection, "chunks_per_head": chunks, "base": cfg.pe.base,
                 "pair_layout": cfg.pe.pair_layout, "rotary_fraction": cfg.pe.rotary_fraction,
                 "scaling": OmegaConf.to_container(cfg.pe.scaling), "kernel": cfg.pe.kernel}
    return target


def convert_run(ckpt: str | Path, out: str | Path, chunks: int, kv_dim: int, selection: str = "ropelite",
                calib_batches: int = 4) -> Converted:
    """RoPElite (or the uniform baseline) + J-LRD of the RoPE run that wrote ``ckpt``; files go to ``out``."""
    from rope_lab.run import build

    if selection not in SELECTIONS:
        raise ValueError(f"selection '{selection}' is not one of {list(SELECTIONS)}")
    cfg, source, datamodule = load_run(ckpt)
    if cfg.pe.name != "rope" or cfg.pe.get("psc", False) or cfg.backbone.get("attention", "mha") != "mha":
        raise ValueError(f"EliteKV converts a RoPE model with standard attention (pe=rope, pe.psc=false, "
                         f"backbone.attention=mha); this run has pe={cfg.pe.name}, psc={cfg.pe.get('psc')}, "
                         f"attention={cfg.backbone.get('attention')}")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    chosen = UNIFORM
    if selection == "ropelite":
        order = ropelite_ranking(source, calibration_batches(datamodule, calib_batches), chunks)
        chosen = str(save_ranking(out / "selection.pt", order, chunks, source=str(ckpt)))
    target_cfg = _target_config(cfg, chosen, chunks, kv_dim)
    _, _, _, target = build(target_cfg, load_init=False)
    convert_model(source, target)
    path = out / "model.pt"
    torch.save(target.state_dict(), path)
    return Converted(target.eval(), path, chosen, target_overrides(chosen, chunks, kv_dim) + [f"init_ckpt={path}"])


@torch.no_grad()
def heldout_ppl(model, datamodule) -> float:
    """Perplexity on the task's first validation loader (val/ppl, the training length), as LMModule computes it:
    exp of the mean over windows of each window's mean next-token loss."""
    datamodule.setup("validate")
    nll = []
    for batch in datamodule.val_dataloader()[0]:
        tokens = batch["tokens"]
        logits = model(tokens[:, :-1], lm_positions(tokens[:, :-1]))
        nll.append(F.cross_entropy(logits.float().transpose(1, 2), tokens[:, 1:], reduction="none").mean(1))
    return math.exp(torch.cat(nll).mean().item())


def kv_values_per_token(n_heads: int, head_dim: int, chunks: int, kv_dim: int) -> tuple[int, int]:
    """(EliteKV cache numbers per token and layer: H*2r + kv_dim, the full cache's 2*H*D)."""
    return n_heads * 2 * chunks + kv_dim, 2 * n_heads * head_dim
