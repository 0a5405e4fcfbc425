"""RoPElite: RoPE on a few chosen frequency chunks per head (EliteKV, Zhou et al., arXiv 2503.01586).

Chunk ``c`` of a head is its rotary pair ``c`` (``(c, c + d/2)`` in the half layout of HF LLaMA) with RoPE's own
frequency theta_c = base^(-2c/d); every head keeps ``r = chunks_per_head`` chunks and the others get frequency 0
(identity), so their key channels carry no position and can be compressed jointly with the values (J-LRD,
``backbone.attention=elitekv``, rope_lab/backbones/elitekv.py). The chunks are either the official "Uniform" baseline
(``linspace(0, d/2 - 1, r)`` cast to int, the same for every head; ``convert/convert.py::linspace_concat``) or a
per-layer, per-head RoPElite ranking found greedily on calibration data (rope_lab/analysis/ropelite.py, written by
``scripts/elitekv_convert.py``; the official ``RoPElite/analysis.py`` + ``post_process.py``), of which the first
``r`` chunks are used. Reference code: github.com/CiaranZhou/EliteKV (``convert/modeling_llama_EliteKV.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rope_lab.pe.interface import PositionalEncoding
from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import Rotary, RotaryConfig

UNIFORM = "uniform"


@dataclass
class EliteKVConfig(RotaryConfig):
    selection: str = UNIFORM  # uniform (official linspace baseline) | path to a RoPElite ranking (.pt)
    chunks_per_head: int = 4  # r: rotary pairs each head keeps; the other d/2 - r are position-free


def uniform_chunks(n_pairs: int, r: int) -> Tensor:
    """The official Uniform baseline: ``torch.linspace(0, d/2 - 1, r, dtype=torch.int)`` (truncating cast)."""
    return torch.linspace(0, n_pairs - 1, r, dtype=torch.int).long()


def load_ranking(path: str | Path) -> tuple[Tensor, int]:
    """(order (L, H, P) long, rounds) from a RoPElite file: the first ``rounds`` chunks of a head's order are its
    greedy selection, in the order they were added."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or "order" not in saved or "rounds" not in saved:
        raise ValueError(f"pe.selection={path} is not a RoPElite ranking (a dict with 'order' and 'rounds', written "
                         f"by scripts/elitekv_convert.py)")
    return saved["order"].long(), int(saved["rounds"])


def save_ranking(path: str | Path, order: Tensor, rounds: int, **meta) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"order": order.long().cpu(), "rounds": int(rounds), **meta}, path)
    return path


def pair_channels(n_pairs: int, layout: str) -> Tensor:
    """(P, 2) channel indices of each rotary pair: (j, j + P) in the half layout, (2j, 2j + 1) interleaved."""
    j = torch.arange(n_pairs)
    return torch.stack([j, j + n_pairs] if layout == "half" else [2 * j, 2 * j + 1], dim=-1)


def rotated_channels(pe: PositionalEncoding, layer: int) -> Tensor:
    """(H|1, head_dim) bool: the channels ``pe`` rotates at ``layer`` (their pair has a nonzero frequency on some
    axis); the others are position-free. Works for every rotary variant (EliteKV, p-RoPE, HoPE, RoPE: none free)."""
    if not pe.is_rotary:
        from rope_lab.pe.registry import available_pes, build_pe

        rotary = [n for n in available_pes() if build_pe({"name": n}).is_rotary]
        raise ValueError(f"backbone.attention=elitekv splits keys by the channels a rotary pe rotates; pe={pe.name} "
                         f"is not rotary. Choose one of {rotary} (EliteKV itself is pe=elitekv).")
    with torch.no_grad():
        pairs = (pe.frequency_plan(pe.inv_freq, layer) != 0).any(dim=1)  # (H|1, P)
    channels = torch.zeros(pairs.shape[0], pe.geometry.head_dim, dtype=torch.bool)
    idx = pair_channels(pe.n_pairs, pe.cfg.pair_layout)
    channels[:, idx[:, 0]] = channels[:, idx[:, 1]] = pairs.cpu()
    return channels


@register_pe("elitekv")
class EliteKV(Rotary):
    """RoPE on ``chunks_per_head`` selected chunks per head (and layer), identity on the rest."""

    Config = EliteKVConfig
    max_axes = 1

    def __init__(self, cfg: EliteKVConfig) -> None:
        if cfg.chunks_per_head < 1:
            raise ValueError(f"EliteKV needs pe.chunks_per_head >= 1 rotary chunks per head; got {cfg.chunks_per_head}")
        if cfg.selection != UNIFORM and not Path(cfg.selection).is_file():
            raise ValueError(f"pe.selection='{cfg.selection}' is neither '{UNIFORM}' nor a file; choose '{UNIFORM}' "
                             f"or the path of a RoPElite ranking written by scripts/elitekv_convert.py")
        super().__init__(cfg)

    def position_map(self, positions, cache=None):
        return positions.coords[..., :1]

    def setup(self, geometry) -> EliteKV:
        super().setup(geometry)
        r, p = self.cfg.chunks_per_head, self.n_pairs
        if r > p:
            raise ValueError(f"pe.chunks_per_head={r} exceeds the {p} rotary chunks (head_dim/2) of a head; "
                             f"choose 1..{p}")
        keep = torch.zeros(1, 1, p)
        if self.cfg.selection == UNIFORM:
            keep[..., uniform_chunks(p, r)] = 1.0
        else:
            keep = self._ranked(geometry, r, p)
        self.per_layer_plan = keep.shape[0] > 1
        self.register_buffer("chunk_mask", keep, persistent=False)  # (L|1, H|1, P) 1 = rotating chunk
        return self

    def _ranked(self, geometry, r: int, p: int) -> Tensor:
        order, rounds = load_ranking(self.cfg.selection)
        want = (geometry.depth, geometry.n_heads, p)
        if tuple(order.shape) != want:
            raise ValueError(f"pe.selection={self.cfg.selection} ranks chunks of shape {tuple(order.shape)} "
                             f"(layers, heads, chunks); this model needs {want}")
        if r > rounds:
            raise ValueError(f"pe.selection={self.cfg.selection} holds {rounds} greedy rounds; pe.chunks_per_head={r} "
                             f"needs at least {r} (rerun scripts/elitekv_convert.py with --chunks {r})")
        if geometry.n_kv_heads != geometry.n_heads:
            raise ValueError(f"a per-head RoPElite selection needs n_kv_heads == n_heads (got {geometry.n_kv_heads} "
                             f"key heads for {geometry.n_heads} heads): use backbone.attention=elitekv, set "
                             f"backbone.n_kv_heads={geometry.n_heads}, or pe.selection={UNIFORM}")
        return torch.zeros(want).scatter_(-1, order[..., :r], 1.0)

    def frequency_plan(self, inv_freq: Tensor, layer: int) -> Tensor:
        keep = self.chunk_mask[layer if self.per_layer_plan else 0]  # (H|1, P)
        return (inv_freq * keep)[:, None, :]

    def selected_chunks(self, layer: int) -> Tensor:
        """(H|1, r) the rotating chunks of each head at ``layer``, ascending (the order of the official gathers)."""
        keep = self.chunk_mask[layer if self.per_layer_plan else 0]
        return torch.sort(torch.topk(keep, self.cfg.chunks_per_head, dim=-1).indices, dim=-1).values

    def extra_repr(self) -> str:
        return super().extra_repr() + f", selection={self.cfg.selection}, chunks_per_head={self.cfg.chunks_per_head}"
