"""MLA with decoupled RoPE (rope_lab/backbones/mla.py) against transformers' ``DeepseekV2Attention`` with copied
weights (full and low-rank queries, positions far from 0); KV-cache decoding == one parallel pass; only the
decoupled channels are positional (the scores' rope part is relative, the rest position-free); clear errors; a
``train.py backbone.attention=mla`` run."""

from __future__ import annotations

import re

import pytest
import torch

from rope_lab.backbones.decoder import Decoder, DecoderConfig, latent_attention
from rope_lab.pe import Positions, build_pe
from tests.pe.helpers import parallel_and_incremental
from transformers import DeepseekV2Config
from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Attention, DeepseekV2RotaryEmbedding

DIMS = {"dim": 64, "n_heads": 4, "n_kv_heads": 4, "kv_lora_rank": 16, "qk_nope_head_dim": 12,
        "qk_rope_head_dim": 8, "v_head_dim": 10}


def _pair(q_lora_rank):
    hf_cfg = DeepseekV2Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=16,
                              q_lora_rank=q_lora_rank, qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=10,
                              rope_theta=10000.0, attention_bias=False, max_position_embeddings=4096,
                              rms_norm_eps=1e-6)
    hf_cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    hf = DeepseekV2Attention(hf_cfg, layer_idx=0).double().eval()
    for p in hf.parameters():
        torch.nn.init.normal_(p, std=0.2)
    cfg = DecoderConfig(vocab_size=8, depth=1, mlp_hidden=8, attention="mla", q_lora_rank=q_lora_rank,
                        **{k: v for k, v in DIMS.items()})
    pe = build_pe({"name": "rope", "pair_layout": "interleaved", "kernel": "eager"})
    ours = Decoder(cfg, pe).double().blocks[0].attn.eval()
    ours.load_state_dict(hf.state_dict())  # the same parameter names and layouts
    return hf_cfg, hf, ours


@pytest.mark.parametrize("q_lora_rank", [None, 24])
def test_equals_transformers_deepseek_v2_attention(q_lora_rank):
    hf_cfg, hf, ours = _pair(q_lora_rank)
    x = torch.randn(2, 9, 64, dtype=torch.float64)
    position_ids = torch.arange(1000, 1009)[None].expand(2, -1)
    rotary = DeepseekV2RotaryEmbedding(hf_cfg)
    want, _ = hf(x, attention_mask=None, position_embeddings=rotary(x, position_ids))
    state = ours.pe.prepare(Positions(coords=position_ids.double()[..., None].float()))
    # HF rotates q_pe/k_pe in complex64 (fp32 angles at position ~1000); ours is float64: fp32-level differences
    torch.testing.assert_close(ours(x, state), want, rtol=1e-4, atol=1e-5)


def test_kv_cache_decoding_equals_parallel():
    cfg = DecoderConfig(vocab_size=32, depth=2, mlp_hidden=32, attention="mla", q_lora_rank=24, **DIMS)
    model = Decoder(cfg, build_pe({"name": "rope", "pair_layout": "interleaved", "kernel": "eager"})).eval()
    tokens = torch.randint(0, 32, (2, 10))
    pos = Positions.sequence(2, 10)
    full, decoded, cache = parallel_and_incremental(model, tokens, pos, 6)
    torch.testing.assert_close(decoded, full, rtol=1e-5, atol=1e-5)


def test_only_the_decoupled_channels_are_positional():
    """The PE sees heads of qk_rope + qk_nope channels and rotates exactly the qk_rope leading ones."""
    cfg = DecoderConfig(vocab_size=8, depth=1, mlp_hidden=8, attention="mla", **DIMS)
    model = Decoder(cfg, build_pe({"name": "rope", "pair_layout": "interleaved", "kernel": "eager"}))
    assert model.pe.n_pairs == 4 and model.pe.geometry.head_dim == 20
    q, k = torch.randn(1, 4, 5, 20, dtype=torch.float64), torch.randn(1, 4, 5, 20, dtype=torch.float64)
    rq, rk = model.pe.rotate(q, k, model.pe.prepare(Positions.sequence(1, 5, start=300)), 0)
    assert torch.equal(rq[..., 8:], q[..., 8:]) and not torch.allclose(rq[..., :8], q[..., :8])


def test_unknown_attention_is_a_clear_error():
    from rope_lab.backbones.decoder import ATTENTIONS

    with pytest.raises(ValueError, match=re.escape(f"unknown backbone.attention 'gqa'; choose one of {sorted(ATTENTIONS)}")):
        Decoder(DecoderConfig(vocab_size=8, depth=1, attention="gqa"), build_pe({"name": "rope"}))


def test_latent_attention_defaults_to_the_mha_head_width():
    cfg = DecoderConfig(vocab_size=8, dim=64, n_heads=4, depth=1, attention="mla")
    attn = latent_attention(cfg, 0, build_pe({"name": "rope"}))
    assert (attn.nope, attn.v_dim, attn.rope) == (16, 16, 16)


def test_train_py_runs_mla(tmp_path):
    from tests.test_train import train

    train(tmp_path, "trainer.max_steps=2", "trainer.val_check_interval=2", "backbone.attention=mla",
          "backbone.kv_lora_rank=8", "backbone.qk_rope_head_dim=8", "pe.pair_layout=interleaved")
    (run_dir,) = (tmp_path / "outputs" / "lm_longctx" / "rope").glob("*/*")
    assert (run_dir / "results.json").exists()
