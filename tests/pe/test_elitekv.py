"""pe=elitekv (RoPElite, arXiv 2503.01586): the selected chunks rotate exactly as transformers' LLaMA / GPT-J rotary
embedding does, every other channel is left untouched; the uniform baseline is the official linspace; per-layer,
per-head selections from a RoPElite file; clear errors."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_apply
from transformers.models.gptj.modeling_gptj import create_sinusoidal_positions
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from rope_lab.pe import Positions, build_pe
from rope_lab.pe.variants.text.elitekv import rotated_channels, save_ranking, uniform_chunks

from .helpers import build, geometry

POS = torch.tensor([[0.0, 1, 7, 100, 1000, 4095]])


def _ranking(tmp_path, depth=2, heads=2, pairs=8, rounds=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.stack([torch.randperm(pairs, generator=g) for _ in range(heads)])
                         for _ in range(depth)])
    return order, save_ranking(tmp_path / "sel.pt", order, rounds)


def _rotate(pe, q, k, layer=0):
    return pe.rotate(q, k, pe.prepare(Positions(POS)), layer)


def test_uniform_is_the_official_linspace():
    # torch.linspace(0, 63, 12, dtype=torch.int): LLaMA-2-7B's 64 chunks, the official default half_of_rope_dim=12
    assert uniform_chunks(64, 12).tolist() == [0, 5, 11, 17, 22, 28, 34, 40, 45, 51, 57, 63]
    assert uniform_chunks(8, 4).tolist() == [0, 2, 4, 7]
    assert uniform_chunks(16, 16).tolist() == list(range(16))


@pytest.mark.parametrize("per_head", [False, True])
def test_selected_chunks_rotate_as_transformers_llama_others_untouched(tmp_path, per_head):
    g = geometry(dim=64, n_heads=2)  # head_dim 32: 16 chunks
    selection = str(_ranking(tmp_path, heads=2, pairs=16, rounds=5)[1]) if per_head else "uniform"
    pe = build("elitekv", g, selection=selection, chunks_per_head=5, kernel="eager")
    hf = LlamaRotaryEmbedding(LlamaConfig(hidden_size=64, num_attention_heads=2, max_position_embeddings=8192))
    q, k = torch.randn(2, 1, 2, 6, 32, dtype=torch.float64).unbind(0)
    # HF's frequencies and rotate_half; the angles in float64 (HF's own float32 product is off by ~1e-4 at 4095)
    freqs = POS.double()[..., None] * hf.inv_freq.double()
    emb = torch.cat([freqs, freqs], dim=-1)
    ref_q, ref_k = apply_rotary_pos_emb(q, k, emb.cos(), emb.sin())
    for layer in range(2):
        ours_q, ours_k = _rotate(pe, q, k, layer)
        for h, chunks in enumerate(pe.selected_chunks(layer).expand(2, -1)):
            rot = torch.cat([chunks, chunks + 16])
            free = torch.ones(32, dtype=torch.bool)
            free[rot] = False
            torch.testing.assert_close(ours_q[:, h][..., rot], ref_q[:, h][..., rot], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(ours_k[:, h][..., rot], ref_k[:, h][..., rot], rtol=1e-10, atol=1e-10)
            assert torch.equal(ours_q[:, h][..., free], q[:, h][..., free])
            assert torch.equal(ours_k[:, h][..., free], k[:, h][..., free])


def test_interleaved_chunks_rotate_as_transformers_gptj():
    pe = build("elitekv", geometry(dim=32, n_heads=2), chunks_per_head=3, pair_layout="interleaved", kernel="eager")
    x = torch.randn(1, 6, 2, 16, dtype=torch.float64)  # GPT-J layout (B, N, H, D)
    pos = POS[:, :4]  # GPT-J's table is float32: small positions keep it exact to ~1e-7
    x = x[:, :4]
    table = create_sinusoidal_positions(8192, 16).double()[pos.long()]
    sin, cos = torch.split(table, 8, dim=-1)  # the table is [sin | cos]
    ref = gptj_apply(x, sin, cos).transpose(1, 2)
    ours, _ = pe.rotate(x.transpose(1, 2), x.transpose(1, 2), pe.prepare(Positions(pos)), 0)
    rot = torch.stack([2 * uniform_chunks(8, 3), 2 * uniform_chunks(8, 3) + 1], -1).flatten()
    free = torch.ones(16, dtype=torch.bool)
    free[rot] = False
    torch.testing.assert_close(ours[..., rot], ref[..., rot], rtol=1e-5, atol=1e-5)
    assert torch.equal(ours[..., free], x.transpose(1, 2)[..., free])


def test_per_head_plans_follow_the_ranking_per_layer(tmp_path):
    order, path = _ranking(tmp_path)
    pe = build("elitekv", selection=str(path), chunks_per_head=3)
    assert pe.per_layer_plan
    for layer in range(2):
        plan = pe.frequency_plan(pe.inv_freq, layer)  # (H, 1, P)
        assert plan.shape == (2, 1, 8)
        for h in range(2):
            nonzero = plan[h, 0].nonzero().flatten().tolist()
            assert nonzero == sorted(order[layer, h, :3].tolist())
            torch.testing.assert_close(plan[h, 0, nonzero], pe.inv_freq[nonzero])  # original theta_c


def test_rotated_channels_of_other_rotary_variants():
    assert rotated_channels(build("rope"), 0).all()
    p_rope = rotated_channels(build("p_rope", p=0.5), 0)[0]  # head_dim 16: the 4 highest-frequency pairs rotate
    assert p_rope.tolist() == [True] * 4 + [False] * 4 + [True] * 4 + [False] * 4
    with pytest.raises(ValueError, match=r"pe=nope is not rotary. Choose one of \[.*'elitekv'"):
        rotated_channels(build("nope"), 0)


def test_errors_name_the_value_and_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"chunks_per_head=9 exceeds the 8 rotary chunks .* choose 1..8"):
        build("elitekv", chunks_per_head=9)
    with pytest.raises(ValueError, match=r"chunks_per_head >= 1 .* got 0"):
        build_pe({"name": "elitekv", "chunks_per_head": 0})
    with pytest.raises(ValueError, match=r"pe.selection='greedy' is neither 'uniform' nor a file; choose 'uniform'"):
        build_pe({"name": "elitekv", "selection": "greedy"})
    _, path = _ranking(tmp_path, rounds=2)
    with pytest.raises(ValueError, match=r"holds 2 greedy rounds; pe.chunks_per_head=3 needs at least 3"):
        build("elitekv", selection=str(path), chunks_per_head=3)
    with pytest.raises(ValueError, match=r"shape \(2, 2, 8\) .* this model needs \(3, 2, 8\)"):
        build("elitekv", geometry(depth=3), selection=str(path), chunks_per_head=2)
    with pytest.raises(ValueError, match=r"n_kv_heads == n_heads \(got 1 key heads for 2 heads\).*attention=elitekv"):
        build("elitekv", geometry(n_kv_heads=1), selection=str(path), chunks_per_head=2)
    torch.save({"rank": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a RoPElite ranking"):
        build("elitekv", selection=str(tmp_path / "other.pt"))


def test_uniform_selection_allows_grouped_query_heads():
    pe = build("elitekv", geometry(n_kv_heads=1), chunks_per_head=2)
    q, k = torch.randn(1, 2, 6, 16), torch.randn(1, 1, 6, 16)
    rq, rk = _rotate(pe, q, k)
    assert rq.shape == q.shape and rk.shape == k.shape
