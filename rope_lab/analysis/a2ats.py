"""Calibrate A²ATS codebooks on a trained RoPE LM checkpoint (He et al., ACL Findings 2025, arXiv 2502.12665):

    python -m rope_lab.analysis.a2ats --ckpt <run>/checkpoints/last.ckpt --out <file> [--codebook-size 4096]
    python eval.py ckpt_path=<run>/checkpoints/last.ckpt pe.name=a2ats +pe.codebooks=<file> +pe.topk=0.03

Like the reference (junhuihe-hjh/A2ATS ``vqkey/notebooks/construct_codebooks.py``: 64k tokens of FineWeb-Edu plus
16k tokens of random UUID strings, queries rotated by ``rerope_relative_pos`` = 2048), the run's model reads
calibration text — windows of its own training text plus random UUID strings — with exact attention, while a
recorder collects the WRoPE queries and pre-RoPE keys of every layer (rope_lab/analysis/a2ats_vq.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import uuid
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from rope_lab.analysis.a2ats_vq import QueryKeyCollector, build_codebooks
from rope_lab.pe.rotary import RotaryConfig
from rope_lab.pe.variants.attention.a2ats import A2ATS

READS = ("rope", "a2ats")  # runs whose attention is plain RoPE: the models A²ATS is an inference method for


def uuid_text(n_bytes: int, seed: int) -> np.ndarray:
    """``n_bytes`` of comma-separated random UUID4 strings as bytes (the reference's random-string calibration)."""
    rng = random.Random(seed)
    text = ", ".join(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n_bytes // 38 + 1))
    return np.frombuffer(text.encode()[:n_bytes], dtype=np.uint8)


def windows(stream: np.ndarray, n_tokens: int, length: int) -> torch.Tensor:
    """(ceil(n_tokens / length), length) evenly spaced windows of ``stream`` (a token array)."""
    count = max(1, -(-n_tokens // length))
    if len(stream) < length:
        raise ValueError(f"calibration text has {len(stream)} tokens, fewer than one window of {length}")
    starts = np.linspace(0, len(stream) - length, count).astype(np.int64)
    return torch.from_numpy(np.stack([stream[s : s + length] for s in starts]).astype(np.int64))


def load_model(ckpt: str, relative_pos: int):
    """(model with pe=a2ats in exact mode, LM datamodule, the run's config) from a RoPE run's checkpoint."""
    from rope_lab.evaluate import run_dir_of
    from rope_lab.run import build

    cfg = OmegaConf.load(run_dir_of(Path(ckpt)) / ".hydra" / "config.yaml")
    if cfg.pe.name not in READS or cfg.task.name != "lm_longctx":
        raise ValueError(f"A²ATS calibration reads a RoPE language model (pe in {list(READS)}, task=lm_longctx); "
                         f"{ckpt} is pe={cfg.pe.name}, task={cfg.task.name}")
    rotary = {f.name for f in dataclasses.fields(RotaryConfig)}
    kept = {k: v for k, v in OmegaConf.to_container(cfg.pe).items() if k in rotary}
    cfg.pe = OmegaConf.create({"name": "a2ats", **kept, "relative_pos": relative_pos, "dense_prefill": True})
    _, module, datamodule, model = build(cfg, load_init=False)
    module.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    datamodule.setup("fit")
    return model.eval(), datamodule, cfg


def collect(model, batches: list[torch.Tensor], offset: int = 0) -> QueryKeyCollector:
    """Run token batches through ``model`` with a recorder on its A²ATS encoding."""
    from rope_lab.tasks.lm.positions import lm_positions

    pe = next(m for m in model.modules() if isinstance(m, A2ATS))
    collector = QueryKeyCollector(pe.geometry.depth)
    pe.recorder = collector
    try:
        with torch.no_grad():
            for tokens in batches:
                model(tokens, lm_positions(tokens, offset))
    finally:
        pe.recorder = None
    return collector


def calibrate(ckpt: str, out: str | Path, codebook_size: int = 4096, n_tokens: int = 65536,
              random_tokens: int = 16384, length: int = 512, relative_pos: int = 2048, query_aware: bool = True,
              max_iter: int = 300, batch: int = 8, seed: int = 0) -> Path:
    """Codebooks for ``ckpt`` written to ``out`` (the file ``pe.codebooks`` reads)."""
    model, datamodule, cfg = load_model(ckpt, relative_pos)
    rows = windows(datamodule.train_stream, n_tokens, length)
    if random_tokens:
        rows = torch.cat([rows, windows(uuid_text(max(random_tokens, length), seed), random_tokens, length)])
    collector = collect(model, list(rows.split(batch)), int(cfg.task.position_offset))
    book = build_codebooks(collector, codebook_size, relative_pos, query_aware, max_iter, seed=seed)
    return book.save(out)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="<run>/checkpoints/last.ckpt of a RoPE LM run")
    p.add_argument("--out", required=True, help="codebook file to write (pe.codebooks)")
    p.add_argument("--codebook-size", type=int, default=4096)
    p.add_argument("--tokens", type=int, default=65536, help="training-text tokens")
    p.add_argument("--random-tokens", type=int, default=16384, help="random UUID-string tokens")
    p.add_argument("--length", type=int, default=512, help="tokens per calibration window")
    p.add_argument("--relative-pos", type=int, default=2048, help="WRoPE w of the calibration queries")
    p.add_argument("--plain", action="store_true", help="plain k-means on the keys (H = I), the baseline")
    p.add_argument("--max-iter", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    path = calibrate(a.ckpt, a.out, a.codebook_size, a.tokens, a.random_tokens, a.length, a.relative_pos,
                     not a.plain, a.max_iter, seed=a.seed)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
