"""The one interface every long-context evaluation is written against, and the loader of a pretrained directory.

A causal LM here is any ``torch.nn.Module`` whose ``forward(input_ids (B, N) long)`` returns next-token logits
(B, N, V), or an object with ``.logits`` (a Hugging Face output), plus a tokenizer with ``encode(text) -> ids`` and
``decode(ids) -> text``. That covers an HF ``AutoModelForCausalLM`` with its tokenizer, rope_lab's own byte-level
decoder (:class:`DecoderLM` + :class:`ByteTokenizer`) and any scripted model a test writes.

Two things long contexts need (reference/evaluation.md, pitfall 8): the per-token loss is computed chunk by chunk
from the final hidden states when the model exposes them (an HF ``...ForCausalLM``), never from the full T x V
logits, and generation uses the model's KV cache when it has one (HF ``generate``, greedy; rope_lab's decoder
through :meth:`DecoderLM.greedy`), else it re-runs the whole sequence for every new token and takes the argmax.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)
#: tokens whose logits are materialised at once when the loss is computed from hidden states
LOSS_CHUNK = 4096
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as token ids (vocabulary 256), as rope_lab's ``task=lm_longctx`` models read text."""

    eos_token_id = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class DecoderLM(nn.Module):
    """rope_lab's decoder (``backbone(tokens, positions)``) behind the plain ``forward(input_ids)`` interface."""

    def __init__(self, decoder: nn.Module, position_offset: int = 0) -> None:
        super().__init__()
        self.decoder, self.position_offset = decoder, position_offset

    def forward(self, input_ids: Tensor) -> Tensor:
        from rope_lab.tasks.lm.positions import lm_positions

        return self.decoder(input_ids, lm_positions(input_ids, self.position_offset))

    @property
    def decodes_with_cache(self) -> bool:
        """Whether greedy decoding can keep keys and values in a :class:`KVCache` (the PE supports it)."""
        return bool(self.decoder.pe.supports_kv_cache) and callable(getattr(self.decoder, "new_cache", None))

    @torch.no_grad()
    def greedy(self, ids: Tensor, max_new_tokens: int, eos: int | None) -> list[int]:
        """Greedy decoding with the KV cache: one pass over the prompt, then one token per step at its own position.
        A length-dependent scaling follows its ``kv_cache`` mode (``hf``: cached keys keep the rotation they were
        written with, as transformers' ``generate``; ``consistent``: every key re-rotated at the current length)."""
        from rope_lab.tasks.lm.positions import lm_positions

        cache, start = self.decoder.new_cache(), self.position_offset

        def advance(token: int, step: int) -> Tensor:
            nxt = ids.new_tensor([[token]])
            return self.decoder(nxt, lm_positions(nxt, start + ids.shape[1] + step), cache)[0, -1]

        return argmax_tokens(lambda: self.decoder(ids, lm_positions(ids, start), cache)[0, -1], advance,
                             max_new_tokens, eos)


def argmax_tokens(prompt_logits: Callable[[], Tensor], advance: Callable[[int, int], Tensor], max_new_tokens: int,
                  eos: int | None) -> list[int]:
    """Greedy decoding loop: ``prompt_logits()`` the next-token logits after the prompt, ``advance(token, step)`` those
    after appending the step-th new token; stops at ``eos`` or after ``max_new_tokens`` (no forward beyond them)."""
    new: list[int] = []
    logits = prompt_logits() if max_new_tokens > 0 else None
    for step in range(max_new_tokens):
        new.append(int(logits.argmax()))
        if new[-1] == eos or step == max_new_tokens - 1:
            break
        logits = advance(new[-1], step)
    return new


def logits_of(model: nn.Module, ids: Tensor) -> Tensor:
    out = model(ids)
    return out if isinstance(out, Tensor) else out.logits


