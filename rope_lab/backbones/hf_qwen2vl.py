"""A transformers Qwen2-VL model (Wang et al., arXiv 2409.12191) whose position ids and rotary frequencies are
ours: any rope_lab video variant runs inside the real architecture (and real weights, for users who have them).

- Weights: ``pretrained`` = a local directory or a hub id (``Qwen2VLForConditionalGeneration.from_pretrained``);
  None builds a randomly initialised model from the small config below (offline tests, smoke runs).
- Vision: our frames (B, F, C, S, S) are patchified exactly as ``Qwen2VLVideoProcessor._preprocess`` does and
  encoded by the model's own vision tower (``get_video_features``); the merged tokens replace the embeddings
  at the sequence's vision positions.
- Positions: our PE maps the task's raw multimodal positions; the language model's ``rotary_emb`` submodule is
  replaced by :class:`PERotary`, which turns those mapped rows into the (cos, sin) tables of HF's half layout
  (``cat(cos, cos)``, used by HF's own ``apply_rotary_pos_emb``). With ``pe=mrope`` (base = the model's
  ``rope_theta``) the logits equal the unmodified model's wherever transformers' ``get_rope_index`` is correct.
- Processor inputs: ``forward(..., pixel_values_videos=, video_grid_thw=)`` takes the checkpoint's own
  ``Qwen2VLProcessor`` outputs instead of our frames (``task.processor``, rope_lab/tasks/vniah/chat.py).
- Decoding: ``new_cache()`` gives a KVCache whose ``hf_cache`` (a transformers DynamicCache) holds the keys and
  values; the PE's per-sequence state (rope deltas) stays in ``pe_state``.

Caveats: the task's byte vocabulary is not Qwen's tokenizer (a pretrained model needs ``task.processor`` = its
checkpoint folder to be meaningful); the HF vision tower does host syncs (``.tolist()`` on grid sizes) inside its
forward.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rope_lab.backbones.registry import register_backbone
from rope_lab.backbones.shared_pe import SharedPE
from rope_lab.extras import require
from rope_lab.pe import IMAGE, VIDEO, AttentionGeometry, KVCache, PositionalEncoding, Positions
from rope_lab.pe.variants.video.multimodal import example_multimodal_positions

log = logging.getLogger(__name__)


@dataclass
class HFQwen2VLConfig:
    pretrained: str | None = None  # local path or hub id of a Qwen2-VL checkpoint; None: random init below
    vocab_size: int = 256
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 256
    rope_theta: float = 1_000_000.0
    vision_depth: int = 1
    vision_embed_dim: int = 64
    vision_num_heads: int = 2
    channels: int = 1
    patch_size: int = 8
    temporal_patch_size: int = 2
    merge_size: int = 2


def random_qwen2vl(cfg: HFQwen2VLConfig):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    head_pairs = cfg.hidden_size // cfg.num_attention_heads // 2
    if head_pairs % 8:
        raise ValueError(f"head_dim/2 = {head_pairs} must divide by 8 for the scaled mrope_section [16, 24, 24]")
    section = [head_pairs // 4, 3 * head_pairs // 8, 3 * head_pairs // 8]
    text = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
                intermediate_size=cfg.intermediate_size, max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta, "mrope_section": section})
    vision = dict(depth=cfg.vision_depth, embed_dim=cfg.vision_embed_dim, num_heads=cfg.vision_num_heads,
                  hidden_size=cfg.hidden_size, in_channels=cfg.channels, patch_size=cfg.patch_size,
                  temporal_patch_size=cfg.temporal_patch_size, spatial_merge_size=cfg.merge_size)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, vocab_size=cfg.vocab_size)
    config._attn_implementation = "sdpa"
    return Qwen2VLForConditionalGeneration(config)


def patchify(video: Tensor, patch: int, temporal: int, merge: int) -> tuple[Tensor, Tensor]:
    """(B, F, C, S, S) -> (B*G*h*w, C*tp*p*p) flat patches + (B, 3) grid_thw, as Qwen2VLVideoProcessor."""
    b, f, c, hgt, wid = video.shape
    gt, gh, gw = f // temporal, hgt // patch, wid // patch
    x = video.reshape(b, gt, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9).reshape(b * gt * gh * gw, c * temporal * patch * patch)
    return x, torch.tensor([[gt, gh, gw]] * b, device=video.device)


def mapped_rows(pe: PositionalEncoding) -> int:
    """How many rows of ids the PE maps multimodal positions to (1: rope / tad_rope, 3: M-RoPE, 4: VRoPE)."""
    return pe.position_map(example_multimodal_positions(1, 8)).shape[-1]


class PERotary(SharedPE):
    """Stands in for ``Qwen2VLRotaryEmbedding``: rows of our mapped ids (the last R rows it is handed) ->
    HF (cos, sin) of shape (B, L, head_dim) in the half layout."""

    def __init__(self, pe: PositionalEncoding, n_rows: int) -> None:
        super().__init__()
        self.share_pe(pe)  # the PE belongs to the wrapper
        self.n_rows = n_rows

    def forward(self, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        pe = self.pe
        rows = position_ids[-self.n_rows :].permute(1, 2, 0).float()  # (B, L, R), already mapped
        state = pe.state_at(Positions(coords=rows), rows)
        cos, sin = pe.cos_sin(state, 0)  # (B, 1, L, P)
        factor = state.attention_factor
        cos, sin = cos[:, 0] * factor, sin[:, 0] * factor
        return torch.cat((cos, cos), -1).to(x.dtype), torch.cat((sin, sin), -1).to(x.dtype)


@register_backbone("hf_qwen2vl")
class HFQwen2VL(nn.Module):
    """transformers Qwen2-VL with rope_lab positions; ``forward(tokens, positions, cache=None, video=None)``."""

    Config = HFQwen2VLConfig

    def __init__(self, cfg: HFQwen2VLConfig, pe: PositionalEncoding, spec=None) -> None:
        super().__init__()
        require("transformers", "backbone=hf_qwen2vl")  # optional: the [hf] extra
        if spec is not None:
            extra = {k: spec.extra[k] for k in ("channels", "patch_size", "temporal_patch_size", "merge_size")
                     if k in spec.extra}
            cfg = dataclasses.replace(cfg, **extra, **({"vocab_size": spec.vocab_size} if spec.vocab_size else {}))
        if not pe.is_rotary:
            raise ValueError(f"backbone=hf_qwen2vl replaces the model's rotary frequencies; pe={pe.name} is not "
                             f"a rotary variant")
        self.cfg = cfg
        self.pretrained_source = cfg.pretrained  # weights from outside rope_lab (eval.py without ckpt_path)
        if cfg.pretrained:
            from transformers import Qwen2VLForConditionalGeneration

            self.hf = Qwen2VLForConditionalGeneration.from_pretrained(cfg.pretrained, attn_implementation="sdpa")
        else:
            self.hf = random_qwen2vl(cfg)
        text = self.hf.config.text_config
        head_dim = text.hidden_size // text.num_attention_heads
        self.pe = pe.setup(AttentionGeometry(text.hidden_size, head_dim, text.num_attention_heads,
                                             text.num_key_value_heads, text.num_hidden_layers))
        theta = text.rope_parameters["rope_theta"]
        if pe.cfg.base != theta:
            log.warning("pe.base=%s differs from the model's rope_theta=%s (frequencies change with it)",
                        pe.cfg.base, theta)
        vision = self.hf.config.vision_config
        self.patch = (vision.patch_size, vision.temporal_patch_size, vision.spatial_merge_size, vision.in_channels)
        self.lm = self.hf.model.language_model
        self.lm.rotary_emb = PERotary(self.pe, mapped_rows(self.pe))

    def processor_token_ids(self) -> tuple[int, int]:
        """(vocabulary size, video token id) a processor's token ids must fit (task.processor checks it)."""
        return self.hf.config.text_config.vocab_size, self.hf.config.video_token_id

    def new_cache(self) -> KVCache:
        from transformers import DynamicCache

        cache = KVCache(self.hf.config.text_config.num_hidden_layers)
        cache.hf_cache = DynamicCache(config=self.hf.config.text_config)
        return cache

    def embed(self, tokens: Tensor, positions: Positions, video: Tensor | None,
              processed: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = self.hf.get_input_embeddings()(tokens)
        if processed is not None:  # (B, rows, C*tp*p*p) pixel_values_videos, (B, 3) video_grid_thw of a processor
            pixels, grid = processed[0].reshape(-1, processed[0].shape[-1]), processed[1].reshape(-1, 3)
        elif video is None:
            return x
        else:
            pixels, grid = self._patchify(video)
        feats = torch.cat(self.hf.model.get_video_features(pixels, grid).pooler_output).to(x.dtype)
        vision = (positions.modality == IMAGE) | (positions.modality == VIDEO)
        return x.masked_scatter(vision[..., None].expand_as(x), feats)

    def _patchify(self, video: Tensor) -> tuple[Tensor, Tensor]:
        patch, temporal, merge, channels = self.patch
        if video.shape[2] != channels:
            if video.shape[2] != 1:
                raise ValueError(f"video has {video.shape[2]} channels; the model expects {channels}")
            video = video.expand(-1, -1, channels, -1, -1)
        return patchify(video, patch, temporal, merge)

    def forward(self, tokens: Tensor, positions: Positions, cache: KVCache | None = None,
                video: Tensor | None = None, pixel_values_videos: Tensor | None = None,
                video_grid_thw: Tensor | None = None) -> Tensor:
        mapped = self.pe.position_map(positions, cache)  # (B, L, R)
        rows = mapped.permute(2, 0, 1)
        # HF splits off row 0 as text ids (its packed-sequence check) when it gets 4 rows; PERotary reads the last R
        text_ids = positions.coords[..., 0][None]
        position_ids = torch.cat((text_ids, rows))
        processed = None if pixel_values_videos is None else (pixel_values_videos, video_grid_thw)
        out = self.lm(inputs_embeds=self.embed(tokens, positions, video, processed), position_ids=position_ids,
                      cache=None if cache is None else cache.hf_cache, use_cache=cache is not None)
        return self.hf.lm_head(out.last_hidden_state)
