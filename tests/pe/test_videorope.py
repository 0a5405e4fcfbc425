"""VideoRoPE against the reference's worked example and the official code (Wiselnn570/VideoRoPE @ 7712ca3).

The official functions below are copied from ``videorope-transformer/modeling_videorope.py`` and
``videorope_plus/v_ruler/eval/eval_v_ruler_interrupt.py`` (index functions hard-code a 9 x 16 grid; that is
kept) so that the test compares against the authors' code, not against a re-derivation.
"""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2VLConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding, rotate_half

from .multimodal_helpers import WORKED, build, ids, sequence

H, W = 9, 16
IMAGE_TOKENS = H * W


# ---- official code (verbatim logic; only the batch-1 unsqueezes were dropped) -----------------------------
def apply_m_modify_multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section, unsqueeze_dim=1):
    mrope_section = [mrope_section[0], mrope_section[1] + mrope_section[2]]
    mrope_section = mrope_section * 2
    mrope_section = mrope_section[::-1]
    index = 0
    result_cos, result_sin = [], []
    for i, section in enumerate(mrope_section):
        if i % 2 == 0:
            for j in range(section):
                row = 1 if j % 2 == 0 else 2
                result_cos.append(cos[row, ..., index: index + 1])
                result_sin.append(sin[row, ..., index: index + 1])
                index += 1
        else:
            result_cos.append(cos[0, ..., index:index + section])
            result_sin.append(sin[0, ..., index:index + section])
            index += section
    cos = torch.cat(result_cos, dim=-1).unsqueeze(dim=unsqueeze_dim)
    sin = torch.cat(result_sin, dim=-1).unsqueeze(dim=unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def _official_index(n_text, n_frames, n_after, scale, centre=True, diagonal=True, text_after_all=False):
    """get_t_scale2_rope_index / get_m_modify_index / _margin_ / _no_center_ / get_m_rope_index, merged by flags."""
    st_idx = n_text
    t_index = torch.arange(n_frames).view(-1, 1).expand(-1, H * W).flatten()
    h_index = torch.arange(H).view(1, -1, 1).expand(n_frames, -1, W).flatten()
    w_index = torch.arange(W).view(1, 1, -1).expand(n_frames, H, -1).flatten()
    if centre:
        h_index, w_index = h_index - (H - 1) // 2, w_index - (W - 1) // 2
    if diagonal:
        t_index = t_index * scale + st_idx
        vid = torch.stack([t_index, h_index + t_index, w_index + t_index])
    else:
        vid = torch.stack([t_index * scale, h_index, w_index]) + st_idx
    nxt = (vid.max() if text_after_all else vid[0].max()) + 1
    text = [torch.arange(n_text).view(1, -1).expand(3, -1), vid,
            torch.arange(nxt, nxt + n_after).view(1, -1).expand(3, -1)]
    return torch.cat(text, dim=1).T.float()


def _seq(n_text=5, n_frames=3, n_after=4):
    return sequence(("text", n_text), ("video", n_frames, H, W), ("text", n_after))


def test_worked_example_delta_2():
    m = ids("videorope", sequence(*WORKED))
    video = m[3:39].view(3, 3, 4, 3)
    assert video[:, 0, 0, 0].tolist() == [3, 5, 7]
    assert sorted(set(video[0, ..., 1].flatten().tolist())) == [2, 3, 4]
    assert sorted(set(video[0, ..., 2].flatten().tolist())) == [2, 3, 4, 5]
    assert sorted(set(video[2, ..., 1].flatten().tolist())) == [6, 7, 8]
    assert sorted(set(video[2, ..., 2].flatten().tolist())) == [6, 7, 8, 9]
    assert m[39:].tolist() == [[8, 8, 8], [9, 9, 9]]


@pytest.mark.parametrize("flags, official", [
    ({}, dict(scale=2.0)),                                              # t_scale2_change_freq (VideoRoPE)
    ({"delta": 1.0}, dict(scale=1)),                                    # m_modify_rope
    ({"delta": 0.5}, dict(scale=0.5)),                                  # fractional spacing, float ids
    ({"delta": 1.0, "text_after": "all"}, dict(scale=1, text_after_all=True)),              # margin
    ({"delta": 1.0, "index_layout": "mrope"}, dict(scale=1, centre=False, diagonal=False)),  # no_center
    ({"delta": 1.0, "index_layout": "mrope", "text_after": "all"},
     dict(scale=1, centre=False, diagonal=False, text_after_all=True)),                      # t_only (M-RoPE ids)
])
def test_ids_equal_official_index_functions(flags, official):
    assert torch.equal(ids("videorope", _seq(), **flags), _official_index(5, 3, 4, **official))


def test_uncentred_diagonal():
    m = ids("videorope", _seq(), centre=False, delta=1.0)
    assert torch.equal(m, _official_index(5, 3, 4, 1, centre=False))


def test_lta_rotation_equals_official_function():
    positions = _seq(2, 2, 3)
    pe = build("videorope")
    n = positions.coords.shape[1]
    q, k = torch.randn(1, 2, n, 128), torch.randn(1, 2, n, 128)
    rq, rk = pe.rotate(q, k, pe.prepare(positions), 0)
    pos_ids = pe.position_map(positions).permute(2, 0, 1)  # (3, B, N) float ids
    # the official function takes per-row (not recomposed) 128-dim tables cat(freq, freq), built as Qwen2-VL
    inv = Qwen2VLRotaryEmbedding(Qwen2VLConfig().text_config).inv_freq
    freqs = pos_ids[..., None] * inv
    cos3, sin3 = torch.cat([freqs.cos()] * 2, -1), torch.cat([freqs.sin()] * 2, -1)
    oq, ok = apply_m_modify_multimodal_rotary_pos_emb(q, k, cos3, sin3, [16, 24, 24])
    torch.testing.assert_close(rq, oq, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rk, ok, rtol=1e-5, atol=1e-5)


def test_lta_plan_layout():
    rows = build("videorope").pair_rows.argmax(0).tolist()
    assert rows == [1, 2] * 24 + [0] * 16  # h w h w ... then t on the 16 lowest frequencies
    rows = build("videorope", frequency="mrope").pair_rows.argmax(0).tolist()
    assert rows == [0] * 16 + [1] * 24 + [2] * 24


def test_bad_flags_are_refused():
    for key, value in [("frequency", "low"), ("index_layout", "spiral"), ("text_after", "last")]:
        with pytest.raises(ValueError, match=key):
            build("videorope", **{key: value})
