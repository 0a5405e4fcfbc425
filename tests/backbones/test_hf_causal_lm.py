"""backbone=hf_causal_lm on tiny Llama / Qwen2 / Mistral checkpoints saved here with save_pretrained (safetensors):
with pe=rope the logits equal the unmodified transformers model's, for every HF rope type the checkpoint may carry;
an added pe/scaling equals transformers with that rope config; every rotary PE runs on the loaded weights; KV-cache
decoding equals a parallel pass; PEs that do not fit are refused clearly."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from rope_lab.cli import UserError
from rope_lab.backbones.hf_causal_lm import HFCausalLM, HFCausalLMConfig, load_pretrained_causal_lm
from rope_lab.pe import available_pes, build_pe
from rope_lab.pe.hf_rope import rope_from_hf, rope_to_hf
from rope_lab.tasks.base import TaskSpec

from ..pe.helpers import pe_config
from .hf_checkpoints import VOCAB, save_checkpoint

L0 = 32  # the tiny checkpoints' max_position_embeddings
SHORT = [1.0 + 0.1 * i for i in range(8)]
LONG = [1.0 + 0.4 * i for i in range(8)]
ROPES = {  # HF rope_parameters a checkpoint may carry (head_dim 16: 8 rotary pairs)
    "default": {},
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8, "rope_theta": 5e5},
    "longrope": {"rope_type": "longrope", "short_factor": SHORT, "long_factor": LONG,
                 "original_max_position_embeddings": 16},
    "llama3": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16},
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    out = {f"llama-{name}": save_checkpoint(root / name, "llama", rope) for name, rope in ROPES.items()}
    out |= {family: save_checkpoint(root / family, family, seed=1) for family in ("qwen2", "mistral")}
    return out


def ours(path, pe="rope", spec=None, **cfg) -> HFCausalLM:
    pe = build_pe(pe if isinstance(pe, dict) else {"name": pe})
    return HFCausalLM(HFCausalLMConfig(pretrained=str(path), **cfg), pe, spec).eval()


def reference(path, **overrides):
    """The unmodified transformers model (SDPA attention), config fields overridden as from_pretrained allows."""
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", **overrides).eval()


def tokens(length: int, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(length))


@pytest.mark.parametrize("name", ["llama-" + r for r in ROPES] + ["qwen2", "mistral"])
def test_rope_equals_the_unmodified_model(checkpoints, name):
    """Beyond L0 too, where dynamic NTK grows its base and LongRoPE switches to its long factors."""
    model, ref = ours(checkpoints[name]), reference(checkpoints[name])
    for length in (12, 2 * L0 + 3):  # a fresh HF model per length: HF's dynamic NTK only grows within a model
        ids = tokens(length)
        with torch.no_grad():
            want = reference(checkpoints[name])(input_ids=ids).logits if length > L0 else ref(input_ids=ids).logits
            torch.testing.assert_close(model(ids), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rope", [r for r in ROPES if r != "default"])
def test_added_scaling_equals_hf_with_that_rope_config(checkpoints, rope):
    """A plain-RoPE checkpoint + ``pe/scaling=X`` == transformers loading it with rope_parameters X (our writer)."""
    path = checkpoints["llama-default"]
    scaling = rope_from_hf(json.loads((checkpoints[f"llama-{rope}"] / "config.json").read_text())).scaling
    model = ours(path, {"name": "rope", "scaling": scaling})
    ids = tokens(2 * L0 + 1)
    with torch.no_grad():
        want = reference(path, **rope_to_hf(10000.0, scaling))(input_ids=ids).logits
        torch.testing.assert_close(model(ids), want, rtol=1e-4, atol=1e-4)


def _token_pes() -> list[str]:
    return [n for n in available_pes() if build_pe(pe_config(n)).incompatibility(1, True, axes=("token",)) is None]


@pytest.mark.parametrize("name", _token_pes())
def test_every_pe_for_token_positions_runs_on_the_loaded_weights(checkpoints, name):
    """Finite logits on grouped-query Qwen2 weights; gradients reach the weights and the PE's own parameters."""
    model = ours(checkpoints["qwen2"], pe_config(name)).train()
    ids = tokens(20)
    logits = model(ids)
    assert logits.shape == (2, 20, VOCAB) and torch.isfinite(logits).all()
    logits.logsumexp(-1).mean().backward()
    assert model.hf.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.pe.parameters() if p.requires_grad)


