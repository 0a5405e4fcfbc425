"""FreeFlux layer probing and region-preserved editing on a trained RoPE DiT (Wei et al., ICCV 2025,
arXiv 2503.16153; official code ``wtybest/FreeFlux``: ``probing/probing_attn_utils.py``
``FluxAttnProcessor2_0_Probing``, ``probing/positional_dependency_eval.py``, ``editing/*_attn_utils.py``).

Probing: in ONE attention layer, at EVERY sampling step, the keys get no RoPE (``none``) or RoPE of image
positions shifted by (d_row, d_col) (text ids are not shifted); queries keep their RoPE, values are untouched,
every other layer runs normally. The score is ``cv2.PSNR`` between the unmodified and the manipulated sample,
averaged over seeds/classes and manipulations: a LOW PSNR means the layer fetches information by position.

Both mechanisms are PE-side wrappers (:class:`KeyProbe`, :class:`ValueInjection`) swapped into the model for
the duration of a ``with`` block (:func:`use_pe`): the backbone never learns that it is being probed.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rope_lab.analysis.plots import plt, save_figure
from rope_lab.backbones.shared_pe import pe_users
from rope_lab.pe import IMAGE, KVCache, PEState, PositionalEncoding, Positions


@dataclass(frozen=True)
class Manipulation:
    """``none`` (keys unrotated) or ``shift`` by (d_row, d_col) image-grid positions."""

    kind: str
    d_row: int = 0
    d_col: int = 0

    @classmethod
    def parse(cls, text: str) -> Manipulation:
        """'none' or 'shift:R,C'."""
        if text == "none":
            return cls("none")
        if text.startswith("shift:"):
            try:
                r, c = (int(v) for v in text[6:].split(","))
            except ValueError as err:
                raise ValueError(f"bad probe manipulation '{text}'; use 'none' or 'shift:R,C' (integers)") from err
            return cls("shift", r, c)
        raise ValueError(f"unknown probe manipulation '{text}'; choose 'none' or 'shift:R,C'")

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"shift:{self.d_row},{self.d_col}"


def freeflux_manipulations(grid_rows: int) -> list[Manipulation]:
    """FreeFlux's four manipulations (none; shifts (10,10), (0,20), (64,0) on FLUX's 64x64 grid) rescaled to
    a grid of ``grid_rows`` rows (at least one position)."""
    scale = grid_rows / 64
    shifts = [(10, 10), (0, 20), (64, 0)]
    out = [Manipulation("none")]
    for r, c in shifts:
        out.append(Manipulation("shift", round(r * scale) if r else 0, max(1, round(c * scale)) if c else 0))
    return out


def _check_layer(layer: int, n_layers: int) -> None:
    if not 0 <= layer < n_layers:
        raise ValueError(f"probed layer {layer} is out of range: this model has attention layers 0..{n_layers - 1}")


def shift_image_positions(positions: Positions, d_row: int, d_col: int) -> Positions:
    """Image tokens' (row, col) — the last two axes — moved by (d_row, d_col); text/prefix tokens unchanged."""
    coords = positions.coords.clone()
    delta = torch.tensor([d_row, d_col], dtype=coords.dtype, device=coords.device)
    is_img = torch.ones(coords.shape[:2], dtype=torch.bool, device=coords.device)
    if positions.modality is not None:
        is_img = positions.modality == IMAGE
    coords[..., -2:] += is_img[..., None] * delta
    return Positions(coords, positions.modality, positions.segment, dict(positions.meta))


class _Wrapper(PositionalEncoding):
    """Delegates every site to the trained PE ``inner`` (kept out of the module tree)."""

    def __init__(self, inner: PositionalEncoding) -> None:
        super().__init__()
        # rotary variants attend as the base class does without a cache (rotate -> bias -> SDPA)
        if not inner.is_rotary and type(inner).attend is not PositionalEncoding.attend:
            raise ValueError(f"pe={inner.name} owns its attention kernel; it cannot be probed key-by-key")
        self._inner = [inner]
        self.name = f"{type(self).__name__}({inner.name})"

    @property
    def inner(self) -> PositionalEncoding:
        return self._inner[0]

    def prepare(self, positions: Positions, cache: KVCache | None = None) -> PEState:
        return self.inner.prepare(positions, cache)

    def embed(self, x: Tensor, state: PEState) -> Tensor:
        return self.inner.embed(x, state)

    def rotate(self, q: Tensor, k: Tensor, state: PEState, layer: int) -> tuple[Tensor, Tensor]:
        return self.inner.rotate(q, k, state, layer)

    def bias(self, state: PEState, layer: int, n_queries: int, n_keys: int) -> Tensor | None:
        return self.inner.bias(state, layer, n_queries, n_keys)


