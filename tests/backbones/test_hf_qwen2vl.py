"""backbone=hf_qwen2vl on a tiny randomly initialised transformers Qwen2-VL (offline): with pe=mrope the logits
equal the unmodified model's; with another variant only positions/frequencies change; KV-cache decoding."""

from __future__ import annotations

import copy

import pytest
import torch

from rope_lab.backbones.hf_qwen2vl import HFQwen2VL, HFQwen2VLConfig, patchify
from rope_lab.pe import build_pe
from rope_lab.tasks.base import TaskSpec
from rope_lab.tasks.vniah.positions import Segments, layout_coords, vniah_positions

SEG = Segments(prompt=4, grids=2, grid_h=2, grid_w=2, tail=5)  # T=2 <= max(H', W'): transformers is correct


def wrapper(pe_name: str) -> HFQwen2VL:
    torch.manual_seed(0)
    spec = TaskSpec(num_axes=4, vocab_size=64, extra={"patch_size": 4})
    cfg = HFQwen2VLConfig(hidden_size=64, num_attention_heads=2, num_key_value_heads=1, intermediate_size=96,
                          vision_embed_dim=32)
    return HFQwen2VL(cfg, build_pe({"name": pe_name, "base": 1e6}), spec).eval()


def inputs():
    g = torch.Generator().manual_seed(0)
    coords, modality = layout_coords(SEG)
    tokens = torch.randint(0, 64, (1, SEG.length), generator=g)
    video = torch.randn(1, 2 * SEG.grids, 1, 16, 16, generator=g)
    return tokens, video, vniah_positions(coords[None], modality[None], 2.0, False)


def reference_logits(model, tokens, video, video_token: int = 63):
    """The unmodified transformers model: its own processor layout, get_rope_index and rotary embedding."""
    ids = tokens.clone()
    ids[0, SEG.prompt : SEG.prompt + SEG.video_tokens] = video_token
    model.config.video_token_id = video_token
    mm = torch.zeros_like(ids)
    mm[0, SEG.prompt : SEG.prompt + SEG.video_tokens] = 2
    pixels, grid = patchify(video, 4, 2, 2)
    with torch.no_grad():
        return model(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid, mm_token_type_ids=mm).logits


def test_mrope_logits_equal_the_unmodified_model():
    w = wrapper("mrope")
    original = copy.deepcopy(w.hf)
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding

    original.model.language_model.rotary_emb = Qwen2VLRotaryEmbedding(original.config.text_config)
    tokens, video, pos = inputs()
    with torch.no_grad():
        ours = w(tokens, pos, video=video)
    torch.testing.assert_close(ours, reference_logits(original, tokens, video), rtol=1e-4, atol=1e-4)


def test_videorope_changes_only_positions_and_frequencies():
    a, b = wrapper("mrope"), wrapper("videorope")
    assert all(torch.equal(x, y) for x, y in zip(a.hf.state_dict().values(), b.hf.state_dict().values()))
    tokens, video, pos = inputs()
    with torch.no_grad():
        la, lb = a(tokens, pos, video=video), b(tokens, pos, video=video)
    torch.testing.assert_close(la[:, : SEG.prompt], lb[:, : SEG.prompt])  # text before the video: same ids
    assert not torch.allclose(la, lb)


@pytest.mark.parametrize("name", ["mrope", "videorope", "vrope", "tad_rope"])
def test_kv_cache_decoding_equals_parallel(name):
    w = wrapper(name)
    tokens, video, pos = inputs()
    split = SEG.prompt + SEG.video_tokens + 1
    with torch.no_grad():
        full = w(tokens, pos, video=video)
        cache = w.new_cache()
        parts = [w(tokens[:, :split], pos.slice(0, split), cache, video=video)]
        parts += [w(tokens[:, i : i + 1], pos.slice(i, i + 1), cache) for i in range(split, SEG.length)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-4)


def test_non_rotary_pe_is_refused():
    with pytest.raises(ValueError, match="not a rotary"):
        HFQwen2VL(HFQwen2VLConfig(), build_pe({"name": "nope"}))
