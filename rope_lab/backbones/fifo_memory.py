"""The gated FIFO memory bank of the recurrent memory-augmented transformer (Kashyap, arXiv 2507.00453, 2025).

The paper (no reference code exists) says only that chunk representations enter a fixed-size bank through a gate
"inspired by recurrent networks" and that slots are managed first-in first-out. The equations here are our
documented choices:

    s_c   = mean of the block's (normed) hidden states over chunk c            (chunk summary, mean pooling)
    g_c   = sigmoid(W_g [u_{c-1}; s_c] + b_g)                                   (per-channel gate)
    u_c   = g_c * u_{c-1} + (1 - g_c) * s_c                                     (the recurrent write)
    M_c   = [M_{c-1}[1:], u_c]                                                  (FIFO push, oldest slot dropped)

``u_{-1}`` is the newest slot of a learned initial bank ``M_{-1}`` (one per layer), so a fresh sequence starts
from learned slots rather than zeros. Tokens of chunk c read ``M_{c-1}``: memory built from earlier chunks only.
The gate reads the previous write, so the recurrence is sequential over chunks (a loop of ``n_chunks`` small
matmuls); the summaries and the summary half of the gate are computed for all chunks at once, and every chunk's
bank is a sliding window over the stacked writes (no per-chunk copies).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GatedFifoMemory(nn.Module):
    def __init__(self, dim: int, slots: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.dim, self.slots = dim, slots
        self.initial = nn.Parameter(torch.randn(slots, dim) * init_std)
        self.gate = nn.Linear(2 * dim, dim)  # W_g over [u_{c-1}; s_c]

    def start(self, batch: int, dtype: torch.dtype | None = None) -> Tensor:
        """The bank before the first chunk, (B, S, dim)."""
        bank = self.initial.expand(batch, -1, -1)
        return bank if dtype is None else bank.to(dtype)

    def summaries(self, x: Tensor, chunk: int) -> Tensor:
        """(B, M, dim) starting at a chunk boundary -> (B, M // chunk, dim): means of its complete chunks."""
        b, m, d = x.shape
        full = m // chunk
        return x[:, : full * chunk].reshape(b, full, chunk, d).mean(dim=2)

    def writes(self, summaries: Tensor, last: Tensor) -> Tensor:
        """The recurrent slot values u_0..u_{C-1} (B, C, dim), from the previous write ``last`` (B, dim)."""
        w_mem, w_sum = self.gate.weight[:, : self.dim], self.gate.weight[:, self.dim :]
        from_summary = nn.functional.linear(summaries, w_sum, self.gate.bias)  # all chunks at once
        u, out = last, []
        for c in range(summaries.shape[1]):
            g = torch.sigmoid(from_summary[:, c] + nn.functional.linear(u, w_mem))
            u = g * u + (1 - g) * summaries[:, c]
            out.append(u)
        return torch.stack(out, dim=1) if out else summaries

    def banks(self, x: Tensor, bank: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
        """Hidden states ``x`` (B, M, dim) that start at a chunk boundary, and the bank before their first chunk.

        Returns (per-chunk banks (B, ceil(M / chunk), S, dim): what each chunk's tokens read; the bank after the
        last complete chunk (B, S, dim): what the next chunk will read)."""
        writes = self.writes(self.summaries(x, chunk), bank[:, -1])
        history = torch.cat([bank, writes.to(bank.dtype)], dim=1)  # (B, S + complete chunks, dim)
        windows = history.unfold(1, self.slots, 1).transpose(-1, -2)  # window c = the S slots after c writes
        n_chunks = -(-x.shape[1] // chunk)
        return windows[:, :n_chunks], windows[:, -1]
