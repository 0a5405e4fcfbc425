"""Chunked attention with a gated FIFO memory (arXiv 2507.00453; rope_lab/backbones/chunked_memory.py): each path
against a naive loop (local: per-chunk brute force, also with packed documents; memory: the documented recurrence
chunk by chunk), the per-head mixing, causality through every path, global-only == ``mha`` (hence
``LlamaForCausalLM``), KV-cache decoding == parallel for several PEs, gradients, clear errors, a ``train.py`` run."""

from __future__ import annotations

import math

import pytest
import torch

from rope_lab.backbones.chunked_memory import ChunkedMemoryConfig
from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import Positions, build_pe

H, HKV, D = 4, 2, 8


def model(paths=("global", "local", "memory"), pe="rope", chunk=4, slots=3, depth=1, seed=0, **kw) -> Decoder:
    torch.manual_seed(seed)
    cfg = DecoderConfig(vocab_size=32, dim=H * D, depth=depth, n_heads=H, n_kv_heads=HKV, mlp_hidden=32,
                        attention="chunked_memory", init_std=0.2,
                        chunked_memory=ChunkedMemoryConfig(chunk_size=chunk, memory_slots=slots, paths=list(paths)),
                        **kw)
    return Decoder(cfg, build_pe({"name": pe} | ({} if pe == "nope" else {"kernel": "eager"}))).double().eval()


def attend(q, k, v, keep):
    """One query row: softmax(q k^T / sqrt(D)) v over the kept keys (k, v rows are keys)."""
    scores = (k[keep] @ q) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=0) @ v[keep]


