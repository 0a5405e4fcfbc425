"""Greedy decoding of a rope_lab decoder (RULER-style tasks on a trained run) keeps keys and values in the KV cache:
the tokens it produces equal re-running the whole sequence for every new token, for plain RoPE, static scalings,
the consistent-cache dynamic scalings, the training-free extensions and the logit-bias baselines."""

from __future__ import annotations

import pytest
import torch

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.longctx.causal_lm import ByteTokenizer, CausalLM, DecoderLM, logits_of
from rope_lab.pe import build_pe

PES = {
    "rope": {"name": "rope"},
    "yarn x4": {"name": "rope", "scaling": {"name": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}},
    "dynamic ntk, consistent cache": {"name": "rope", "scaling": {"name": "dynamic_ntk", "factor": 1.0,
                                                                  "original_max_position_embeddings": 16,
                                                                  "kv_cache": "consistent"}},
    "rerope": {"name": "rerope", "window": 8},
    "self_extend": {"name": "self_extend", "window": 8, "group": 4},
    "lm_infinite": {"name": "lm_infinite", "window": 16, "n_global": 2},
    "alibi": {"name": "alibi"},
}


def peaky_decoder(pe_cfg: dict, offset: int) -> DecoderLM:
    """A random float64 decoder whose logits have wide margins (a scaled head), so argmax is not decided by rounding."""
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=256, dim=64, depth=2, n_heads=4, n_kv_heads=2, mlp_hidden=96),
                    build_pe(pe_cfg)).double().eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(200.0)
    return DecoderLM(model, offset)


def greedy_by_rerunning(lm: DecoderLM, prompt: list[int], steps: int) -> list[int]:
    ids, new = torch.tensor([prompt]), []
    with torch.no_grad():
        for _ in range(steps):
            new.append(int(logits_of(lm, ids)[0, -1].argmax()))
            ids = torch.cat([ids, ids.new_tensor([[new[-1]]])], dim=1)
    return new


@pytest.mark.parametrize("offset", [0, 5])
@pytest.mark.parametrize("pe", sorted(PES))
def test_cached_greedy_decoding_equals_rerunning_the_sequence(pe, offset):
    lm = peaky_decoder(PES[pe], offset)
    assert lm.decodes_with_cache
    prompt = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    got = CausalLM(lm, ByteTokenizer()).greedy(prompt, 12)
    assert got == greedy_by_rerunning(lm, prompt, 12)
    assert len(set(got)) > 1  # the check would be vacuous if the model repeated one token


def test_decoding_stops_at_eos_and_at_the_budget():
    lm = peaky_decoder(PES["rope"], 0)
    prompt = list(range(30))
    free = lm.greedy(torch.tensor([prompt]), 6, eos=None)
    assert len(free) == 6
    assert lm.greedy(torch.tensor([prompt]), 6, eos=free[2]) == free[: free.index(free[2]) + 1]
