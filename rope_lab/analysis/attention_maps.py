"""Attention of one query patch at two (or more) test resolutions, from a frozen ``task=image_cls`` checkpoint
(RoPE-ViT Fig. 4 style: does the attention pattern survive a resolution change?).

    python -m rope_lab.analysis.attention_maps CKPT [--resolutions 28 56] [--layer -1] [--query 0.5 0.5]
                                               [--index 0] [--out attention.png]

The query is given as a fraction of the image height/width so that it points at the same image content at
every resolution. Weights come from the PE's own ``attend`` (values = identity), so any variant is shown
exactly as the model computes it; they are averaged over heads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from rope_lab.analysis.plots import plt
from rope_lab.tasks.image_cls.positions import image_positions, patch_grid


@torch.no_grad()
def attention_map(model, image: torch.Tensor, layer: int, query: tuple[float, float]) -> torch.Tensor:
    """(C, H, W) image -> (rows, cols) head-averaged attention of the query patch at ``query`` (fractions)."""
    model.eval()
    rows, cols = patch_grid(image.shape[-2:], model.patch_size)
    pos = image_positions(1, (rows, cols), model.num_prefix_tokens, image.device)
    x, state = model.tokens(image[None], pos)
    layer = layer % len(model.blocks)
    for block in model.blocks[:layer]:
        x = block(x, state)
    block = model.blocks[layer]
    probs = block.attn.attention_probs(block.norm1(x), state)  # (1, H, N, N)
    r, c = min(int(query[0] * rows), rows - 1), min(int(query[1] * cols), cols - 1)
    q_idx = model.num_prefix_tokens + r * cols + c
    return probs[0, :, q_idx, model.num_prefix_tokens :].mean(0).reshape(rows, cols)


def plot_attention(images: list[torch.Tensor], maps: list[torch.Tensor], query: tuple[float, float],
                   titles: list[str], path: Path | str) -> Path:
    """One column per resolution: the image with the query marked, and the attention map."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, len(images), figsize=(3 * len(images), 6), squeeze=False)
    for i, (img, att, title) in enumerate(zip(images, maps, titles)):
        h, w = img.shape[-2:]
        shown = img.mean(0) if img.shape[0] != 3 else img.permute(1, 2, 0)
        axes[0, i].imshow(shown.cpu().numpy(), cmap="gray" if img.shape[0] != 3 else None)
        axes[0, i].plot([query[1] * w], [query[0] * h], "r+", markersize=14)
        axes[0, i].set_title(title)
        axes[1, i].imshow(att.cpu().numpy(), cmap="viridis")
        axes[1, i].set_title(f"attention ({att.shape[0]}x{att.shape[1]} patches)")
        for ax in axes[:, i]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_frozen(ckpt_path: str, resolutions: list[int]):
    """(model, datamodule) of a trained run, with validation loaders at ``resolutions``."""
    from rope_lab.evaluate import run_dir_of
    from rope_lab.run import build

    cfg = OmegaConf.load(run_dir_of(Path(ckpt_path)) / ".hydra" / "config.yaml")
    OmegaConf.update(cfg, "task.eval_resolutions", list(resolutions), merge=False)
    _, module, datamodule, model = build(cfg)
    module.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"])
    datamodule.setup("validate")
    return model.eval(), datamodule


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt")
    p.add_argument("--resolutions", type=int, nargs="+", default=[28, 56])
    p.add_argument("--layer", type=int, default=-1)
    p.add_argument("--query", type=float, nargs=2, default=[0.5, 0.5], metavar=("ROW_FRAC", "COL_FRAC"))
    p.add_argument("--index", type=int, default=0, help="validation image index")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    for f in args.query:
        if not 0.0 <= f <= 1.0:
            p.error(f"--query fractions must be in [0, 1]; got {args.query}")
    model, dm = load_frozen(args.ckpt, args.resolutions)
    task_res = list(dm.cfg.eval_resolutions)
    images = [dm.val_dataloader()[task_res.index(r)].dataset[args.index][0] for r in args.resolutions]
    maps = [attention_map(model, img, args.layer, tuple(args.query)) for img in images]
    out = args.out or Path(args.ckpt).resolve().parent.parent / f"attention_layer{args.layer}.png"
    path = plot_attention(images, maps, tuple(args.query), [f"{r} px ({model.pe.name})" for r in args.resolutions], out)
    print(path)
    return path


if __name__ == "__main__":
    main()
