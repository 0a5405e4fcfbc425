"""Rectified flow (Liu et al. 2023; SD3's convention, Esser et al. 2024) and its ODE samplers with CFG.

    x_t = (1 - t) x_0 + t eps,  target v = eps - x_0,  t ~ U(0, 1) or logit-normal(0, 1) (SD3)
    sampling integrates dx/dt = v from t = 1 (noise) to t = 0 with Euler or Heun (Karras et al. 2022, Alg. 1)
    classifier-free guidance (Ho & Salimans 2022): v = v_uncond + g (v_cond - v_uncond), g >= 0
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

SAMPLERS = ("euler", "heun")
T_SAMPLING = ("uniform", "logit_normal")


def sample_t(batch: int, kind: str, generator: torch.Generator | None = None, device=None) -> Tensor:
    if kind == "uniform":
        return torch.rand(batch, generator=generator, device=device)
    if kind == "logit_normal":
        return torch.sigmoid(torch.randn(batch, generator=generator, device=device))
    raise ValueError(f"unknown t_sampling '{kind}'; choose one of {list(T_SAMPLING)}")


def interpolate(x0: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(x_t, velocity target) for data x0, noise and t (B,)."""
    tb = t.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - tb) * x0 + tb * noise, noise - x0


def check_guidance(guidance: float) -> float:
    if not guidance >= 0:
        raise ValueError(f"guidance must be >= 0 (0: unconditional, 1: conditional, >1: CFG); got {guidance}")
    return float(guidance)


def guided(velocity: Callable[[Tensor, Tensor, bool], Tensor], guidance: float) -> Callable[[Tensor, Tensor], Tensor]:
    """velocity(x, t, conditional) -> the CFG velocity; g = 1 or 0 needs a single model call."""
    g = check_guidance(guidance)

    def fn(x: Tensor, t: Tensor) -> Tensor:
        if g == 1.0:
            return velocity(x, t, True)
        v_u = velocity(x, t, False)
        return v_u if g == 0.0 else v_u + g * (velocity(x, t, True) - v_u)

    return fn


def sample(velocity: Callable[[Tensor, Tensor], Tensor], noise: Tensor, steps: int, sampler: str = "euler",
           on_step: Callable[[int], None] | None = None) -> Tensor:
    """Integrate from t = 1 to 0 in ``steps`` uniform steps; ``on_step(i)`` runs before step i (analysis hooks)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler '{sampler}'; choose one of {list(SAMPLERS)}")
    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1; got {steps}")
    ts = torch.linspace(1.0, 0.0, steps + 1, device=noise.device)
    x = noise
    for i in range(steps):
        if on_step is not None:
            on_step(i)
        t, t_next = ts[i], ts[i + 1]
        tb = t.expand(x.shape[0])
        v = velocity(x, tb)
        x_next = x + (t_next - t) * v
        if sampler == "heun" and i < steps - 1:  # Heun's correction, skipped at t = 0 (Karras et al.)
            v2 = velocity(x_next, t_next.expand(x.shape[0]))
            x_next = x + (t_next - t) * 0.5 * (v + v2)
        x = x_next
    return x