def naive_local(attn, x, state, chunk, segment=None):
    b, n, _ = x.shape
    q = attn.q_proj(x).view(b, n, H, D).transpose(1, 2)
    k = attn.k_proj(x).view(b, n, HKV, D).transpose(1, 2)
    rq, rk = attn.pe.rotate(q, k, state, 0)
    v = attn.v_proj(x).view(b, n, HKV, D).transpose(1, 2)
    out = torch.zeros(b, H, n, D, dtype=x.dtype)
    idx = torch.arange(n)
    for i in range(b):
        for h in range(H):
            for t in range(n):
                keep = (idx // chunk == t // chunk) & (idx <= t)
                if segment is not None:
                    keep &= segment[i] == segment[i, t]
                out[i, h, t] = attend(rq[i, h, t], rk[i, h // 2], v[i, h // 2], keep)
    return attn.o_proj(out.transpose(1, 2).reshape(b, n, -1))


def naive_memory(attn, x, chunk):
    """The documented recurrence, chunk by chunk: read the bank, then (for a complete chunk) gate and push."""
    b, n, dim = x.shape
    bank = list(attn.memory.initial.expand(b, -1, -1).unbind(1))
    w, bias = attn.memory.gate.weight, attn.memory.gate.bias
    q = attn.q_proj(x).view(b, n, H, D)
    out = torch.zeros(b, n, H, D, dtype=x.dtype)
    for start in range(0, n, chunk):
        mem = torch.stack(bank, 1)
        k, v = attn.k_proj(mem).view(b, -1, HKV, D), attn.v_proj(mem).view(b, -1, HKV, D)
        every = torch.ones(len(bank), dtype=torch.bool)
        for i in range(b):
            for t in range(start, min(start + chunk, n)):
                for h in range(H):
                    out[i, t, h] = attend(q[i, t, h], k[i, :, h // 2], v[i, :, h // 2], every)
        if start + chunk <= n:
            s, u = x[:, start : start + chunk].mean(1), bank[-1]
            g = torch.sigmoid(torch.cat([u, s], -1) @ w.T + bias)
            bank = bank[1:] + [g * u + (1 - g) * s]
    return attn.o_proj(out.reshape(b, n, -1))


@pytest.mark.parametrize("n", [12, 11])
def test_local_path_equals_per_chunk_brute_force(n):
    attn = model(["local"]).blocks[0].attn
    x, state = torch.randn(2, n, H * D, dtype=torch.float64), attn.pe.prepare(Positions.sequence(2, n, start=500))
    torch.testing.assert_close(attn(x, state), naive_local(attn, x, state, 4))


def test_local_path_stays_within_packed_documents():
    attn = model(["local"]).blocks[0].attn
    seg = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 2, 2], [0] * 6 + [1] * 4])
    pos = Positions(Positions.sequence(2, 10).coords.clone(), segment=seg)
    x, state = torch.randn(2, 10, H * D, dtype=torch.float64), attn.pe.prepare(pos)
    torch.testing.assert_close(attn(x, state), naive_local(attn, x, state, 4, seg))


@pytest.mark.parametrize("n,slots", [(13, 3), (8, 1), (3, 2)])
def test_memory_path_equals_a_naive_loop_over_chunks(n, slots):
    attn = model(["memory"], slots=slots).blocks[0].attn
    x = torch.randn(2, n, H * D, dtype=torch.float64)
    torch.testing.assert_close(attn(x, attn.pe.prepare(Positions.sequence(2, n))), naive_memory(attn, x, 4))


def test_paths_are_mixed_by_per_head_softmax_weights():
    full = model().blocks[0].attn
    torch.nn.init.normal_(full.mix)
    x = torch.randn(1, 9, H * D, dtype=torch.float64)
    state = full.pe.prepare(Positions.sequence(1, 9))
    w = torch.softmax(full.mix, -1)
    outs = []
    for i, path in enumerate(("global", "local", "memory")):
        single = model([path]).blocks[0].attn
        single.load_state_dict({k: p for k, p in full.state_dict().items() if k != "mix"}, strict=False)
        torch.nn.init.eye_(single.o_proj.weight)  # read the heads before the output projection
        outs.append(single(x, state).view(1, 9, H, D) * w[:, i, None])
    want = full.o_proj(sum(outs).view(1, 9, -1))
    torch.testing.assert_close(full(x, state), want)


@pytest.mark.parametrize("paths", [("global", "local", "memory"), ("local", "memory"), ("memory",), ("local",)])
def test_no_position_sees_later_tokens_and_memory_reads_only_earlier_chunks(paths):
    m = model(paths, depth=2)
    n = 11
    emb = torch.randn(1, n, H * D, dtype=torch.float64, requires_grad=True)
    out = m(None, Positions.sequence(1, n), inputs_embeds=emb)
    for t in range(n):
        (grad,) = torch.autograd.grad(out[0, t].sum(), emb, retain_graph=True)
        reach = grad[0].abs().sum(-1) > 0
        assert not reach[t + 1 :].any(), (t, reach)
        if paths == ("memory",):  # only itself and the (complete) chunks before its own
            assert torch.equal(reach, (torch.arange(n) < t // 4 * 4) | (torch.arange(n) == t)), (t, reach)


def test_global_only_is_the_standard_attention_and_llama():
    from tests.backbones.test_decoder import _pair

    ours, hf = _pair(2)
    cfg = DecoderConfig(**{**ours.cfg.__dict__, "attention": "chunked_memory",
                           "chunked_memory": ChunkedMemoryConfig(paths=["global"])})
    chunked = Decoder(cfg, build_pe({"name": "rope", "pair_layout": "half"})).eval()
    chunked.load_state_dict(ours.state_dict())  # strict: the same parameters as attention=mha
    tokens = torch.randint(0, 97, (2, 33))
    with torch.no_grad():
        got = chunked(tokens, Positions.sequence(2, 33))
        torch.testing.assert_close(got, ours(tokens, Positions.sequence(2, 33)), rtol=0, atol=0)
        torch.testing.assert_close(got, hf(input_ids=tokens).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pe", ["rope", "p_rope", "nope"])
@pytest.mark.parametrize("paths", [("global", "local", "memory"), ("local", "memory")])
def test_kv_cache_decoding_equals_parallel_across_chunk_boundaries(pe, paths):
    m = model(paths, pe=pe, depth=2)
    tokens, pos = torch.randint(0, 32, (2, 14)), Positions.sequence(2, 14, start=40)
    cuts = [0, 5, 6, 9, 10, 11, 12, 14]  # prefill 5, then steps of 1-3 tokens that cross chunk boundaries
    with torch.no_grad():
        full = m(tokens, pos)
        cache = m.new_cache()
        steps = [m(tokens[:, a:b], pos.slice(a, b), cache) for a, b in zip(cuts, cuts[1:])]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-10, atol=1e-10)


def test_gradients_reach_every_parameter_under_bf16_autocast():
    m = model(depth=2).float().train()
    tokens = torch.randint(0, 32, (2, 10))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = m(tokens, Positions.sequence(2, 10))
    logits.float().logsumexp(-1).mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing and torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("cfg,match", [
    ({"chunk_size": 0}, r"chunked_memory.chunk_size must be a positive integer; got 0"),
    ({"paths": ["global", "glob"]}, r"paths must be distinct names from \['global', 'local', 'memory'\], at least "
                                    r"one; got \['global', 'glob'\] \(unknown: \['glob'\]\)"),
    ({"paths": []}, r"at least one; got \[\]"),
    ({"memory_slots": 0}, r"memory_slots must be a positive integer with the memory path; got 0"),
])
def test_bad_values_are_clear_errors(cfg, match):
    with pytest.raises(ValueError, match=match):
        Decoder(DecoderConfig(attention="chunked_memory", chunked_memory=ChunkedMemoryConfig(**cfg)),
                build_pe({"name": "rope"}))


def test_command_line_options_are_typed():
    from hydra import compose, initialize_config_dir

    from rope_lab.backbones.decoder import LlamaDecoder
    from rope_lab.registry import typed_config
    from tests.test_train import CONFIGS

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["backbone.attention=chunked_memory",
                                                      "backbone.chunked_memory.paths=[local,memory]"])
    typed = typed_config(LlamaDecoder, cfg.backbone, "backbone")
    assert typed.chunked_memory == ChunkedMemoryConfig(chunk_size=32, memory_slots=8, paths=["local", "memory"])


def test_train_py_fast_dev_run_chunked_memory(tmp_path):
    from tests.test_train import train

    train(tmp_path, "trainer.fast_dev_run=true", "backbone.attention=chunked_memory",
          "backbone.chunked_memory.chunk_size=8")
    (run_dir,) = (tmp_path / "outputs" / "lm_longctx" / "rope").glob("*/*")
    assert (run_dir / "results.json").exists()
