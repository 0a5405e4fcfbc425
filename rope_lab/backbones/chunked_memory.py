"""Unified attention with global, chunked-local and gated-memory paths (Kashyap, "Recurrent Memory-Augmented
Transformers with Chunked Attention for Long-Context Language Modeling", arXiv 2507.00453, 2025);
``backbone.attention=chunked_memory``. The paper has no reference code; what it leaves open is chosen here and
documented.

Per block, from one set of q/k/v projections (``Attention``'s, so weights load from ``attention=mha``):

- ``global``: causal attention over the whole sequence through ``pe.attend`` (every PE, mask and KV cache as usual).
- ``local``: causal attention inside fixed, non-overlapping chunks of ``chunk_size`` tokens (cost O(N * chunk)),
  on q/k rotated by ``pe.rotate``. Chunks follow token order (token i is in chunk i // chunk_size of its sequence),
  not coordinates. PEs that replace ``attend`` as a whole (PaTH) act on the global path only.
- ``memory``: each chunk's tokens attend to a bank of ``memory_slots`` slots written by earlier chunks
  (rope_lab/backbones/fifo_memory.py: mean-pooled chunk summaries, gate ``sigmoid(W_g [u; s])``, FIFO). Slots are
  summaries with no token position, so this path is content-only: unrotated queries, keys/values projected from
  the slots with the same k/v projections.

The enabled paths are mixed per head by learned softmax weights (zero-initialised: the mean of the paths); with
one path there is no mixing parameter and the block is exactly that path (``paths=[global]`` is ``mha``).

KV-cache decoding: the partial chunk's inputs, rotated keys and values and the bank after the last complete chunk
live per sequence in ``KVCache.pe_state["chunked_memory.<layer>"]``, so decoding token by token (across chunk
boundaries too) equals one parallel pass. The paper also carries the bank across input sequences; here each
sequence starts from the learned initial bank, and continuing a sequence is what the cache is for.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rope_lab.backbones.blocks import Attention
from rope_lab.backbones.fifo_memory import GatedFifoMemory
from rope_lab.pe import KVCache, PEState, PositionalEncoding

PATHS = ("global", "local", "memory")


@dataclass
class ChunkedMemoryConfig:
    """``backbone.chunked_memory``: used when ``backbone.attention=chunked_memory``."""

    chunk_size: int = 32
    memory_slots: int = 8
    paths: list[str] = field(default_factory=lambda: list(PATHS))  # any non-empty subset, e.g. [local, memory]


def check_config(cfg: ChunkedMemoryConfig) -> None:
    where = "backbone.chunked_memory"
    if cfg.chunk_size <= 0:
        raise ValueError(f"{where}.chunk_size must be a positive integer; got {cfg.chunk_size}")
    unknown = [p for p in cfg.paths if p not in PATHS]
    if unknown or not cfg.paths or len(set(cfg.paths)) != len(cfg.paths):
        raise ValueError(f"{where}.paths must be distinct names from {list(PATHS)}, at least one; got "
                         f"{list(cfg.paths)}" + (f" (unknown: {unknown})" if unknown else ""))
    if "memory" in cfg.paths and cfg.memory_slots <= 0:
        raise ValueError(f"{where}.memory_slots must be a positive integer with the memory path; got "
                         f"{cfg.memory_slots}")


@dataclass
class Carry:
    """Per-sequence, per-layer decoding state: the current (incomplete) chunk and the bank before it."""

    x: Tensor  # (B, r, dim) inputs of the r tokens of the incomplete chunk
    k: Tensor  # (B, Hkv, r, D) their rotated keys and their values (local path)
    v: Tensor
    bank: Tensor | None  # (B, S, dim) memory after the last complete chunk


def to_chunks(t: Tensor, front: int, chunk: int) -> Tensor:
    """(B, H, M, D) -> (B * C, H, chunk, D), padded with ``front`` zero rows before (so row 0 starts a chunk) and
    zero rows after (to whole chunks)."""
    b, h, m, d = t.shape
    n_chunks = -(-(front + m) // chunk)
    t = F.pad(t, (0, 0, front, n_chunks * chunk - front - m))
    return t.reshape(b, h, n_chunks, chunk, d).transpose(1, 2).reshape(b * n_chunks, h, chunk, d)


def from_chunks(t: Tensor, batch: int, front: int, length: int) -> Tensor:
    """Inverse of :func:`to_chunks` for query rows: (B * C, H, chunk, D) -> (B, H, length, D)."""
    bc, h, chunk, d = t.shape
    t = t.reshape(batch, bc // batch, h, chunk, d).transpose(1, 2).reshape(batch, h, -1, d)
    return t[:, :, front : front + length]


class ChunkedMemoryAttention(Attention):
    """``Attention``'s projections shared by the enabled paths (module docstring); positions only via the PE."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, layer: int, pe: PositionalEncoding,
                 cfg: ChunkedMemoryConfig, init_std: float = 0.02) -> None:
        super().__init__(dim, n_heads, n_kv_heads, layer, pe)
        check_config(cfg)
        self.chunk, self.paths = cfg.chunk_size, tuple(cfg.paths)
        if "memory" in self.paths:
            self.memory = GatedFifoMemory(dim, cfg.memory_slots, init_std)
        if len(self.paths) > 1:
            self.mix = nn.Parameter(torch.zeros(n_heads, len(self.paths)))

    def forward(self, x: Tensor, state: PEState, cache: KVCache | None = None) -> Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        carry = self._carry(x, cache)
        outs, new = {}, {}
        if "global" in self.paths:
            outs["global"] = self.pe.attend(q, k, v, state=state, layer=self.layer, causal=True, x=x, cache=cache)
        if "local" in self.paths:
            rq, rk = self.pe.rotate(q, k, state, self.layer)
            new["k"], new["v"] = torch.cat([carry.k, rk], dim=2), torch.cat([carry.v, v], dim=2)
            outs["local"] = self._local(rq, new["k"], new["v"], carry.x.shape[1], state, cache)
        if "memory" in self.paths:
            banks, new["bank"] = self.memory.banks(torch.cat([carry.x, x], dim=1), carry.bank, self.chunk)
            outs["memory"] = self._memory(q, banks, carry.x.shape[1])
        if cache is not None:
            self._keep(cache, carry, x, new)
        return self.o_proj(self._mix([outs[p] for p in self.paths]).transpose(1, 2).reshape(b, n, -1))

    def _local(self, q: Tensor, k: Tensor, v: Tensor, front: int, state: PEState, cache: KVCache | None) -> Tensor:
        """Causal attention within each chunk; ``k``/``v`` start at the chunk boundary ``front`` rows before q."""
        b, n = q.shape[0], q.shape[2]
        gqa = k.shape[1] != q.shape[1]
        qc, kc, vc = to_chunks(q, front, self.chunk), to_chunks(k, 0, self.chunk), to_chunks(v, 0, self.chunk)
        seg = state.positions.segment
        if seg is None:
            out = F.scaled_dot_product_attention(qc, kc, vc, is_causal=True, enable_gqa=gqa)
        else:  # packed documents: also stay within the document (the diagonal keeps padded rows finite)
            segs = seg if cache is None or cache.segments is None else cache.segments
            sc = to_chunks(segs[:, None, -(front + n):, None].float(), 0, self.chunk)[:, 0, :, 0]
            causal = torch.ones(self.chunk, self.chunk, dtype=torch.bool, device=q.device).tril()
            eye = torch.eye(self.chunk, dtype=torch.bool, device=q.device)
            keep = ((sc[:, :, None] == sc[:, None, :]) & causal) | eye
            out = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=keep[:, None], enable_gqa=gqa)
        return from_chunks(out, b, front, n)

    def _memory(self, q: Tensor, banks: Tensor, front: int) -> Tensor:
        """Each chunk's (unrotated) queries attend to that chunk's bank (B, C, S, dim); no mask."""
        b, n_chunks, slots, _ = banks.shape
        kv_shape = (b * n_chunks, slots, self.n_kv_heads, self.head_dim)
        k = self.k_proj(banks).reshape(kv_shape).transpose(1, 2)
        v = self.v_proj(banks).reshape(kv_shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(to_chunks(q, front, self.chunk), k, v,
                                             enable_gqa=self.n_kv_heads != self.n_heads)
        return from_chunks(out, b, front, q.shape[2])

    def _mix(self, outs: list[Tensor]) -> Tensor:
        if len(outs) == 1:
            return outs[0]
        w = torch.softmax(self.mix, dim=-1).to(outs[0].dtype)  # (H, P)
        return sum(w[:, i, None, None] * o for i, o in enumerate(outs))

    # -- KV cache ---------------------------------------------------------------------------------
    def _key(self) -> str:
        return f"chunked_memory.{self.layer}"

    def _carry(self, x: Tensor, cache: KVCache | None) -> Carry:
        if cache is not None and self._key() in cache.pe_state:
            return cache.pe_state[self._key()]
        b = x.shape[0]
        empty = x.new_zeros(b, self.n_kv_heads, 0, self.head_dim)
        bank = self.memory.start(b) if "memory" in self.paths else None
        return Carry(x.new_zeros(b, 0, x.shape[-1]), empty, empty, bank)

    def _keep(self, cache: KVCache, carry: Carry, x: Tensor, new: dict) -> None:
        """Keep the tokens of the (new) incomplete chunk and the bank before it."""
        seen = carry.x.shape[1] + x.shape[1]
        rest = seen % self.chunk
        cut = lambda t: t[..., seen - rest :, :]  # noqa: E731
        kept = replace(carry, x=cut(torch.cat([carry.x, x], dim=1)), bank=new.get("bank", carry.bank))
        if "k" in new:
            kept = replace(kept, k=cut(new["k"]), v=cut(new["v"]))
        cache.pe_state[self._key()] = kept


def chunked_memory_attention(cfg, layer: int, pe: PositionalEncoding) -> ChunkedMemoryAttention:
    """``ATTENTIONS`` factory: ``cfg`` is the decoder's config (``DecoderConfig``)."""
    return ChunkedMemoryAttention(cfg.dim, cfg.n_heads, cfg.n_kv_heads, layer, pe, cfg.chunked_memory, cfg.init_std)
