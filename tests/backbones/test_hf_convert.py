"""rope_lab/backbones/hf_convert.py: HF -> our decoder -> HF gives back the same tensors; our decoder built from a
HF checkpoint gives the HF model's logits (Llama, Qwen2's q/k/v biases, Mistral, tied embeddings, a rope scaling);
an interleaved-pair decoder exported to HF's rotate-half layout keeps its logits."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.backbones.hf_convert import (decoder_config_from_hf, decoder_from_hf, decoder_to_hf,
                                           state_dict_from_hf, state_dict_to_hf)
from rope_lab.pe import Positions, build_pe

from .hf_checkpoints import VOCAB, tiny_config

YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8}
MODELS = {"llama": ("llama", None, {}), "qwen2": ("qwen2", None, {}), "mistral": ("mistral", None, {}),
          "llama-tied-yarn": ("llama", YARN, {"tie_word_embeddings": True})}


def hf_model(name: str):
    family, rope, overrides = MODELS[name]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(family, rope, **overrides), attn_implementation="sdpa")
    with torch.no_grad():
        for key, p in model.named_parameters():  # HF starts norms at 1 and biases at 0: randomise them
            if "norm" in key or key.endswith("bias"):
                p.normal_(1.0 if "norm" in key else 0.0, 0.1)
    return model.eval()


def ids(length: int = 40) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(MODELS))
def test_hf_to_ours_to_hf_gives_the_same_tensors_and_logits(name):
    hf = hf_model(name)
    decoder = decoder_from_hf(hf).eval()
    assert decoder.cfg.qkv_bias == (MODELS[name][0] == "qwen2")
    with torch.no_grad():
        want = hf(input_ids=ids()).logits
        torch.testing.assert_close(decoder(ids(), Positions.sequence(2, 40)), want, rtol=1e-4, atol=1e-4)
    back = decoder_to_hf(decoder, hf.config.model_type)
    original = hf.state_dict()
    assert set(back.state_dict()) == set(original)
    for key, value in back.state_dict().items():
        assert torch.equal(value, original[key]), key
    assert back.config.rope_parameters["rope_type"] == hf.config.rope_parameters["rope_type"]
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids()).logits, want, rtol=0, atol=0)


def test_state_dict_maps_are_inverse():
    cfg = decoder_config_from_hf(tiny_config("qwen2"))
    ours = Decoder(cfg, build_pe({"name": "rope"})).state_dict()
    for layout in ("half", "interleaved"):
        there = state_dict_to_hf(ours, cfg, layout)
        assert all(k.startswith(("model.", "lm_head.")) for k in there)
        back = state_dict_from_hf(there, cfg, layout)
        assert set(back) == set(ours) and all(torch.equal(back[k], ours[k]) for k in ours)


def test_interleaved_decoder_exports_to_rotate_half_with_the_same_logits():
    """Meta/GPT-J pairs (2j, 2j+1) become HF's halves (j, j + d/2) by permuting q/k rows per head."""
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=VOCAB, dim=64, depth=2, n_heads=4, n_kv_heads=2, mlp_hidden=96)
    decoder = Decoder(cfg, build_pe({"name": "rope", "pair_layout": "interleaved", "base": 500.0})).eval()
    hf = decoder_to_hf(decoder)
    assert hf.config.rope_parameters == {"rope_type": "default", "rope_theta": 500.0}
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids()).logits, decoder(ids(), Positions.sequence(2, 40)),
                                   rtol=1e-4, atol=1e-4)
        again = decoder_from_hf(hf, pair_layout="interleaved")
        assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), decoder.state_dict().values()))


def test_what_our_decoder_cannot_express_is_refused():
    with pytest.raises(ValueError, match=r"cannot express this llama config's \['hidden_act', 'attention_bias'\]"):
        decoder_config_from_hf(tiny_config("llama", hidden_act="gelu", attention_bias=True))
    with pytest.raises(ValueError, match="model_type 'gpt2' has no converter to backbone=llama"):
        decoder_config_from_hf({"model_type": "gpt2"})
    decoder = Decoder(DecoderConfig(dim=32, depth=1, n_heads=2, n_kv_heads=2, qkv_bias=True),
                      build_pe({"name": "rope"}))
    with pytest.raises(ValueError, match="q/k/v biases only as qwen2"):
        decoder_to_hf(decoder, "llama")
