"""Time every way of cutting the Triton rotary launch into programs on this GPU (issue 6).

    python scripts/tune_triton_rope.py [--scale 8] [--out benchmarks]

For bench_rope.py's 1-D, 2-D and 3-D shapes in fp32 and bf16 it times the forward kernel (the backward is the same
kernel) for rows per program x head groups x warps (``triton_rope.LaunchConfig``) as GPU time (CUDA-graph replays
after an L2 flush, ``bench_rope.graph_time``) and prints each as a multiple of copying q and k into preallocated
buffers (the memory-bandwidth floor), marking what ``choose_config`` picks and the fastest. It is how the defaults
in ``choose_config`` are checked on a new GPU; writes <out>/triton_rope_tuning.{json,md}. The copy here is timed
the same way (graph replays), to compare cuts with each other; bench_rope.py's table is the bandwidth verdict
(on an H100 a graph-replayed fp32 copy ran ~20 % slower than the launched one, hence ratios below 1 here).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import rope_lab  # noqa: F401, I001 -- first: importing rope_lab sets OMP_WAIT_POLICY before torch loads OpenMP
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_rope  # noqa: E402  (a sibling script: its shapes and GPU timer)

from rope_lab.pe.kernels import triton_rope  # noqa: E402

ROWS = (8, 16, 32, 64)
GROUPS = (1, 2)
WARPS = (4, 8)


def tune_shape(shape: bench_rope.Shape, dtype: torch.dtype) -> dict:
    pe, pos = bench_rope.build(shape, "triton", "cuda")
    coords, plan, factor = pe.prepare(pos).rotation
    size = (shape.batch, shape.heads, shape.length, shape.head_dim)
    q, k = (torch.randn(size, device="cuda", dtype=dtype) for _ in range(2))
    bufs = torch.empty_like(q), torch.empty_like(k)
    copy = bench_rope.graph_time(lambda: (bufs[0].copy_(q), bufs[1].copy_(k)))
    interleaved = pe.cfg.pair_layout == "interleaved"
    block_p = triton_rope._pow2(plan[0].shape[-1])
    default = triton_rope.choose_config(shape.batch * shape.length, shape.heads, block_p)
    configs = {triton_rope.LaunchConfig(*c) for c in itertools.product(ROWS, GROUPS, WARPS)} | {default}
    times = {}
    for cfg in sorted(configs, key=lambda c: (c.rows, c.groups, c.num_warps)):
        times[cfg] = bench_rope.graph_time(
            lambda cfg=cfg: triton_rope._launch(q, k, coords, plan, factor, interleaved, 1.0, cfg))
    best = min(times, key=times.get)
    row = {"shape": shape.name, "dtype": str(dtype).replace("torch.", ""), "copy_ms": copy * 1e3,
           "default": vars(default), "best": vars(best), "default_x_copy": times[default] / copy,
           "best_x_copy": times[best] / copy,
           "configs": [{**vars(c), "ms": t * 1e3, "x_copy": t / copy} for c, t in times.items()]}
    print(f"{row['shape']:<32} {row['dtype']:<8} copy {copy * 1e3:.3f} ms | default {default} "
          f"{row['default_x_copy']:.2f}x | best {best} {row['best_x_copy']:.2f}x", flush=True)
    return row


def markdown(result: dict) -> str:
    lines = [f"Measured {result['date']} on {result['gpu']}, batch scale {result['scale']}; forward kernel GPU time "
             "(CUDA-graph replays, L2 flushed) as a multiple of copying q and k (1 / fraction of the bandwidth "
             "floor).", "", "| shape | dtype | copy ms | default config | default x copy | best config | best x copy |",
             "|---|---|---|---|---|---|---|"]
    fmt = lambda c: f"rows {c['rows']}, groups {c['groups']}, warps {c['num_warps']}"  # noqa: E731
    for r in result["rows"]:
        lines.append(f"| {r['shape']} | {r['dtype']} | {r['copy_ms']:.3f} | {fmt(r['default'])} | "
                     f"{r['default_x_copy']:.2f} | {fmt(r['best'])} | {r['best_x_copy']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=8.0, help="multiply bench_rope's batch sizes")
    ap.add_argument("--out", type=Path, default=bench_rope.ROOT / "benchmarks")
    args = ap.parse_args()
    if not triton_rope.available():
        sys.exit("tune_triton_rope.py needs a CUDA GPU and triton")
    rows = []
    for shape in bench_rope.SHAPES:
        shape = bench_rope.Shape(shape.name, shape.pe, max(1, round(shape.batch * args.scale)), shape.heads,
                                 shape.length, shape.head_dim, shape.grid)
        for dtype in (torch.float32, torch.bfloat16):
            rows.append(tune_shape(shape, dtype))
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "gpu": torch.cuda.get_device_name(), "scale": args.scale,
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "triton_rope_tuning.json").write_text(json.dumps(result, indent=1))
    (args.out / "triton_rope_tuning.md").write_text(markdown(result))
    print(f"wrote {args.out}/triton_rope_tuning.json and .md")


if __name__ == "__main__":
    main()
