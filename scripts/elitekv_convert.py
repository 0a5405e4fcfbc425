"""Convert a trained RoPE LLaMA run into EliteKV (arXiv 2503.01586): RoPElite chunk selection + J-LRD weights.

    python scripts/elitekv_convert.py outputs/lm_longctx/rope/<date>/<run>/checkpoints/last.ckpt \
        --out elitekv_model --chunks 4 --kv-dim 32 [--selection ropelite|uniform] [--calib-batches 4]

Prints the train.py overrides that uptrain the converted model (``init_ckpt=<out>/model.pt
backbone.attention=elitekv pe=elitekv pe.selection=<out>/selection.pt ...``).
"""

from __future__ import annotations

import argparse
import sys

from rope_lab.analysis.elitekv import SELECTIONS, convert_run, heldout_ppl, kv_values_per_token, load_run


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", help="checkpoint of a train.py run with pe=rope, backbone.attention=mha")
    p.add_argument("--out", required=True, help="folder for model.pt (and selection.pt)")
    p.add_argument("--chunks", type=int, required=True, help="r: RoPE chunks kept per head (1..head_dim/2)")
    p.add_argument("--kv-dim", type=int, required=True, help="joint K/V latent width (J-LRD rank)")
    p.add_argument("--selection", choices=SELECTIONS, default="ropelite")
    p.add_argument("--calib-batches", type=int, default=4, help="training batches RoPElite calibrates on")
    p.add_argument("--ppl", action="store_true", help="also print the held-out perplexity before and after")
    args = p.parse_args(argv)
    done = convert_run(args.ckpt, args.out, args.chunks, args.kv_dim, args.selection, args.calib_batches)
    attn = done.model.blocks[0].attn
    kept, full = kv_values_per_token(attn.n_heads, attn.head_dim, args.chunks, args.kv_dim)
    print(f"KV cache per token and layer: {kept} of {full} values ({100 * kept / full:.1f} %)")
    if args.ppl:
        _, source, datamodule = load_run(args.ckpt)
        print(f"held-out ppl: RoPE {heldout_ppl(source, datamodule):.3f}, "
              f"EliteKV (no uptraining) {heldout_ppl(done.model, datamodule):.3f}")
    print("uptrain with: python train.py " + " ".join(done.overrides))


if __name__ == "__main__":
    main(sys.argv[1:])
