"""A²ATS (rope_lab/pe/variants/attention/a2ats.py): the WRoPE score equals the exact RoPE logit at distance w (HF
LLaMA's and GPT-J's ``apply_rotary_pos_emb`` as the reference rotations); retrieval keeps the sinks and the local window
and picks the top-k WRoPE scores per head, united over the GQA group (brute force); codes are the query-aware nearest
centroids; top-k covering everything is plain RoPE attention; KV-cache decoding equals one parallel pass; clear
errors."""

from __future__ import annotations

import math

import pytest
import torch

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import Positions, build_pe
from rope_lab.pe.frequencies import rope_inv_freq
from rope_lab.pe.variants.attention.a2ats_codebooks import CodebookFile, assign_codes, keyspace_codebook
from rope_lab.pe.variants.attention.a2ats_retrieval import Budget, retrieval_mask, wrope_query

from .helpers import build, parallel_and_incremental, pe_config


def _random_codebooks(path, depth=2, hkv=2, d=8, size=16, relative_pos=2048, seed=0) -> str:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(depth, hkv, d, d, generator=g, dtype=torch.float64)
    chol = torch.linalg.cholesky(a @ a.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=torch.float64))
    centroids = torch.randn(depth, hkv, size, d, generator=g, dtype=torch.float64) * 3
    CodebookFile(centroids, chol, relative_pos, True, 0).save(path)
    return str(path)


def _decoder(name="a2ats", seed=0, **pe):
    torch.manual_seed(seed)
    cfg = DecoderConfig(vocab_size=40, dim=32, depth=2, n_heads=4, n_kv_heads=2, mlp_hidden=48)
    return Decoder(cfg, build_pe(pe_config(name, **pe))).double().eval()


@pytest.mark.parametrize("w", [2048, 5])
def test_wrope_score_equals_the_exact_rope_logit_at_distance_w_hf_llama(w):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    g = torch.Generator().manual_seed(0)
    d, m = 16, w + 37
    q, k = (torch.randn(1, 2, 1, d, generator=g, dtype=torch.float64) for _ in range(2))
    inv32 = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))  # HF's default, in fp32
    inv = inv32.double()
    emb = lambda pos: torch.cat([pos * inv, pos * inv])[None, None]  # noqa: E731 - HF cos/sin layout (B, N, D)
    rq, _ = apply_rotary_pos_emb(q, q, emb(m).cos(), emb(m).sin())
    rk, _ = apply_rotary_pos_emb(k, k, emb(m - w).cos(), emb(m - w).sin())
    torch.testing.assert_close(rope_inv_freq(d, 10000.0), inv32, rtol=0, atol=0)
    got = wrope_query(q, inv32, w, "half") @ k.transpose(-1, -2)
    torch.testing.assert_close(got, rq @ rk.transpose(-1, -2), rtol=1e-10, atol=1e-10)


def test_wrope_score_equals_the_exact_rope_logit_at_distance_w_hf_gptj_interleaved():
    from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb

    g = torch.Generator().manual_seed(1)
    d, w, m = 16, 2048, 3000
    q, k = (torch.randn(1, 1, 2, d, generator=g, dtype=torch.float64) for _ in range(2))  # GPT-J: (B, N, H, D)
    inv32 = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    inv = inv32.double()
    def rot(x, pos):
        return apply_rotary_pos_emb(x, (pos * inv).sin()[None, None], (pos * inv).cos()[None, None])

    want = (rot(q, m) * rot(k, m - w)).sum(-1)
    got = (wrope_query(q.transpose(1, 2), inv32, w, "interleaved") * k.transpose(1, 2)).sum(-1)
    torch.testing.assert_close(got.transpose(1, 2), want, rtol=1e-10, atol=1e-10)


def _brute_force_keep(q_w, k_hat, window, sinks, fraction):
    """Per query head: the floor(fraction * seq_len) best candidates by q.k/sqrt(d); union over the group."""
    _, h, n, d = q_w.shape
    group = h // k_hat.shape[1]
    keep = torch.zeros(1, h, n, n, dtype=torch.bool)
    for kv in range(k_hat.shape[1]):
        for i in range(n):
            cand = [j for j in range(i + 1) if i - j >= window and j >= sinks]
            chosen = set(j for j in range(i + 1) if j not in cand)
            for head in range(kv * group, (kv + 1) * group):
                score = {j: float(q_w[0, head, i] @ k_hat[0, kv, j]) / math.sqrt(d) for j in cand}
                chosen |= set(sorted(cand, key=lambda j: -score[j])[: int(fraction * (i + 1))])
            keep[0, kv * group : (kv + 1) * group, i, sorted(chosen)] = True
    return keep