@dataclass
class ProbeState(PEState):
    """The trained PE's own state, and its state at shifted positions (the probed layer's keys rotate by it)."""

    inner: PEState | None = None
    shifted: PEState | None = None


class KeyProbe(_Wrapper):
    """In layer ``layer`` the keys get no RoPE or shifted positions; queries and values are unchanged."""

    def __init__(self, inner: PositionalEncoding, layer: int, manipulation: Manipulation | str) -> None:
        super().__init__(inner)
        if not inner.is_rotary:
            raise ValueError(f"FreeFlux probing manipulates RoPE; pe={inner.name} is not a rotary variant")
        _check_layer(layer, inner.geometry.depth)
        self.layer = layer
        self.manipulation = Manipulation.parse(manipulation) if isinstance(manipulation, str) else manipulation

    def prepare(self, positions: Positions, cache: KVCache | None = None) -> ProbeState:
        state = self.inner.prepare(positions, cache)
        m = self.manipulation
        shifted = None
        if m.kind == "shift":
            shifted = self.inner.prepare(shift_image_positions(positions, m.d_row, m.d_col), cache)
        return ProbeState(positions=state.positions, coords=state.coords, inner=state, shifted=shifted)

    def embed(self, x: Tensor, state: ProbeState) -> Tensor:
        return self.inner.embed(x, state.inner)

    def bias(self, state: ProbeState, layer: int, n_queries: int, n_keys: int) -> Tensor | None:
        return self.inner.bias(state.inner, layer, n_queries, n_keys)

    def rotate(self, q: Tensor, k: Tensor, state: ProbeState, layer: int) -> tuple[Tensor, Tensor]:
        q_rot, k_rot = self.inner.rotate(q, k, state.inner, layer)
        if layer != self.layer:
            return q_rot, k_rot
        if self.manipulation.kind == "none":
            return q_rot, k
        return q_rot, self.inner.rotate(q, k, state.shifted, layer)[1]


class ValueInjection(_Wrapper):
    """FreeFlux region-preserved editing on a [source, target] batch: while ``active``, in every layer the
    target's values at ``target_idx`` are replaced by the source's values at ``source_idx`` (keys untouched)."""

    def __init__(self, inner: PositionalEncoding, source_idx: Tensor, target_idx: Tensor) -> None:
        super().__init__(inner)
        self.source_idx, self.target_idx, self.active = source_idx, target_idx, True

    def attend(self, q: Tensor, k: Tensor, v: Tensor, **kw) -> Tensor:
        if self.active:
            if v.shape[0] % 2:
                raise ValueError(f"value injection needs a [source, target] batch; got batch {v.shape[0]}")
            v = v.clone()
            half = v.shape[0] // 2
            v[half:, :, self.target_idx] = v[:half, :, self.source_idx]
        return super().attend(q, k, v, **kw)


@contextmanager
def use_pe(model: nn.Module, pe: PositionalEncoding):
    """Temporarily give ``model`` (and every block sharing its PE, rope_lab.backbones.shared_pe) another PE."""
    old = model.pe
    holders = list(pe_users(model, old))
    model._modules["pe"] = pe
    for m in holders:
        m.share_pe(pe)
    try:
        yield pe
    finally:
        model._modules["pe"] = old
        for m in holders:
            m.share_pe(old)


def psnr(reference: Tensor, image: Tensor) -> Tensor:
    """Per-image ``cv2.PSNR`` of images in [0, 1] quantised to uint8: 20 log10(255 / (sqrt(MSE) + eps))."""
    a, b = (x.mul(255).round().clamp(0, 255).double() for x in (reference, image))
    mse = (a - b).pow(2).flatten(1).mean(1)
    return 20 * torch.log10(255.0 / (mse.sqrt() + 2.220446049250313e-16))


@torch.no_grad()
def probe_layers(model: nn.Module, generate, labels: Tensor, noise: Tensor,
                 manipulations: list[Manipulation], layers: list[int] | None = None) -> dict[int, dict[str, float]]:
    """{layer: {manipulation: mean PSNR vs the unmodified sample}}; ``generate(labels, noise)`` samples."""
    n_layers = model.num_attention_layers
    layers = list(range(n_layers)) if layers is None else layers
    for layer in layers:
        _check_layer(layer, n_layers)
    reference = generate(labels, noise)
    table: dict[int, dict[str, float]] = {}
    for layer in layers:
        table[layer] = {}
        for m in manipulations:
            with use_pe(model, KeyProbe(model.pe, layer, m)):
                table[layer][str(m)] = float(psnr(reference, generate(labels, noise)).mean())
    return table


def ranking(table: dict[int, dict[str, float]]) -> list[tuple[int, float]]:
    """Layers sorted from most position-dependent (lowest mean PSNR) to least."""
    means = {layer: sum(v.values()) / len(v) for layer, v in table.items()}
    return sorted(means.items(), key=lambda kv: kv[1])


