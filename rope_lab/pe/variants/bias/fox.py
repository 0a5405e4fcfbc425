"""FoX, the Forgetting Transformer (Lin, Nikishin, He, Courville; "Forgetting Transformer: Softmax Attention with a
Forget Gate", ICLR 2025, arXiv 2503.02130), ``pe=fox``.

Each token t and query head h has a scalar forget gate ``f_t = sigmoid(w_h.x_t + b_h)`` computed from the block's
input; with ``c_t = sum_{l<=t} log f_l`` (fp32), the logit of query i for key j <= i gains ``c_i - c_j =
sum_{l=j+1..i} log f_l``, added to the scaled logit (the bias itself is not scaled). No RoPE: FoX replaces it. With a
constant gate this is ALiBi with slope ``-log sigmoid(b_h)`` ("data-dependent ALiBi"). Gate kinds as the official
``fgate_type``: ``full`` (data dependent; official init: weights N(0, 0.02), bias 0), ``bias_only`` (learned b_h) and
``fixed`` (frozen b_h); the last two start at ``b_h = -log(expm1(1/T_h))`` with T_h log-spaced in
[decay_time_min, decay_time_max], so that head h forgets with time constant T_h. Reference implementations:
zhixuan-lin/forgetting-transformer and fla's ``naive_forgetting_attn`` (``fla-core``), which tests/pe/test_fox.py
compares against. The KV cache keeps the running sums c_t per layer in ``KVCache.pe_state`` (the official
``FgateDynamicCache`` keeps the log gates), so chunked and token-by-token decoding equal the parallel pass. The
"Pro" block (token shift, QK-norm, output gate) changes the attention block, not positions, and is not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.registry import register_pe
from rope_lab.pe.types import PEState
from rope_lab.pe.variants.bias.logit_bias import TokenLogitBias

GATES = ("full", "bias_only", "fixed")


def decay_time_biases(n_heads: int, time_min: float, time_max: float) -> Tensor:
    """(H,) float64 gate biases b_h with -1/log sigmoid(b_h) = T_h, T_h log-spaced in [time_min, time_max]."""
    times = torch.logspace(math.log10(time_min), math.log10(time_max), n_heads, dtype=torch.float64)
    return -torch.log(torch.expm1(1.0 / times))


@dataclass
class FoXConfig:
    gate: str = "full"  # full (data dependent) | bias_only (learned per-head constant) | fixed (frozen constant)
    gate_bias_init: float = 0.0  # b_h at init for gate=full (official: 0, f ~ 0.5; x-transformers: 5, f ~ 0.993)
    decay_time_min: float = 1.0  # bias_only / fixed: the heads' forgetting time constants T_h (tokens), > 0
    decay_time_max: float = 1024.0  # (no official default: the paper's configs set them per experiment)


def _check(cfg: FoXConfig) -> None:
    if cfg.gate not in GATES:
        raise ValueError(f"pe=fox: unknown gate '{cfg.gate}'; choose one of {list(GATES)}")
    if not 0 < cfg.decay_time_min <= cfg.decay_time_max:
        raise ValueError(f"pe=fox needs 0 < decay_time_min <= decay_time_max; got decay_time_min="
                         f"{cfg.decay_time_min}, decay_time_max={cfg.decay_time_max}")


@register_pe("fox")
class FoX(TokenLogitBias):
    """Cumulative log forget-gate bias computed from the hidden states (causal only)."""

    Config = FoXConfig
    causal_only = True
    axes = None  # positions are the token order itself; coordinates are not read

    def __init__(self, cfg: FoXConfig) -> None:
        _check(cfg)
        super().__init__()
        self.cfg = cfg

    def setup(self, geometry) -> FoX:
        super().setup(geometry)
        g, c = geometry, self.cfg
        if c.gate == "full":
            self.gate_weight = nn.Parameter(torch.randn(g.depth, g.n_heads, g.dim) * 0.02)
            self.gate_bias = nn.Parameter(torch.full((g.depth, g.n_heads), c.gate_bias_init))
        else:
            bias = decay_time_biases(g.n_heads, c.decay_time_min, c.decay_time_max).float().expand(g.depth, -1)
            if c.gate == "bias_only":
                self.gate_bias = nn.Parameter(bias.clone())
            else:
                self.register_buffer("gate_bias", bias.clone())
                self.keep_dtype = ("gate_bias",)  # a frozen gate bias stays fp32 under model.to(bf16)
        return self

    def log_forget(self, x: Tensor, layer: int) -> Tensor:
        """(B, H, N) fp32 log f_t of one layer from its input x (B, N, dim)."""
        bias = self.gate_bias[layer].float()
        if self.cfg.gate != "full":
            return F.logsigmoid(bias)[None, :, None].expand(x.shape[0], -1, x.shape[1])
        with torch.autocast(x.device.type, enabled=False):
            return F.logsigmoid(x.float() @ self.gate_weight[layer].float().T + bias).transpose(1, 2)

    def logit_bias(self, state: PEState, layer: int, n_queries: int, n_keys: int, *, causal: bool,
                   x: Tensor | None, cache: KVCache | None) -> Tensor:
        if not causal:
            raise ValueError("pe=fox sums the forget gates between key and query: it needs causal attention")
        if x is None:
            raise ValueError("pe=fox computes its forget gates from the block's hidden states: the backbone must "
                             "pass x to pe.attend")
        sums = self.log_forget(x, layer).cumsum(-1)  # c_t of this chunk
        keys = sums
        if cache is not None:
            mem = cache.pe_state.setdefault("fox", {})
            past = mem.get(layer)
            if past is not None:
                sums = sums + past[..., -1:]
                keys = torch.cat([past, sums], dim=-1)
            mem[layer] = keys
        return sums[..., :, None] - keys[..., None, -n_keys:]

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"name={self.name}, gate={c.gate}, gate_bias_init={c.gate_bias_init}, "
                f"decay_time=[{c.decay_time_min}, {c.decay_time_max}]")
