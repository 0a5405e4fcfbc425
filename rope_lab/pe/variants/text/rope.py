"""RoPE (RoFormer, Su et al., arXiv 2104.09864): theta_j = base^(-2j/d), one axis (token index).

Reference implementations: HF `LlamaRotaryEmbedding` + `apply_rotary_pos_emb` (pair_layout=half) and
HF GPT-J / RoFormer `rotate_every_two` (pair_layout=interleaved).
"""

from __future__ import annotations

from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import Rotary


@register_pe("rope")
class RoPE(Rotary):
    """Vanilla 1-D RoPE. With multi-axis coords it uses the first axis only if ``max_axes`` allows it."""

    max_axes = 1
    #: on interleaved text/video positions it reads axis 0, the flattened token index: VideoRoPE's "vanilla
    #: RoPE" baseline (``get_vanilla_rope_index``: every token, text or vision, at its index in the sequence)
    multimodal = True

    def position_map(self, positions, cache=None):
        return positions.coords[..., :1]
