"""Precise rotary angles: ``coords @ freq`` reduced modulo 2*pi with fp32 arithmetic only.

A plain fp32 product ``p * f`` is correctly rounded, but at p ~ 1e6 its ulp is 0.06 rad, so cos/sin of it are
off by up to 0.03 (the 2-D/3-D ids of M-RoPE/VideoRoPE and 1M-token contexts reach such positions). We work in
revolutions ``g = f / (2*pi)`` instead and split both factors so that every large partial product is exact in
fp32 (Dekker-style splitting; the same idea as Cody-Waite argument reduction):

    g = g1 + g2 + g3           g1, g2 carry <= 12 significant bits each (split once per plan, in float64)
    p = hi + mid + fr          hi = 4096 * floor(p / 4096), mid = floor(p) - hi in [0, 4096), fr in [0, 1)

hi*g1, hi*g2, mid*g1, mid*g2 are exact (<= 24 significant bits each for |p| < 2^24), so their fractional parts
are exact too; the remaining terms are small. The result is the reduced angle in [-pi, pi] whose error is a few
fp32 ulps of pi (~1e-6 rad), independent of the position, instead of ulp(p * f). The same formula runs in the
eager, compiled and Triton backends (it survives reassociation and FMA contraction: no step relies on
cancellation of rounding errors).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_SPLIT_BITS = 12
_BLOCK = float(2**_SPLIT_BITS)
TWO_PI = 2.0 * math.pi


def _round_bits(x: Tensor, bits: int) -> Tensor:
    """x (float64) rounded to at most ``bits`` significant bits (float ops only: inductor-safe, no frexp).

    floor(log2|x|) may be one too small next to a power of two; the caller leaves one bit of margin for that.
    """
    tiny = x.abs() < 1e-300
    scale = torch.exp2(bits - 1 - torch.floor(torch.log2(torch.where(tiny, 1.0, x.abs()))))
    return torch.where(tiny, 0.0, torch.round(x * scale) / scale)


def split_plan(freq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """freq (any shape, rad per unit position) -> (g1, g2, g3) fp32 revolutions, g1 + g2 + g3 = freq / 2pi.

    Done once per plan (per forward, or per layer for per-layer plans) on a tensor of H*A*P numbers.
    """
    with torch.no_grad():
        g = freq.detach().double() / TWO_PI
        g1 = _round_bits(g, _SPLIT_BITS - 1)  # <= 12 significant bits, see _round_bits
        g2 = _round_bits(g - g1, _SPLIT_BITS - 1)
        g3 = g - g1 - g2
        return g1.float(), g2.float(), g3.float()


def _frac(x: Tensor) -> Tensor:
    """x minus a nearest integer (exact in fp32 for |x| < 2^23): result in about [-0.5, 0.5]."""
    return x - torch.floor(x + 0.5)


def split_positions(coords: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """coords (fp32) -> (hi, mid, fr), exact: coords == hi + mid + fr."""
    p = coords.float()
    whole = torch.floor(p)
    hi = torch.floor(p * (1.0 / _BLOCK)) * _BLOCK
    return hi, whole - hi, p - whole


def reduced_angles(coords: Tensor, plan: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """coords (B, N, A) x split plan (H|1, A, P) -> angles (B, H|1, N, P) fp32 in [-pi, pi], no grad.

    Equal to ``(coords @ freq) mod 2pi`` (computed exactly) up to a few fp32 ulps of pi.
    """
    g1, g2, g3 = (g[None, :, None, :, :] for g in plan)  # (1, H, 1, A, P)
    with torch.no_grad(), torch.autocast(device_type=coords.device.type, enabled=False):
        hi, mid, fr = (t[:, None, :, :, None] for t in split_positions(coords))  # (B, 1, N, A, 1)
        rev = _frac(hi * g1) + _frac(hi * g2) + _frac(mid * g1) + _frac(mid * g2)
        rev = rev + (hi + mid) * g3 + fr * (g1 + g2 + g3)
        return _frac(rev.sum(-2)) * TWO_PI


def compute_angles(coords: Tensor, freq: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """coords (B, N, A) x freq (H|1, A, P) -> angles (B, H|1, N, P) = ``coords @ freq`` in ``dtype``, autocast
    disabled, not reduced (the naive product: RoFormer's angle, and exact in float64)."""
    with torch.autocast(device_type=coords.device.type, enabled=False):
        return torch.einsum("bna,hap->bhnp", coords.to(dtype), freq.to(dtype))


def precise_angles(coords: Tensor, freq: Tensor) -> Tensor:
    """Angles (B, H|1, N, P) fp32 whose value is the precisely reduced angle and whose gradient is that of
    ``coords @ freq`` (so learnable frequencies, e.g. RoPE-Mixed, train exactly as with the naive product)."""
    with torch.autocast(device_type=coords.device.type, enabled=False):
        precise = reduced_angles(coords, split_plan(freq))
        if not (freq.requires_grad or coords.requires_grad) or not torch.is_grad_enabled():
            return precise
        naive = compute_angles(coords, freq)
        return naive + (precise - naive).detach()
