"""Frequency usage of a trained rotary model (Barbero et al., "Round and Round We Go!", ICLR 2025, §4-5).

For every layer and head, the paper measures how much each RoPE frequency is used by the 2-norm of the query
(and key) restricted to that frequency's 2-D chunk, averaged over tokens. High-frequency chunks are used for
positional patterns, the lowest-frequency chunks carry semantic information. ``capture_qk`` records the
pre-rotation q/k every layer hands to the PE (no backbone change: it wraps the PE's ``rotate`` for one forward).

    python -m rope_lab.analysis.frequency_usage RUN_DIR [--out usage.png] [--length 256] [--batches 4]
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402


@contextmanager
def capture_qk(pe):
    """Record (layer, q, k) given to ``pe.rotate`` (pre-rotation, B H N D) while the context is open."""
    records: list[tuple[int, Tensor, Tensor]] = []
    original = pe.rotate

    def recording(q, k, state, layer):
        records.append((layer, q.detach(), k.detach()))
        return original(q, k, state, layer)

    pe.rotate = recording
    try:
        yield records
    finally:
        del pe.rotate  # back to the class method


def chunk_norms(x: Tensor, n_pairs: int, layout: str = "half") -> Tensor:
    """x (B, H, N, D) -> (H, P): mean over tokens of the 2-norm of each rotary pair (frequency chunk)."""
    x = x.float()
    if layout == "half":
        a, b = x[..., :n_pairs], x[..., n_pairs : 2 * n_pairs]
    elif layout == "interleaved":
        a, b = x[..., 0 : 2 * n_pairs : 2], x[..., 1 : 2 * n_pairs : 2]
    else:
        raise ValueError(f"unknown pair_layout '{layout}'; choose one of ['half', 'interleaved']")
    return (a.square() + b.square()).sqrt().mean(dim=(0, 2))


@torch.no_grad()
def frequency_usage(model, batches: list[tuple[Tensor, object]]) -> dict[str, Tensor]:
    """{"q": (L, H, P), "k": (L, Hkv, P)} mean chunk norms over the given (tokens, positions) batches."""
    pe = model.pe
    n_pairs, layout = pe.n_pairs, pe.cfg.pair_layout
    sums: dict[str, dict[int, Tensor]] = {"q": {}, "k": {}}
    for tokens, positions in batches:
        with capture_qk(pe) as recs:
            model(tokens, positions)
        for layer, q, k in recs:
            for name, x in (("q", q), ("k", k)):
                sums[name][layer] = sums[name].get(layer, 0) + chunk_norms(x, n_pairs, layout) / len(batches)
    return {name: torch.stack([per[i] for i in sorted(per)]) for name, per in sums.items()}


def plot_usage(usage: dict[str, Tensor], path: Path | str, title: str = "") -> Path:
    """Heat-map: rows = (layer, head), columns = frequency index (0 = highest frequency)."""
    path = Path(path)
    fig, axes = plt.subplots(1, len(usage), figsize=(5 * len(usage), 4), squeeze=False)
    for ax, (name, u) in zip(axes[0], usage.items()):
        layers, heads, pairs = u.shape
        im = ax.imshow(u.reshape(layers * heads, pairs).numpy(), aspect="auto", cmap="viridis")
        ax.set_xlabel("frequency index i (theta_i = base^(-2i/d); 0 = highest)")
        ax.set_ylabel("layer x head")
        ax.set_yticks(range(0, layers * heads, heads), [f"L{i}" for i in range(layers)])
        ax.set_title(f"{title} mean |{name}| per frequency chunk")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_run_model(run_dir: Path):
    """The model of a finished run (its config + the best or last checkpoint) and its datamodule."""
    from omegaconf import OmegaConf

    from rope_lab.run import build

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    task, module, datamodule, model = build(cfg)
    ckpts = sorted((run_dir).rglob("*.ckpt"))
    if not ckpts:
        raise FileNotFoundError(f"no checkpoint (*.ckpt) under {run_dir}")
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    return model.eval(), datamodule


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args(argv)
    from rope_lab.tasks.lm.datamodule import EvalWindows
    from rope_lab.tasks.lm.positions import lm_positions

    model, dm = load_run_model(args.run_dir)
    dm.setup()
    windows = EvalWindows(dm.val_stream, args.length, 4 * args.batches)
    batches = []
    for i in range(args.batches):
        tokens = torch.stack([windows[4 * i + j]["tokens"][:-1] for j in range(4)])
        batches.append((tokens, lm_positions(tokens)))
    path = plot_usage(frequency_usage(model, batches), args.out or args.run_dir / "frequency_usage.png",
                      title=model.pe.name)
    print(path)
    return path


if __name__ == "__main__":
    main()
