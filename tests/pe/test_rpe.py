"""Query-centric RPE (QCNet-style baseline of DRoPE): equals a naive per-pair loop; SE(2)- and 2*pi-invariant."""

from __future__ import annotations

import math

import pytest
import torch

from rope_lab.pe import AttentionGeometry, KVCache, Positions

from .helpers import build


def _geom(depth=2):
    return AttentionGeometry(dim=32, head_dim=8, n_heads=4, n_kv_heads=4, depth=depth)


def _scene(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(1, n, 2, generator=g) - 0.5) * 50_000.0
    heading = (torch.rand(1, n, 1, generator=g) - 0.5) * 2 * math.pi
    return torch.cat((xy, heading), -1)


def _qkv(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 4, n, 8, generator=g) for _ in range(3)]


def _attend(pe, coords, q, k, v, layer=1, causal=False):
    state = pe.prepare(Positions(coords=coords))
    return pe.attend(q, k, v, state=state, layer=layer, causal=causal)


def test_rpe_equals_naive_per_pair_loop():
    torch.manual_seed(0)
    pe = build("rpe", _geom())
    coords, (q, k, v) = _scene(), _qkv()
    got = _attend(pe, coords, q, k, v)
    n, unit = coords.shape[1], pe.cfg.unit
    want = torch.zeros_like(q)
    with torch.no_grad():
        for h in range(4):
            for i in range(n):
                xi, yi, pi = coords[0, i].tolist()
                logits, values = [], []
                for j in range(n):
                    xj, yj, pj = coords[0, j].tolist()
                    dx = math.cos(pi) * (xj - xi) + math.sin(pi) * (yj - yi)
                    dy = -math.sin(pi) * (xj - xi) + math.cos(pi) * (yj - yi)
                    dist = math.hypot(dx, dy)
                    ca, sa = (dx / dist, dy / dist) if dist > 1e-6 else (1.0, 0.0)
                    feat = torch.tensor([math.log1p(dist / unit), ca, sa, math.cos(pj - pi), math.sin(pj - pi)])
                    r = pe.pair_mlp(feat)
                    rk = pe.to_k[1](r).view(4, 8)[h]
                    rv = pe.to_v[1](r).view(4, 8)[h]
                    logits.append((q[0, h, i] @ (k[0, h, j] + rk)) / math.sqrt(8))
                    values.append(v[0, h, j] + rv)
                attn = torch.stack(logits).softmax(0)
                want[0, h, i] = (attn[:, None] * torch.stack(values)).sum(0)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_rpe_is_invariant_to_scene_translation_rotation_and_full_turns():
    pe = build("rpe", _geom())
    coords, (q, k, v) = _scene(), _qkv()
    a, shift = 1.1, torch.tensor([7_000.0, -3_000.0])
    moved = coords.clone()
    moved[..., 0] = math.cos(a) * coords[..., 0] - math.sin(a) * coords[..., 1] + shift[0]
    moved[..., 1] = math.sin(a) * coords[..., 0] + math.cos(a) * coords[..., 1] + shift[1]
    moved[..., 2] += a
    moved[0, 2, 2] += 2 * math.pi
    torch.testing.assert_close(_attend(pe, moved, q, k, v), _attend(pe, coords, q, k, v), rtol=1e-4, atol=1e-4)
    changed = coords.clone()
    changed[0, 2, 2] += 0.7
    assert (_attend(pe, changed, q, k, v) - _attend(pe, coords, q, k, v)).abs().max() > 1e-4


def test_rpe_kv_cache_decoding_equals_parallel_causal():
    pe = build("rpe", _geom(depth=1))
    coords, (q, k, v) = _scene(), _qkv()
    full = _attend(pe, coords, q, k, v, layer=0, causal=True)
    cache, steps = KVCache(1), []
    for t in range(coords.shape[1]):
        state = pe.prepare(Positions(coords=coords[:, t : t + 1]), cache)
        steps.append(pe.attend(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state=state, layer=0,
                               causal=True, cache=cache))
    torch.testing.assert_close(torch.cat(steps, 2), full, rtol=1e-5, atol=1e-5)


def test_rpe_padding_segments_do_not_leak():
    pe = build("rpe", _geom())
    coords, (q, k, v) = _scene(), _qkv()
    seg = torch.tensor([[0, 0, 0, 0, 1, 1]])
    state = pe.prepare(Positions(coords=coords, segment=seg))
    out = pe.attend(q, k, v, state=state, layer=0, causal=False)
    alone = _attend(pe, coords[:, :4], q[:, :, :4], k[:, :, :4], v[:, :, :4], layer=0)
    torch.testing.assert_close(out[:, :, :4], alone, rtol=1e-5, atol=1e-5)


def test_rpe_memory_is_quadratic_in_agents():
    pe = build("rpe", _geom())
    small = pe.prepare(Positions(coords=_scene(8))).pairs
    large = pe.prepare(Positions(coords=_scene(16))).pairs
    assert large.numel() == 4 * small.numel()


def test_rpe_bad_config():
    with pytest.raises(ValueError, match="hidden"):
        build("rpe", _geom(), hidden=0)
