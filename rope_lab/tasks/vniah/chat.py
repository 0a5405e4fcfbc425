"""V-NIAH / V-NIAH-D through a checkpoint's own processor (``task.processor=<Qwen2-VL checkpoint dir>``), so a
pretrained Qwen2-VL (Wang et al., arXiv 2409.12191) is asked the question the way it was trained: the chat
template of its tokenizer, its vision tokens (``<|vision_start|><|video_pad|>...<|vision_end|>``), its video
processor's resizing and patchification (``pixel_values_videos``, ``video_grid_thw``). The evaluation protocol
stays VideoRoPE's (``eval_vision_niah.py``): teacher-forced exact match of the answer tokens.

Positions stay ours: the raw (index, t, row, col) coords are read off the processed sequence (video tokens in
the processor's order: temporal grid, then merged row, then merged column, as transformers' ``get_rope_index``
assumes), and every video pe maps them; with ``pe=mrope`` the ids equal ``get_rope_index``'s.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rope_lab.pe import TEXT, VIDEO


def chat_coords(tokens: Tensor, video_token_id: int, grid_thw: Tensor, merge: int) -> tuple[Tensor, Tensor]:
    """(N, 4) float raw coords and (N,) modality of one processed sequence with one video block."""
    is_video = tokens == video_token_id
    t, h, w = (int(x) for x in grid_thw)
    h, w = h // merge, w // merge
    if int(is_video.sum()) != t * h * w:
        raise ValueError(f"the sequence has {int(is_video.sum())} video tokens but video_grid_thw {tuple(grid_thw)} "
                         f"with merge {merge} gives {t * h * w}; processor and tokenizer do not belong together")
    grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"), -1)
    thw = torch.zeros(len(tokens), 3)
    thw[is_video] = grid.reshape(-1, 3).float()
    modality = torch.full((len(tokens),), TEXT, dtype=torch.long)
    modality[is_video] = VIDEO
    return torch.cat((torch.arange(len(tokens), dtype=torch.float32)[:, None], thw), -1), modality


@dataclass
class ChatEncoder:
    """A V-NIAH item (frames + needle label) -> the processor's tensors + answer tokens + our raw positions."""

    path: str
    question: str
    answer_texts: tuple[str, ...]  # one per label

    def __post_init__(self) -> None:
        from transformers import AutoProcessor

        try:
            self.processor = AutoProcessor.from_pretrained(self.path)
        except Exception as err:  # noqa: BLE001 - a wrong folder: one line naming what was looked for
            raise FileNotFoundError(f"task.processor={self.path}: no processor/tokenizer could be loaded from it "
                                    f"({type(err).__name__}: {err}); give the Qwen2-VL checkpoint folder") from err
        tok = self.processor.tokenizer
        video_token = getattr(self.processor, "video_token", None)
        if video_token is None or not hasattr(self.processor, "video_processor"):
            raise ValueError(f"task.processor={self.path} is a {type(self.processor).__name__}, not a video-language "
                             f"processor (no video_token / video_processor)")
        self.video_token_id = tok.convert_tokens_to_ids(video_token)
        self.merge = int(self.processor.video_processor.merge_size)
        self.vocab_size = len(tok)
        self.answers = [tok(a, add_special_tokens=False)["input_ids"] for a in self.answer_texts]
        self.answer_len = max(len(a) for a in self.answers)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": self.question}]}]
        self.prompt = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, frames: np.ndarray, label: int) -> dict:
        """(F, S, S) uint8 grey frames -> item dict (``tokens`` ends with the padded answer)."""
        rgb = np.repeat(frames[..., None], 3, axis=-1)
        out = self.processor(text=[self.prompt], videos=[rgb], return_tensors="pt")
        ids, answer = out["input_ids"][0], self.answers[label]
        pad = [self.pad_id] * (self.answer_len - len(answer))
        tokens = torch.cat((ids, torch.tensor(answer + pad, dtype=ids.dtype)))
        coords, modality = chat_coords(tokens, self.video_token_id, out["video_grid_thw"][0], self.merge)
        answer_mask = torch.zeros(len(tokens) - 1, dtype=torch.bool)
        answer_mask[len(ids) - 1 : len(ids) - 1 + len(answer)] = True  # targets are shifted by one
        return {"tokens": tokens, "pixel_values_videos": out["pixel_values_videos"],
                "video_grid_thw": out["video_grid_thw"][0], "coords": coords, "modality": modality,
                "answer_mask": answer_mask, "label": label}

    def sequence_length(self, n_frames: int, frame_size: int) -> int:
        return len(self.encode(np.zeros((n_frames, frame_size, frame_size), dtype=np.uint8), 0)["tokens"])


@functools.lru_cache(maxsize=4)
def chat_encoder(path: str, question: str, answer_texts: tuple[str, ...]) -> ChatEncoder:
    """One processor per (checkpoint, question) per process (the task, its datamodule and checks share it)."""
    return ChatEncoder(path, question, answer_texts)


class ChatBuilder:
    """A ``VNIAHBuilder``'s videos, encoded by the checkpoint's processor instead of our byte layout."""

    def __init__(self, builder, encoder: ChatEncoder) -> None:
        self.builder, self.encoder, self.cfg = builder, encoder, builder.cfg

    def item(self, rng: np.random.Generator, n_frames: int, depth: float) -> dict:
        frames, label, distractor = self.builder.video(rng, n_frames, depth)
        return {**self.encoder.encode(frames, label), "distractor": distractor}
