"""The video-LLM backbone: KV-cache decoding after a video equals the parallel forward for every video variant;
vision features land at the vision positions; the frame encoder's own 2-D RoPE and its clear errors."""

from __future__ import annotations

import pytest
import torch

from rope_lab.backbones.video_llm import VideoLLM, VideoLLMConfig
from rope_lab.pe import build_pe
from rope_lab.tasks.base import TaskSpec
from rope_lab.tasks.vniah.positions import Segments, layout_coords, vniah_positions

VIDEO_PES = ["rope", "tad_rope", "mrope", "videorope", "vrope", "hope"]
SEG = Segments(prompt=3, grids=3, grid_h=2, grid_w=2, tail=5)  # 3 + 12 + 5 tokens


def tiny(pe_name: str, **pe_cfg) -> VideoLLM:
    torch.manual_seed(0)
    cfg = VideoLLMConfig(vocab_size=64, dim=32, depth=2, n_heads=2, n_kv_heads=1, mlp_hidden=64, frame_size=16,
                         patch_size=4, encoder_dim=16, encoder_depth=1, encoder_heads=2, encoder_mlp_hidden=32)
    return VideoLLM(cfg, build_pe({"name": pe_name, **pe_cfg}), TaskSpec(num_axes=4, vocab_size=64)).eval()


def inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    coords, modality = layout_coords(SEG)
    tokens = torch.randint(0, 64, (batch, SEG.length), generator=g)
    video = torch.randn(batch, 2 * SEG.grids, 1, 16, 16, generator=g)
    pos = vniah_positions(coords.expand(batch, -1, -1), modality.expand(batch, -1), fps=2.0, augment=False)
    return tokens, video, pos


@pytest.mark.parametrize("name,cfg", [(n, {}) for n in VIDEO_PES] + [("mrope", {"time_mode": "absolute"})])
def test_kv_cache_decoding_after_a_video_equals_parallel(name, cfg):
    model = tiny(name, **cfg)
    tokens, video, pos = inputs()
    split = SEG.prompt + SEG.video_tokens + 1  # prefill: prompt, video, first question token
    with torch.no_grad():
        full = model(tokens, pos, video=video)
        cache = model.new_cache()
        parts = [model(tokens[:, :split], pos.slice(0, split), cache, video=video)]
        parts += [model(tokens[:, i : i + 1], pos.slice(i, i + 1), cache) for i in range(split, SEG.length)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-4)


def test_vision_features_are_written_at_the_vision_positions_only():
    model = tiny("videorope")
    tokens, video, pos = inputs()
    with torch.no_grad():
        a = model(tokens, pos, video=video)
        b = model(tokens, pos, video=video + 1.0)
    first_video = SEG.prompt
    torch.testing.assert_close(a[:, :first_video], b[:, :first_video])  # causal: text before the video unaffected
    assert not torch.allclose(a[:, first_video:], b[:, first_video:])


def test_frame_encoder_uses_its_own_2d_rope():
    model = tiny("mrope")
    assert model.encoder.pe.name == "rope_axial" and model.encoder.pe.axis_order == [0, 1]
    _, video, _ = inputs(1)
    with torch.no_grad():
        out = model.encoder(video)
        nope = tiny("mrope")
        nope.encoder.pe = build_pe({"name": "nope"}).setup(model.encoder.pe.geometry)
        for blk in nope.encoder.blocks:
            blk.attn.share_pe(nope.encoder.pe)
        assert out.shape == (1, SEG.grids, 4, 32)
        assert not torch.allclose(out, nope.encoder(video))


def test_bad_grid_sizes_are_refused():
    with pytest.raises(ValueError, match="merge_size"):
        VideoLLM(VideoLLMConfig(frame_size=20, patch_size=4), build_pe({"name": "mrope"}))
    with pytest.raises(ValueError, match="patch_size"):
        VideoLLM(VideoLLMConfig(frame_size=30, patch_size=4), build_pe({"name": "mrope"}))
