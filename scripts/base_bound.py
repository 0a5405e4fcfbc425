"""Print the RoPE base lower bound (Men, Xu et al., NeurIPS 2024) for L = 1k .. 1M next to the paper's and Su
Jianlin's printed values.

    python scripts/base_bound.py [--max-length 65536] [--head-dim 128] [--dtype float64|float32] [--out FILE.md]
                                 [--write]

float64 (default) is exact; float32 emulates Su's JAX code and reproduces his row. Measured on the shared 2-core
machine while other jobs ran: all of 1k..1M in ~8 s wall (6 s of search, 1.6 s of importing torch; 1k..64k 1.4 s,
128k 0.6 s, 256k 1.0 s, 512k 1.6 s, 1M 1.4 s; the previous implementation: 38 s). float32 evaluates directly only
and is slower (all of 1k..1M ~35 s).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from rope_lab.analysis.base_bound import HEAD_DIM, LENGTHS, PAPER, SU, base_bound
from rope_lab.analysis.results import markdown_table


def table(max_length: int, head_dim: int, dtype) -> tuple[list[str], list[list]]:
    rows = []
    for n, paper, su in zip(LENGTHS, PAPER, SU):
        if n > max_length:
            break
        start = time.perf_counter()
        ours = base_bound(n, head_dim, dtype)
        rows.append([f"{n // 1024}k", f"{ours:.7g}", f"{ours:.1e}", f"{su:.1e}" if head_dim == HEAD_DIM else "-",
                     f"{paper:.1e}" if head_dim == HEAD_DIM else "-", f"{time.perf_counter() - start:.1f}"])
        print(" | ".join(rows[-1]), flush=True)
    return ["L", "ours (exact)", "ours (2 s.f.)", "Su (blog)", "paper", "seconds"], rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-length", type=int, default=LENGTHS[-1])
    parser.add_argument("--head-dim", type=int, default=HEAD_DIM)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (a committed file under "
                        "experiments/ only with --write; otherwise a fresh git-ignored folder is used)")
    parser.add_argument("--write", action="store_true", help="allow --out to overwrite committed results")
    args = parser.parse_args(argv)
    header, rows = table(args.max_length, args.head_dim, np.dtype(args.dtype).type)
    text = (f"RoPE base lower bound, head_dim={args.head_dim}, {args.dtype}\n\n" + markdown_table(rows, header))
    print(text)
    if args.out:
        from rope_lab.analysis.reproduce import WRITE_ENV, output_dir

        if args.write:
            os.environ[WRITE_ENV] = "1"
        out = output_dir(args.out.parent) / args.out.name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
