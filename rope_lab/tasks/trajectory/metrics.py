"""Multi-modal trajectory metrics (Waymo Open Motion / Argoverse definitions) and the winner-takes-all loss.

For K predicted modes and ground truth over horizon h (first h future steps), per target agent:
  minADE@K(h) = min_k mean_{t<=h} |pred_k,t - gt_t|,   minFDE@K(h) = min_k |pred_k,h - gt_h|,
  miss(h) = 1 if minFDE@K(h) > threshold (metres).
A constant-velocity extrapolation (last two valid past points) is reported next to them as the floor any
learned model should beat.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor


def displacement(pred: Tensor, gt: Tensor) -> Tensor:
    """pred (..., K, T, 2), gt (..., T, 2) -> (..., K, T) Euclidean errors."""
    return (pred - gt.unsqueeze(-3)).norm(dim=-1)


def min_ade_fde(pred: Tensor, gt: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """(minADE, minFDE) over the first ``steps`` future steps, per agent: (...,) each."""
    err = displacement(pred[..., :steps, :], gt[..., :steps, :])
    return err.mean(-1).amin(-1), err[..., -1].amin(-1)


def miss(min_fde: Tensor, threshold: float) -> Tensor:
    """(...,) float 1/0: the agent is missed when its minFDE exceeds ``threshold`` (metres); mean = miss rate."""
    return (min_fde > threshold).float()


def horizon_metrics(pred: Tensor, cv: Tensor, gt: Tensor, steps: int, threshold: float) -> dict[str, Tensor]:
    """Per-agent values at one horizon: minADE, minFDE, miss_rate of the K modes ``pred`` (A, K, T, 2) and
    cv_minADE, cv_minFDE of the constant-velocity floor ``cv`` (A, 1, T, 2) against ``gt`` (A, T, 2); each (A,)."""
    ade, fde = min_ade_fde(pred, gt, steps)
    cv_ade, cv_fde = min_ade_fde(cv, gt, steps)
    return {"minADE": ade, "minFDE": fde, "miss_rate": miss(fde, threshold), "cv_minADE": cv_ade,
            "cv_minFDE": cv_fde}


def wta_loss(pred: Tensor, logits: Tensor, gt: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Winner-takes-all: regress only the mode closest to the ground truth (ADE), classify that mode.

    pred (B, N, K, F, 2), logits (B, N, K), gt (B, N, F, 2) in the same units, target (B, N) bool.
    Returns (total, regression, classification), each averaged over target agents.
    """
    sel_pred, sel_logits, sel_gt = pred[target], logits[target], gt[target]
    best = displacement(sel_pred, sel_gt).mean(-1).argmin(-1)
    winner = sel_pred[torch.arange(len(best), device=pred.device), best]
    reg = F.smooth_l1_loss(winner, sel_gt)
    cls = F.cross_entropy(sel_logits.float(), best)
    return reg + cls, reg, cls


def constant_velocity(past_local: Tensor, past_mask: Tensor, future_steps: int) -> Tensor:
    """Extrapolate each agent's last displacement (agent frame; the current point is the origin).

    past_local (B, N, P, 2) with past_mask (B, N, P) -> (B, N, F, 2); agents with one valid point stand still.
    """
    prev_ok = past_mask[..., -2]
    velocity = torch.where(prev_ok[..., None], -past_local[..., -2, :], torch.zeros_like(past_local[..., -1, :]))
    steps = torch.arange(1, future_steps + 1, device=past_local.device, dtype=past_local.dtype)
    return velocity[..., None, :] * steps[:, None]


def plot_scene(past: Tensor, past_mask: Tensor, future: Tensor, target: Tensor, modes: Tensor, probs: Tensor,
               path: Path | str, title: str = "") -> Path:
    """Map-free xy view of one scene (metres, scene frame): history, ground truth and the K predicted modes.

    past (N, P, 2), past_mask (N, P), future (N, F, 2), target (N,), modes (N, K, F, 2), probs (N, K).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 6))
    km = 1e-3
    for i in range(past.shape[0]):
        hist = past[i][past_mask[i]] * km
        ax.plot(hist[:, 0], hist[:, 1], color="0.4", lw=1)
        ax.plot(hist[-1:, 0], hist[-1:, 1], "o", color="0.2", ms=3)
        if target[i]:
            ax.plot(future[i, :, 0] * km, future[i, :, 1] * km, color="green", lw=1.5)
            for k in range(modes.shape[1]):
                ax.plot(modes[i, k, :, 0] * km, modes[i, k, :, 1] * km, color="tab:red", lw=1,
                        alpha=float(0.15 + 0.85 * probs[i, k]))
    ax.set_xlabel("x east (km)")
    ax.set_ylabel("y north (km)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title + "  grey: history, green: truth, red: modes (alpha = probability)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
