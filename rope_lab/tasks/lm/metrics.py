"""Metrics of the long-context LM task, as pure functions of (logits, targets) so they can be checked against
hand-computed answers (tests/tasks/test_metric_known_answers.py).

- ``val/ppl@L`` = exp(mean token NLL) over the evaluation windows of length L. Every window has L predicted
  tokens, so the mean over windows of the per-window mean NLL (what the module accumulates) is the token mean.
- ``val/passkey@len=L/depth=d``: teacher-forced exact match; a sample counts only if EVERY key digit after the
  question is the model's argmax. ``val/passkey@len=L`` is its mean over the depths (each depth has
  ``passkey_samples`` samples) and ``val/passkey_acc`` the mean over every (length, depth) cell.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def token_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """(B, N, V) logits, (B, N) targets -> (B, N) float32 next-token negative log-likelihood (nats)."""
    return F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")


def window_nll(nll: Tensor) -> Tensor:
    """(B, N) token NLL -> (B,) mean NLL of each window (every token of an evaluation window counts)."""
    return nll.mean(dim=1)


def perplexity(mean_nll: Tensor | float) -> Tensor | float:
    """exp of a mean token NLL (never the mean of per-window perplexities)."""
    return mean_nll.exp() if isinstance(mean_nll, Tensor) else math.exp(mean_nll)


def passkey_exact_match(logits: Tensor, targets: Tensor, answer_mask: Tensor) -> Tensor:
    """(B,) bool: every target under ``answer_mask`` (B, N) is the argmax of its logits (B, N, V)."""
    correct = (logits.argmax(-1) == targets) | ~answer_mask
    return correct.all(dim=1)
