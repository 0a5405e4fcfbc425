"""Tiny local models for the long-context evaluation tests: a random HF Llama saved with ``save_pretrained`` next to
a byte-level BPE tokenizer trained here, and scripted byte-level "models" that answer from the prompt."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from rope_lab.longctx.ruler_tasks import NEEDLE

VOCAB = 256


def save_tiny_llama(path: Path, max_positions: int = 4096) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([NEEDLE, "The grass is green. The sky is blue. The sun is yellow. Here we go.",
                             "What is the pass key? The pass key is 12345. Remember it.",
                             "Some special magic numbers are hidden within the following text. VAR ABCDE = 12345"],
                            trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(path)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def _ruler_answer(prompt: str) -> str:
    """What a perfect reader answers to a passkey or RULER-style prompt (parsed from the prompt, as a person would)."""
    if prompt.endswith("they are:"):  # variable tracking: follow the chain from the value
        task = prompt[prompt.rindex("Memorize and track"):]  # after the one-shot example
        value, names = re.findall(r"assigned the value (\d+) in the text above", task)[-1], []
        for name, source in re.findall(r"VAR (\w+) = (VAR \w+|\d+)", task):
            if source == value or source.removeprefix("VAR ") in names:
                names.append(name)
        return " " + " ".join(names)
    if prompt.endswith("The pass key is"):
        return " " + re.findall(r"The pass key is (\d+)\. Remember", prompt)[-1]
    asked = re.findall(r"magic numbers? for (.+?) mentioned in the provided text\?", prompt)[-1]
    keys = re.split(r", and |, ", asked)
    return " " + ", ".join(v for k in keys for v in re.findall(rf"for {re.escape(k)} is: (\d+)\.", prompt))


#: how every evaluated prompt ends (the answer prefixes): what follows the last one is the model's own output
PROMPT_ENDS = re.compile(r"mentioned in the provided text (?:are|is)|they are:|The pass key is")


class ScriptedByteLM(nn.Module):
    """A byte-level "model" whose logits spell ``answer(prompt)`` after the prompt, then spaces: an oracle with the
    default ``answer``, a wrong model with another. The prompt ends at the last answer prefix in the input."""

    def __init__(self, answer=_ruler_answer) -> None:
        super().__init__()
        self.answer = answer

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        text = bytes(input_ids[0].tolist()).decode("utf-8", errors="replace")
        end = [m.end() for m in PROMPT_ENDS.finditer(text)][-1]
        answer = self.answer(text[:end]).encode()
        done = len(text[end:].encode())
        logits = torch.zeros(1, input_ids.shape[1], VOCAB)
        logits[0, -1, answer[done] if done < len(answer) else ord(" ")] = 1.0
        return logits
