"""TAD-RoPE as VideoRoPE defines and evaluates it (Wei et al., ICML 2025, arXiv 2502.05173, baseline;
TAD-RoPE: Gao et al., arXiv 2411.16714).

Reference implementation: Wiselnn570/VideoRoPE ``get_time_rope_index`` + ``get_vanilla_rope_index``
(``vision_niah_d/eval_vision_niah.py``, ``videorope_plus/v_ruler/eval/eval_v_ruler_interrupt.py``): the id of a
token is its flattened index plus a time index; the time index is a running index for text and ``s + frame``
for every token of a frame, with text after a video continuing at ``max(time) + 1``. Text therefore advances by
2 per token, and decoding uses ``2 * position + rope_deltas``. One id per token (all rows equal in the
reference), so this is 1-D RoPE on that id.
"""

from __future__ import annotations

from dataclasses import dataclass

from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import RotaryConfig
from rope_lab.pe.variants.video.multimodal import MultimodalRotary


@dataclass
class TADRoPEConfig(RotaryConfig):
    #: the host video LLM's base: Qwen2-VL's rope_theta=1e6, the host VideoRoPE compares TAD-RoPE in
    #: (shared/reference/vision_video_variants.md sections 3, 4)
    base: float = 1000000.0


@register_pe("tad_rope")
class TADRoPE(MultimodalRotary):
    """Flattened index + time index (text: running index; a frame: s + frame number)."""

    Config = TADRoPEConfig
    n_rows = 1

    def setup(self, geometry):
        super().setup(geometry)
        self.register_buffer("pair_rows", self.section_onehot([0] * self.n_pairs, 1), persistent=False)
        return self

    def extent(self, grid, scale, positions):
        return grid[..., 0]  # the time index advances one per frame

    def vision_rows(self, start, local, grid, scale, positions):
        return (start + local[..., 0])[..., None]

    def combine(self, n, rows):
        return n[..., None] + rows