@dataclass
class CausalLM:
    """A model + tokenizer pair with the operations the evaluations use."""

    model: nn.Module
    tokenizer: Any
    name: str = "model"

    def __post_init__(self) -> None:
        self.model.eval()
        self._hidden_path = _hidden_state_path_matches(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device if any(True for _ in self.model.parameters()) \
            else torch.device("cpu")

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids))

    @torch.no_grad()
    def token_nll(self, ids: Tensor) -> Tensor:
        """(1, N) ids -> (N - 1,) float32 NLL (nats) of tokens 1..N-1, each given every token before it."""
        ids = ids.to(self.device)
        targets = ids[0, 1:]
        if not self._hidden_path:
            return F.cross_entropy(logits_of(self.model, ids)[0, :-1].float(), targets, reduction="none")
        hidden = self.model.base_model(input_ids=ids).last_hidden_state[0, :-1]
        head = self.model.get_output_embeddings()
        return torch.cat([F.cross_entropy(head(hidden[s : s + LOSS_CHUNK]).float(), targets[s : s + LOSS_CHUNK],
                                          reduction="none") for s in range(0, len(targets), LOSS_CHUNK)])

    @torch.no_grad()
    def greedy(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation of ``prompt`` (new tokens only), stopping at the tokenizer's EOS if it has one."""
        ids = torch.tensor([prompt], device=self.device)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if _has_kv_cache_generate(self.model):
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                      do_sample=False, num_beams=1, eos_token_id=eos,
                                      pad_token_id=eos if eos is not None else 0)
            new = out[0, ids.shape[1]:].tolist()
            return new[: new.index(eos) + 1] if eos in new else new
        if isinstance(self.model, DecoderLM) and self.model.decodes_with_cache:
            return self.model.greedy(ids, max_new_tokens, eos)
        def advance(token: int, step: int) -> Tensor:  # without a cache: the whole sequence again per new token
            nonlocal ids
            ids = torch.cat([ids, ids.new_tensor([[token]])], dim=1)
            return logits_of(self.model, ids)[0, -1]

        return argmax_tokens(lambda: logits_of(self.model, ids)[0, -1], advance, max_new_tokens, eos)

    def generate_text(self, prompt: str, max_new_tokens: int) -> str:
        new = self.greedy(self.encode(prompt), max_new_tokens)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        return self.decode([t for t in new if t != eos])


def _has_kv_cache_generate(model: nn.Module) -> bool:
    can = getattr(model, "can_generate", None)
    return callable(can) and bool(can()) and getattr(getattr(model, "config", None), "use_cache", True)


@torch.no_grad()
def _hidden_state_path_matches(model: nn.Module, probe: int = 8) -> bool:
    """Whether head(base_model(ids).last_hidden_state) reproduces the model's own logits on a short probe: true for
    plain HF decoders, false for models that scale or cap logits after the head (then the full logits are used)."""
    head = getattr(model, "get_output_embeddings", lambda: None)()
    base = getattr(model, "base_model", None)
    if head is None or base is None or base is model:
        return False
    try:
        vocab = head.weight.shape[0]
        ids = torch.arange(probe, device=head.weight.device).remainder(vocab)[None]
        direct = logits_of(model, ids).float()
        via_hidden = head(base(input_ids=ids).last_hidden_state).float()
    except Exception as err:  # noqa: BLE001 - any mismatch in signatures means: use the model's own logits
        log.info("loss from hidden states unavailable (%s); using full logits", err)
        return False
    return direct.shape == via_hidden.shape and torch.allclose(direct, via_hidden, rtol=1e-3, atol=1e-3)


def load_pretrained_causal_lm(path: str, device: str = "auto", dtype: str = "auto", pe=None, scaling=None
                              ) -> CausalLM:
    """A local HF checkpoint directory (config.json + weights + tokenizer files) -> :class:`CausalLM`.

    The single place a pretrained directory is loaded; nothing is downloaded (``local_files_only``). With ``pe``
    and/or ``scaling`` the model runs through rope_lab's positional encodings
    (rope_lab.backbones.hf_causal_lm.load_pretrained_causal_lm: the same weights, attention via the pe)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = Path(path).expanduser()
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"pretrained={path!r} is not a checkpoint directory (no config.json in it)")
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; choose one of {['auto', *DTYPES]}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
    if pe is not None or scaling is not None:
        from rope_lab.backbones.hf_causal_lm import load_pretrained_causal_lm as with_rope_lab_positions

        model = with_rope_lab_positions(root, pe=pe, scaling=scaling, dtype=dtype).to(device)
        return CausalLM(model, tokenizer, name=f"{root.name} ({model.pe.name})")
    model = AutoModelForCausalLM.from_pretrained(str(root), local_files_only=True,
                                                 dtype="auto" if dtype == "auto" else DTYPES[dtype]).to(device)
    return CausalLM(model, tokenizer, name=root.name)