@pytest.mark.parametrize("scaling", [{"name": "none"}, {"name": "yarn", "factor": 2.0,
                                                        "original_max_position_embeddings": 16}])
def test_kv_cache_decoding_equals_parallel(checkpoints, scaling):
    model = ours(checkpoints["mistral"], {"name": "rope", "scaling": scaling})
    ids = tokens(24, batch=1)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        steps = [model(ids[:, :10], cache=cache)] + [model(ids[:, i : i + 1], cache=cache) for i in range(10, 24)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


def test_load_pretrained_causal_lm_api(checkpoints):
    """What eval code calls: forward(input_ids) -> logits; a scaling by name takes L0 from the checkpoint."""
    path = checkpoints["llama-default"]
    ids = tokens(40)
    with torch.no_grad():
        plain = load_pretrained_causal_lm(path)(ids)
        torch.testing.assert_close(plain, reference(path)(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
        yarn = load_pretrained_causal_lm(path, scaling={"name": "yarn", "factor": 4.0})
        assert yarn.pe.scaling.cfg.original_max_position_embeddings == L0
        want = reference(path, **rope_to_hf(1e4, yarn.pe.cfg.scaling))(input_ids=ids).logits
        torch.testing.assert_close(yarn(ids), want, rtol=1e-4, atol=1e-4)
        assert load_pretrained_causal_lm(path, pe="p_rope", dtype="bfloat16")(ids).dtype == torch.bfloat16


def test_what_does_not_fit_is_refused(checkpoints, tmp_path):
    path = checkpoints["llama-default"]
    with pytest.raises(ValueError, match="pe=rope_axial encodes 2..2 position axes"):
        ours(path, "rope_axial")
    bad = {"name": "rope", "scaling": {"name": "longrope", "short_factor": [1.0] * 4, "long_factor": [1.0] * 4}}
    with pytest.raises(ValueError, match="short_factor must have rotary_dim/2 = 8 entries"):
        ours(path, bad)
    with pytest.raises(ValueError, match=r"vocabulary \(512 tokens\) is larger than the model's \(300\)"):
        ours(path, spec=TaskSpec(vocab_size=512))
    with pytest.raises(FileNotFoundError, match="backbone.pretrained="):
        ours(tmp_path / "missing")
    with pytest.raises(ValueError, match="backbone.rope_from='nope' is not one of"):
        ours(path, rope_from="nope")
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="'gpt2' is not one of \\['llama', 'mistral', 'qwen2'\\]"):
        ours(tmp_path / "gpt2")


def test_sliding_window_beyond_the_window_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "swa", "mistral", sliding_window=16)
    model = ours(path)
    with torch.no_grad():
        model(tokens(16))  # within the window: full attention is the same
        with pytest.raises(ValueError, match="sliding-window attention \\(window 16\\) and this input has 17 keys"):
            model(tokens(17))


def test_rope_from_pe_keeps_the_configured_pe(checkpoints):
    model = ours(checkpoints["llama-yarn"], {"name": "rope", "base": 1234.0}, rope_from="pe")
    assert model.pe.cfg.base == 1234.0 and model.pe.scaling.name == "none"
    inherited = ours(checkpoints["llama-yarn"], {"name": "rope", "base": 1234.0, "pair_layout": "interleaved"})
    assert (inherited.pe.cfg.base, inherited.pe.cfg.pair_layout, inherited.pe.scaling.name) == (5e5, "half", "yarn")


def test_gradient_checkpointing_gives_the_same_gradients(checkpoints):
    grads = []
    for flag in (False, True):
        model = ours(checkpoints["llama-yarn"], gradient_checkpointing=flag).train()
        model(tokens(20)).logsumexp(-1).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


def test_random_init_and_missing_transformers(monkeypatch):
    model = HFCausalLM(HFCausalLMConfig(family="qwen2", hidden_size=32), build_pe({"name": "rope"}),
                       TaskSpec(vocab_size=64))
    assert model(tokens(8) % 64).shape == (2, 8, 64)
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(UserError, match=r"backbone=hf_causal_lm needs the 'transformers' package.*pip "
                                        r"install 'rope_lab\[hf\]'"):
        HFCausalLM(HFCausalLMConfig(), build_pe({"name": "rope"}))