def test_retrieval_is_top_k_wrope_scores_per_head_united_over_the_group_plus_sinks_and_window():
    g = torch.Generator().manual_seed(2)
    q_w, k_hat = torch.randn(1, 4, 40, 8, generator=g, dtype=torch.float64), torch.randn(1, 2, 40, 8, generator=g,
                                                                                          dtype=torch.float64)
    got = retrieval_mask(q_w, k_hat, 0, local_window=4, sinks=2, budget=Budget(0.25))
    assert torch.equal(got, _brute_force_keep(q_w, k_hat, 4, 2, 0.25))
    # the last 30 queries of a cache: the same rows
    tail = retrieval_mask(q_w[:, :, 10:], k_hat, 10, local_window=4, sinks=2, budget=Budget(0.25))
    assert torch.equal(tail, got[:, :, 10:])


def test_sinks_and_window_are_always_attended_and_a_token_budget_is_exact():
    g = torch.Generator().manual_seed(3)
    q_w, k_hat = torch.randn(1, 2, 30, 8, generator=g), torch.randn(1, 2, 30, 8, generator=g)
    i, j = torch.arange(30)[:, None], torch.arange(30)[None, :]
    always = (j <= i) & ((i - j < 5) | (j < 3))
    none = retrieval_mask(q_w, k_hat, 0, local_window=5, sinks=3, budget=Budget(0.0))
    assert torch.equal(none[0, 0], always) and torch.equal(none[0, 1], always)
    fixed = retrieval_mask(q_w, k_hat, 0, local_window=5, sinks=3, budget=Budget(0.0, tokens=4))
    assert (fixed[0] | ~always).all() and not (fixed[0] & (j > i)).any()
    extra = (fixed[0] & ~always).sum(-1)
    candidates = ((j <= i) & ~always).sum(-1)
    assert torch.equal(extra, torch.minimum(candidates, torch.tensor(4)).expand_as(extra))


def test_codes_minimise_the_query_weighted_error_and_codebook_is_c_tilde_l_inverse(tmp_path):
    book = CodebookFile.load(_random_codebooks(tmp_path / "cb.pt", d=6, size=20))
    chol, cent = book.cholesky[1].double(), book.centroids[1].double()
    keys = torch.randn(1, 2, 50, 6, dtype=torch.float64) * 3
    codes = assign_codes(keys, chol, cent)
    space = keyspace_codebook(cent, chol)
    torch.testing.assert_close(space @ chol, cent)
    h = chol @ chol.transpose(-1, -2)
    diff = keys[0][:, :, None, :] - space[:, None, :, :]  # (Hkv, N, C, D)
    weighted = torch.einsum("hncd,hde,hnce->hnc", diff, h, diff)
    assert torch.equal(codes[0], weighted.argmin(-1))


@pytest.mark.parametrize("codebooks", [False, True])
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_topk_covering_everything_is_plain_rope_attention(tmp_path, codebooks, layout):
    book = _random_codebooks(tmp_path / "cb.pt") if codebooks else None
    rope = _decoder("rope", pair_layout=layout)
    a2ats = _decoder(topk=1.0, local_window=1, sinks=0, codebooks=book, pair_layout=layout)
    a2ats.load_state_dict(rope.state_dict())
    tokens, pos = torch.randint(0, 40, (2, 30)), Positions.sequence(2, 30)
    with torch.no_grad():
        torch.testing.assert_close(a2ats(tokens, pos), rope(tokens, pos), rtol=1e-10, atol=1e-10)
        assert not torch.allclose(_sparse(rope)(tokens, pos), rope(tokens, pos), atol=1e-3)


def _sparse(rope, **pe):
    model = _decoder(topk=0.1, local_window=3, sinks=2, **pe)
    model.load_state_dict(rope.state_dict())
    return model


