"""Helpers for building every registered PE from its own config file, on a tiny geometry."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rope_lab.pe import AttentionGeometry, Positions, build_pe

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def pe_config(name: str, **overrides) -> dict:
    """configs/pe/<name>.yaml composed exactly as train.py would (with its pe/scaling default)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"pe={name}"])
    node = OmegaConf.to_container(cfg.pe, resolve=True)
    node.update(overrides)
    return node


def geometry(dim: int = 32, n_heads: int = 2, n_kv_heads: int = 2, depth: int = 2) -> AttentionGeometry:
    return AttentionGeometry(dim=dim, head_dim=dim // n_heads, n_heads=n_heads, n_kv_heads=n_kv_heads,
                             depth=depth, max_tokens=256)


def build(name: str, geom: AttentionGeometry | None = None, **overrides):
    return build_pe(pe_config(name, **overrides)).setup(geom or geometry())


def example_positions(pe, batch: int, length: int, start: int = 0, random: bool = False,
                      generator: torch.Generator | None = None) -> Positions:
    """The variant's example positions (``PositionalEncoding.example_positions``); random token indices drawn from
    ``generator`` when ``random`` (variants with a structured layout keep theirs)."""
    return pe.example_positions(batch, length, start=start, generator=generator if random else None)


def parallel_and_incremental(model, tokens, positions: Positions, *chunk_ends: int):
    """(logits of one parallel pass, the same logits decoded with a KV cache: chunks ending at ``chunk_ends``, then
    one token at a time, cache) of a decoder, without gradients."""
    starts = (0, *chunk_ends)
    with torch.no_grad():
        full = model(tokens, positions)
        cache = model.new_cache()
        steps = [model(tokens[:, a:b], positions.slice(a, b), cache) for a, b in zip(starts, chunk_ends)]
        steps += [model(tokens[:, i : i + 1], positions.slice(i, i + 1), cache)
                  for i in range(starts[-1], tokens.shape[1])]
    return full, torch.cat(steps, 1), cache
