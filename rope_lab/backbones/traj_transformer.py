"""Agent transformer for multi-modal trajectory prediction (the DRoPE paper's setting, Zhao et al. arXiv 2503.15029,
at CPU scale; decoder in the style of QCNet / MTR: K modes trained winner-takes-all with a mode classifier).

1. Per-agent temporal encoding: each agent's history, expressed in its own frame (task positions.py), goes
   through an MLP (agents never see each other here).
2. Attention across agents (pre-norm LLaMA blocks, not causal): the positions of each agent's current state
   (x, y, heading) reach attention only through the PE interface (embed / attend) -- rotary variants rotate
   q/k, RPE adds pair features, APE adds an embedding, NoPE does nothing.
3. K-mode decoder: per agent, K future trajectories in the agent's own frame (cumulative positions, in the
   task's model units) and K mode logits.
Query-centric: the scene is never rotated into one agent's frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from rope_lab.backbones.blocks import DecoderBlock, RMSNorm
from rope_lab.backbones.registry import register_backbone
from rope_lab.pe import AttentionGeometry, PositionalEncoding, Positions


@dataclass
class TrajTransformerConfig:
    dim: int = 64
    depth: int = 2
    n_heads: int = 4
    mlp_hidden: int = 176
    norm_eps: float = 1e-6
    init_std: float = 0.02
    # filled from the task's spec when built through the registry; set them for standalone use
    in_features: int = 30
    future_steps: int = 12
    num_modes: int = 6


@register_backbone("traj_transformer")
class TrajTransformer(nn.Module):
    """(B, N, in_features) agent histories + Positions (B, N, 3) -> {"traj": (B, N, K, F, 2), "logits": (B, N, K)}."""

    Config = TrajTransformerConfig

    def __init__(self, cfg: TrajTransformerConfig, pe: PositionalEncoding, spec=None) -> None:
        super().__init__()
        if spec is not None:
            extra = spec.extra
            cfg = TrajTransformerConfig(**{**cfg.__dict__, **{k: extra[k] for k in
                                                              ("in_features", "future_steps", "num_modes") if k in extra}})
        if cfg.num_modes <= 0 or cfg.future_steps <= 0 or cfg.in_features <= 0:
            raise ValueError(f"traj_transformer needs num_modes, future_steps, in_features > 0; got "
                             f"{cfg.num_modes}, {cfg.future_steps}, {cfg.in_features}")
        self.cfg = cfg
        self.pe = pe.setup(AttentionGeometry(cfg.dim, cfg.dim // cfg.n_heads, cfg.n_heads, cfg.n_heads, cfg.depth))
        self.encoder = nn.Sequential(nn.Linear(cfg.in_features, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim))
        self.blocks = nn.ModuleList(
            DecoderBlock(cfg.dim, cfg.n_heads, cfg.n_heads, cfg.mlp_hidden, i, self.pe, False, cfg.norm_eps)
            for i in range(cfg.depth)
        )
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.traj_head = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(),
                                       nn.Linear(cfg.dim, cfg.num_modes * cfg.future_steps * 2))
        self.mode_head = nn.Linear(cfg.dim, cfg.num_modes)
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear) and not any(module is m for m in self.pe.modules()):
            nn.init.normal_(module.weight, std=self.cfg.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, features: Tensor, positions: Positions) -> dict[str, Tensor]:
        b, n, _ = features.shape
        x = self.encoder(features)
        state = self.pe.prepare(positions)
        x = self.pe.embed(x, state)
        for block in self.blocks:
            x = block(x, state)
        x = self.norm(x)
        traj = self.traj_head(x).view(b, n, self.cfg.num_modes, self.cfg.future_steps, 2)
        return {"traj": traj, "logits": self.mode_head(x)}