@pytest.mark.parametrize("over", [{}, {"topk_tokens": 2}, {"codebooks": "file"}])
def test_kv_cache_decoding_equals_one_parallel_pass(tmp_path, over):
    over = {k: _random_codebooks(tmp_path / "cb.pt") if v == "file" else v for k, v in over.items()}
    model = _sparse(_decoder("rope"), **over)
    # distinct tokens: layer 0's pre-RoPE keys of a repeated token are equal, and such exact ties would be broken
    # by last-bit differences between the two paths' float64 sums
    tokens, pos = torch.stack([torch.randperm(40)[:24] for _ in range(2)]), Positions.sequence(2, 24)
    full, decoded, cache = parallel_and_incremental(model, tokens, pos, 9, 13)
    torch.testing.assert_close(decoded, full, rtol=1e-10, atol=1e-10)
    stored = cache.pe_state["a2ats"][1]
    assert stored.shape[:3] == (2, 2, 24) and (stored.dtype == torch.long) == ("codebooks" in over)


def test_dense_prefill_attends_densely_in_chunks_as_the_reference_generate():
    rope = _decoder("rope")
    model = _sparse(rope, dense_prefill=True)
    tokens, pos = torch.randint(0, 40, (1, 20)), Positions.sequence(1, 20)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, pos), rope(tokens, pos), rtol=1e-10, atol=1e-10)
        cache, dense = model.new_cache(), rope.new_cache()
        model(tokens[:, :19], pos.slice(0, 19), cache), rope(tokens[:, :19], pos.slice(0, 19), dense)
        step, want = model(tokens[:, 19:], pos.slice(19, 20), cache), rope(tokens[:, 19:], pos.slice(19, 20), dense)
    assert not torch.allclose(step, want, atol=1e-3)  # a decoded token retrieves


@pytest.mark.parametrize("over,match", [
    ({"topk": 1.5}, r"pe.topk in \[0, 1\].*got topk=1.5"),
    ({"topk_tokens": -1}, r"pe.topk_tokens >= 0; got topk_tokens=-1"),
    ({"local_window": 0}, r"pe.local_window >= 1; got local_window=0"),
    ({"sinks": -2}, r"pe.sinks >= 0; got sinks=-2"),
    ({"psc": True}, r"cannot combine with pe.psc=true"),
])
def test_bad_values_are_named(over, match):
    with pytest.raises(ValueError, match=match):
        build("a2ats", **over)


def test_codebook_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pe.codebooks=.*missing.pt: no such file.*rope_lab.analysis.a2ats"):
        build("a2ats", codebooks=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match=r"calibrated for \(depth, n_kv_heads, head_dim\) = \(2, 2, 8\).*\(2, 2, 16\)"):
        build("a2ats", codebooks=_random_codebooks(tmp_path / "a.pt", d=8))
    with pytest.raises(ValueError, match=r"calibrated with relative_pos=64; set pe.relative_pos=64"):
        build("a2ats", codebooks=_random_codebooks(tmp_path / "b.pt", d=16, relative_pos=64))
    torch.save({"centroids": torch.zeros(1)}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="not an A²ATS codebook file"):
        build("a2ats", codebooks=str(tmp_path / "c.pt"))


def test_packed_rows_and_bidirectional_attention_are_refused():
    pe = build("a2ats")
    q = k = v = torch.randn(1, 2, 4, 16)
    pos = Positions(torch.arange(4.0)[None], segment=torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="packed rows"):
        pe.attend(q, k, v, state=pe.prepare(pos), layer=0, causal=True)
    with pytest.raises(ValueError, match="needs causal attention"):
        pe.attend(q, k, v, state=pe.prepare(Positions.sequence(1, 4)), layer=0, causal=False)
    with pytest.raises(ValueError, match="only works with causal"):
        pe.check_compatible(1, causal=False)


def test_codebooks_stay_fp32_in_a_bf16_model_and_are_not_checkpointed(tmp_path):
    model = _decoder(topk=0.2, local_window=2, sinks=1, codebooks=_random_codebooks(tmp_path / "cb.pt"))
    assert not [k for k in model.state_dict() if k.startswith("pe.vq_")]  # a RoPE checkpoint loads unchanged
    model = model.to(torch.bfloat16)
    assert model.pe.vq_centroids.dtype == torch.float32 and model.pe.vq_codebook.dtype == torch.float32
    with torch.no_grad():
        logits = model(torch.randint(0, 40, (2, 16)), Positions.sequence(2, 16))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