def plot_ranking(table: dict[int, dict[str, float]], path: Path | str, title: str = "") -> Path:
    """Bars: mean PSNR per layer in ranking order; dots: each manipulation."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = ranking(table)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(order) + 2), 3.5))
    xs = range(len(order))
    ax.bar(xs, [v for _, v in order], color="lightsteelblue", label="mean")
    for name in next(iter(table.values())):
        ax.plot(xs, [table[layer][name] for layer, _ in order], "o", ms=4, label=name)
    ax.set_xticks(list(xs), [str(layer) for layer, _ in order])
    ax.set_xlabel("attention layer (most position-dependent first)")
    ax.set_ylabel("PSNR vs unmodified (dB)")
    ax.set_title(title or "FreeFlux key-RoPE probing")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def foreground_tokens(image: Tensor, patch: tuple[int, int], threshold: float = 0.1, dilate: int = 1) -> Tensor:
    """Token mask (rows, cols) of an image (1, H, W) in [0, 1]: patches whose mean exceeds ``threshold``,
    dilated by ``dilate`` tokens (the SAM2 mask, dilated and resized to the token grid, in FreeFlux)."""
    mask = F.avg_pool2d(image[None].float(), patch)[0, 0] > threshold
    if dilate:
        mask = F.max_pool2d(mask[None, None].float(), 2 * dilate + 1, 1, dilate)[0, 0] > 0
    return mask


def move_indices(mask: Tensor, d_row: int, d_col: int, offset: int = 0) -> tuple[Tensor, Tensor]:
    """(source, target) flat token indices of the masked tokens moved by (d_row, d_col), kept in the grid;
    ``offset`` = number of tokens before the image (a text stream)."""
    rows, cols = mask.shape
    r, c = mask.nonzero(as_tuple=True)
    keep = (r + d_row >= 0) & (r + d_row < rows) & (c + d_col >= 0) & (c + d_col < cols)
    r, c = r[keep], c[keep]
    return offset + r * cols + c, offset + (r + d_row) * cols + (c + d_col)


def center_of_mass(images: Tensor) -> Tensor:
    """(B, 1, H, W) -> (B, 2) intensity-weighted (row, col) centre in pixels."""
    h, w = images.shape[-2:]
    mass = images.sum(dim=(-1, -2)).clamp_min(1e-8)
    rows = (images.sum(-1) * torch.arange(h, dtype=images.dtype)).sum(-1) / mass
    cols = (images.sum(-2) * torch.arange(w, dtype=images.dtype)).sum(-1) / mass
    return torch.cat([rows, cols], dim=-1)


@torch.no_grad()
def move_object(model: nn.Module, generate, label: Tensor, noise: Tensor, shift: tuple[int, int], steps: int,
                text_tokens: int = 0, inject_fraction: float = 0.9, threshold: float = 0.1) -> dict[str, Tensor]:
    """Region-preserved object movement: sample the source, mask its foreground tokens, then sample a
    [source, target] pair from the same noise with target V(fg + shift) <- source V(fg) in every layer for the
    first ``inject_fraction`` of the steps (FreeFlux: all 57 layers, steps 0-44 of 50)."""
    if not 0 < inject_fraction <= 1:
        raise ValueError(f"inject_fraction must be in (0, 1]; got {inject_fraction}")
    source = generate(label, noise)
    mask = foreground_tokens(source[0], tuple(model.cfg.patch_size), threshold)
    src_idx, tgt_idx = move_indices(mask, shift[0], shift[1], text_tokens)
    inj = ValueInjection(model.pe, src_idx, tgt_idx)
    cutoff = math.ceil(inject_fraction * steps)

    def on_step(i: int) -> None:
        inj.active = i < cutoff

    with use_pe(model, inj):
        pair = generate(label.repeat(2), noise.repeat(2, 1, 1, 1), on_step=on_step)
    return {"before": source[0], "after": pair[1], "source_in_pair": pair[0], "mask": mask}


def save_before_after(rows: list[dict[str, Tensor]], path: Path | str, title: str = "") -> Path:
    """A figure with one row per edit: before | after | foreground token mask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(rows), 3, figsize=(5, 1.7 * len(rows)), squeeze=False)
    for ax_row, r in zip(axes, rows):
        before = r["before"][0].cpu()
        for ax, img, name in zip(ax_row, (before, r["after"][0].cpu(), before),
                                 ("before", "after (moved)", "moved tokens (red) on before")):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(name, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        # the token mask stretched over the pixel grid, red and translucent, so it reads on any background
        h, w = before.shape
        overlay = torch.zeros(*r["mask"].shape, 4)
        overlay[..., 0], overlay[..., 3] = 1.0, 0.45 * r["mask"].float().cpu()
        ax_row[2].imshow(overlay, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
    return save_figure(fig, path, title)
