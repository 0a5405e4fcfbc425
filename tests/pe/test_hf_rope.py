"""HF rope config interop (rope_lab/pe/hf_rope.py): a config.json's rope fields read into our pe/scaling give the
frequencies and attention factor transformers' ROPE_INIT_FUNCTIONS compute from the same file (both the 5.x
``rope_parameters`` and the 4.x ``rope_scaling`` + ``rope_theta`` formats, legacy aliases, the derived-factor rule);
ours written out and read back is the same scaling."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import AutoConfig, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

from rope_lab.pe import AttentionGeometry, Positions, build_pe
from rope_lab.pe.hf_rope import pe_to_hf, rope_from_hf, rope_to_hf
from rope_lab.pe.registry import SCALING

HEAD_DIM, L0 = 32, 64
SHORT = [1.0 + 0.05 * i for i in range(HEAD_DIM // 2)]
LONG = [1.5 + 0.2 * i for i in range(HEAD_DIM // 2)]
# (config.json fields, the length whose frequencies are compared)
CASES = {
    "default": ({"rope_theta": 5e5}, 16),
    "linear": ({"rope_scaling": {"type": "linear", "factor": 2.0}, "rope_theta": 1e4}, 16),
    "dynamic": ({"rope_scaling": {"rope_type": "dynamic", "factor": 4.0}}, 3 * L0),
    "yarn": ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 8.0, "beta_fast": 16,
                                  "original_max_position_embeddings": L0}}, 16),
    "yarn_derived_factor": ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": None,
                                                 "original_max_position_embeddings": L0 // 4}}, 16),
    "yarn_partial_mscale": ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0,
                                                 "partial_rotary_factor": 0.5, "mscale": 1.0, "mscale_all_dim": 0.8,
                                                 "original_max_position_embeddings": L0 // 4}}, 16),
    "longrope_short": ({"rope_parameters": {"rope_type": "longrope", "short_factor": SHORT, "long_factor": LONG,
                                            "original_max_position_embeddings": L0 // 4}}, L0 // 4),
    "longrope_long_phi3_su": ({"model_type": "phi3", "original_max_position_embeddings": L0 // 4,
                               "rope_scaling": {"type": "su", "short_factor": SHORT, "long_factor": LONG}},
                              L0 // 4 + 1),
    "llama3": ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": L0 // 2},
                "rope_theta": 5e5}, 16),
}


def config_json(fields: dict) -> dict:
    return {"model_type": "llama", "hidden_size": 2 * HEAD_DIM, "num_attention_heads": 2, "head_dim": HEAD_DIM,
            "max_position_embeddings": L0, **fields}


def hf_frequencies(cfg_json: dict, length: int):
    """(inv_freq, attention factor) of transformers' own rotary embedding after a forward of ``length`` tokens."""
    kind = cfg_json["model_type"]
    config = AutoConfig.for_model(kind, **{k: v for k, v in cfg_json.items() if k != "model_type"})
    rotary = {"llama": LlamaRotaryEmbedding, "phi3": Phi3RotaryEmbedding}[kind](config)
    x = torch.zeros(1, length, HEAD_DIM)
    cos, _ = rotary(x, torch.arange(length)[None])  # dynamic / longrope update their frequencies here
    return rotary.inv_freq, rotary.attention_scaling


def our_frequencies(pe_cfg: dict, length: int):
    pe = build_pe(pe_cfg).setup(AttentionGeometry(2 * HEAD_DIM, HEAD_DIM, 2, 2, 1))
    state = pe.prepare(Positions.sequence(1, length))
    return state.inv_freq, state.attention_factor


@pytest.mark.parametrize("case", list(CASES))
def test_read_config_matches_transformers(case):
    fields, length = CASES[case]
    cfg = config_json(fields)
    ref_inv, ref_factor = hf_frequencies(cfg, length)
    inv, factor = our_frequencies(rope_from_hf(cfg).pe_config(), length)
    torch.testing.assert_close(inv.double(), ref_inv.double(), rtol=1e-6, atol=0.0)
    assert float(factor) == pytest.approx(ref_factor, rel=1e-9)


