"""Tiny Hugging Face checkpoints and a tokenizer built here (no hub): what a user's local checkpoint dir holds."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 300
TEXTS = ["The pass key is 12345. Remember it.", "def rotate(q, k): return q * cos + rotate_half(q) * sin",
         "Rotary position embeddings extend to long contexts with YaRN, NTK and LongRoPE scaling.",
         "0123456789 the quick brown fox jumps over the lazy dog"] * 4


def tiny_config(family: str = "llama", rope: dict | None = None, **overrides):
    """2 layers, hidden 64, 4 heads (2 key heads), vocabulary 300; ``rope``: HF rope_parameters (default RoPE)."""
    from transformers import AutoConfig

    kw = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=False,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0, **(rope or {})})
    if family == "mistral":
        kw["sliding_window"] = None
    return AutoConfig.for_model(family, **{**kw, **overrides})


def save_checkpoint(path: Path, family: str = "llama", rope: dict | None = None, seed: int = 0, **overrides) -> Path:
    """A random model of ``tiny_config`` saved with save_pretrained (safetensors) in ``path``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, rope, **overrides))
    with torch.no_grad():  # HF initialises norms to 1: make them random so a wrong mapping shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.normal_(1.0 if "norm" in name else 0.0, 0.1)
    model.save_pretrained(path)
    return path


def save_tokenizer(path: Path) -> Path:
    """A byte-level BPE tokenizer (vocabulary <= 300) trained on a few local strings, saved with save_pretrained."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 2, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(path)
    return path
