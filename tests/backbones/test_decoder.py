"""The LLaMA decoder against transformers' LlamaForCausalLM (same weights -> same logits), GQA and KV cache."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.backbones.hf_convert import state_dict_to_hf
from rope_lab.pe import Positions, build_pe
from rope_lab.pe.kernels import OnTheFly


def _pair(n_kv_heads: int, base: float = 10000.0):
    torch.manual_seed(0)
    ours = Decoder(DecoderConfig(vocab_size=97, dim=64, depth=2, n_heads=4, n_kv_heads=n_kv_heads, mlp_hidden=96),
                   build_pe({"name": "rope", "base": base, "pair_layout": "half"})).eval()
    hf_cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=n_kv_heads, rms_norm_eps=1e-6, rope_theta=base,
                         max_position_embeddings=4096, tie_word_embeddings=False, attention_bias=False)
    hf = LlamaForCausalLM(hf_cfg).eval()
    _copy_weights(ours, hf)
    return ours, hf


def _copy_weights(ours: Decoder, hf: LlamaForCausalLM) -> None:
    sd = state_dict_to_hf(ours.state_dict(), ours.cfg)
    missing, unexpected = hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_logits_equal_hf_llama(n_kv_heads):
    ours, hf = _pair(n_kv_heads)
    tokens = torch.randint(0, 97, (2, 33))
    with torch.no_grad():
        ref = hf(input_ids=tokens).logits
        got = ours(tokens, Positions.sequence(2, 33))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_logits_equal_hf_llama_with_position_offset():
    ours, hf = _pair(2, base=500000.0)
    tokens = torch.randint(0, 97, (1, 16))
    pos = torch.arange(3000, 3016)[None]
    with torch.no_grad():
        ref = hf(input_ids=tokens, position_ids=pos).logits
        got = ours(tokens, Positions(pos.float()))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_incremental_decoding_equals_hf_generate():
    ours, hf = _pair(2)
    prompt = torch.randint(0, 97, (1, 7))
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
        cache, seq = ours.new_cache(), prompt
        logits = ours(prompt, Positions.sequence(1, 7), cache)
        for step in range(6):
            nxt = logits[:, -1:].argmax(-1)
            seq = torch.cat([seq, nxt], dim=1)
            logits = ours(nxt, Positions.sequence(1, 1, start=7 + step), cache)
    assert torch.equal(seq, ref)


def test_bad_head_counts_are_clear_errors():
    with pytest.raises(ValueError, match="n_heads by n_kv_heads 3"):
        Decoder(DecoderConfig(dim=64, n_heads=4, n_kv_heads=3), build_pe({"name": "rope"}))


def test_no_variant_branching_outside_pe():
    """DESIGN.md: only rope_lab/pe knows variants (a grep, as the before-stop checklist does)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "rope_lab"
    pattern = re.compile(r"pe_type ?==|pe\.name ?==|isinstance\([^)]*(RoPE|Rotary|VideoRoPE|MRoPE)")
    offenders = [f"{p}:{i}" for sub in ("backbones", "tasks") for p in (root / sub).rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


@pytest.mark.gpu
def test_cuda_triton_path_equals_hf_llama_and_trains_in_bf16():
    """On CUDA, ``pe.kernel=auto`` rotates with the Triton kernel: same logits as LlamaForCausalLM there, and a
    bf16-autocast training step gives finite gradients equal to the eager backend's to bf16 rounding."""
    ours, hf = _pair(2)
    ours, hf = ours.cuda(), hf.cuda()
    tokens = torch.randint(0, 97, (2, 65), device="cuda")
    pos = Positions.sequence(2, 65).to("cuda")
    assert isinstance(ours.pe.prepare(pos).rotation, OnTheFly)
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens, pos), hf(input_ids=tokens).logits, rtol=1e-4, atol=1e-4)
    grads = {}
    for kernel in ("auto", "eager"):
        ours.pe.cfg.kernel = kernel
        ours.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = ours(tokens, pos)
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten()).backward()
        grads[kernel] = torch.cat([p.grad.flatten() for p in ours.parameters() if p.grad is not None])
    assert torch.isfinite(grads["auto"]).all()
    torch.testing.assert_close(grads["auto"], grads["eager"], rtol=2e-2, atol=2e-3)