def test_read_transformers_config_object_and_aliases():
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=2, max_position_embeddings=L0,
                      rope_scaling={"type": "dynamic", "factor": 3.0}, rope_theta=2e4)
    rope = rope_from_hf(cfg)
    assert (rope.base, rope.scaling) == (2e4, {"name": "dynamic_ntk", "factor": 3.0,
                                               "original_max_position_embeddings": L0})
    assert rope_from_hf({"rope_theta": 1e4}).scaling == {"name": "none"}
    text = {"rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]}, "rope_theta": 1e6}
    qwen2vl = AutoConfig.for_model("qwen2_vl", text_config=dict(text))
    assert qwen2vl.text_config.rope_parameters["rope_type"] == "default"  # how transformers reads the alias
    assert rope_from_hf({"model_type": "qwen2_vl", "text_config": text}).scaling == {"name": "none"}
    assert rope_from_hf(qwen2vl).base == 1e6
    phi3 = rope_from_hf(config_json(CASES["longrope_long_phi3_su"][0]))
    assert phi3.scaling["original_max_position_embeddings"] == L0 // 4  # top-level L0 wins (Phi-3)
    assert phi3.scaling["factor"] == 4.0  # derived: max_position_embeddings / L0


@pytest.mark.parametrize("scaling", [
    {"name": "none"}, {"name": "linear", "factor": 3.0}, {"name": "dynamic_ntk", "factor": 2.0,
                                                          "original_max_position_embeddings": 48},
    {"name": "yarn", "factor": 4.0, "original_max_position_embeddings": 48, "beta_fast": 8.0, "truncate": False,
     "attention_factor": 0.9},
    {"name": "longrope", "short_factor": SHORT, "long_factor": LONG, "original_max_position_embeddings": 16,
     "max_position_embeddings": 64},
    {"name": "llama3", "factor": 2.0, "original_max_position_embeddings": 16, "high_freq_factor": 8.0},
])
@pytest.mark.parametrize("legacy", [False, True])
def test_write_then_read_is_the_same_scaling(scaling, legacy):
    fields = rope_to_hf(123456.0, scaling, legacy=legacy)
    back = rope_from_hf(config_json({k: v for k, v in fields.items()}))
    assert back.base == 123456.0
    want_cls, want = SCALING.config(scaling)
    got_cls, got = SCALING.config(back.scaling)
    if scaling["name"] == "longrope":  # written with its factor explicit (HF would derive it the same way)
        want = dataclasses.replace(want, factor=4.0, max_position_embeddings=None)
    assert (got_cls, got) == (want_cls, want)
    length = 100  # beyond every L0: dynamic and longrope take their long-context frequencies
    torch.testing.assert_close(our_frequencies(back.pe_config(), length)[0],
                               hf_frequencies(config_json(fields), length)[0], rtol=1e-6, atol=0.0)


def test_static_ntk_is_written_as_its_equivalent_base():
    pe = build_pe({"name": "rope", "scaling": {"name": "ntk", "factor": 4.0}})
    pe.setup(AttentionGeometry(2 * HEAD_DIM, HEAD_DIM, 2, 2, 1))
    fields = pe_to_hf(pe)
    assert fields["rope_parameters"]["rope_type"] == "default"
    ref, _ = hf_frequencies(config_json(fields), 8)
    torch.testing.assert_close(pe.scaling.rewrite(pe.inv_freq)[0].double(), ref.double(), rtol=2e-6, atol=0.0)


def test_what_hf_cannot_express_is_refused():
    with pytest.raises(ValueError, match="rope_type 'proportional' has no rope_lab scaling; supported"):
        rope_from_hf({"rope_parameters": {"rope_type": "proportional", "rope_theta": 1e4}})
    with pytest.raises(ValueError, match="per-layer-type rope parameters"):
        rope_from_hf({"rope_parameters": {"full_attention": {"rope_type": "default"},
                                          "sliding_attention": {"rope_type": "default"}}})
    with pytest.raises(ValueError, match="'dynamic_yarn' has no HF rope_type"):
        rope_to_hf(1e4, {"name": "dynamic_yarn", "original_max_position_embeddings": 64})
    pe = build_pe({"name": "p_rope"}).setup(AttentionGeometry(64, 32, 2, 2, 1))
    with pytest.raises(ValueError, match="only a set-up pe=rope without psc has a HF rope config; got pe=p_rope"):
        pe_to_hf(pe)
