"""Peak memory and time of one forward + backward of ``traj_transformer`` as the number of agents grows:
DRoPE-RoPE (O(N) positional state) vs query-centric RPE (O(N^2) pair embeddings) -- the DRoPE paper's claim.

    python scripts/bench_traj_memory.py [--agents 16 32 ... 1024] [--variants drope_rope rpe] [--out DIR] [--write]

On CUDA, peak memory is ``torch.cuda.max_memory_allocated``. On CPU every (variant, N) runs in a fresh child
process and peak memory is the growth of its resident set (``ru_maxrss``) during the step, so numbers include
allocator slack; the ratio between variants is what matters. Prints a table with rpe / drope_rope ratios and
writes ``traj_memory.png`` and ``traj_memory.json`` into a fresh git-ignored folder (``--write``: over the
committed ones in experiments/drope).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import rope_lab  # noqa: F401, I001 -- first: importing rope_lab sets OMP_WAIT_POLICY before torch loads OpenMP
import torch

ROOT = Path(__file__).resolve().parent.parent


def one_step(variant: str, agents: int, device: str, dim: int, depth: int, heads: int) -> dict:
    """Build the model, run one forward/backward on a random scene of ``agents`` agents; time and peak memory."""
    sys.path.insert(0, str(ROOT))
    from rope_lab.backbones.traj_transformer import TrajTransformer, TrajTransformerConfig
    from rope_lab.pe import build_pe
    from rope_lab.tasks.trajectory.positions import agent_positions

    pe_cfg = {"name": variant} if variant != "ape" else {"name": "ape", "kind": "sinusoidal"}
    cfg = TrajTransformerConfig(dim=dim, depth=depth, n_heads=heads, mlp_hidden=2 * dim, in_features=30)
    model = TrajTransformer(cfg, build_pe(pe_cfg)).to(device)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, agents, 30, generator=g).to(device)
    current = torch.cat((torch.randn(1, agents, 2, generator=g) * 2e4, torch.rand(1, agents, 1, generator=g) * 6), -1)
    positions = agent_positions(current.to(device), torch.ones(1, agents, dtype=torch.bool, device=device))
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    out = model(feats, positions)
    (out["traj"].square().mean() + out["logits"].logsumexp(-1).mean()).backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"variant": variant, "agents": agents, "peak_mib": peak / 2**20, "seconds": time.perf_counter() - start}


def measure(variant: str, agents: int, device: str, dim: int, depth: int, heads: int) -> dict:
    if device == "cuda":
        one_step(variant, min(agents, 16), device, dim, depth, heads)  # warm-up (kernels, allocator)
        return one_step(variant, agents, device, dim, depth, heads)
    cmd = [sys.executable, __file__, "--child", variant, str(agents), "--dim", str(dim), "--depth", str(depth),
           "--heads", str(heads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"variant": variant, "agents": agents, "peak_mib": math.nan, "seconds": math.nan,
                "error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def plot(rows: list[dict], path: Path) -> None:
    from rope_lab.analysis.plots import plot_curve

    for key, label in (("peak_mib", "peak memory (MiB)"), ("seconds", "forward+backward time (s)")):
        series = {}
        for r in rows:
            if math.isfinite(r[key]):
                series.setdefault(r["variant"], {})[float(r["agents"])] = r[key]
        plot_curve(series, path.with_name(f"{path.stem}_{key}.png"), "agents N", label, logy=True,
                   title="traj_transformer, one forward+backward")


def markdown(data: dict) -> str:
    """The committed memory table (traj_memory.md), generated from traj_memory.json and nothing else."""
    rows, variants = data["rows"], list(dict.fromkeys(r["variant"] for r in data["rows"]))
    ref = variants[0]
    head = ["agents N", *(f"{v} peak MiB" for v in variants), *(f"{v} / {ref} memory" for v in variants[1:]),
            *(f"{v} s" for v in variants)]
    lines = [f"Generated from traj_memory.json by scripts/bench_traj_memory.py (device {data['device']}).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sorted({r["agents"] for r in rows}):
        by = {r["variant"]: r for r in rows if r["agents"] == n}
        cells = [str(n), *(f"{by[v]['peak_mib']:.1f}" for v in variants),
                 *(f"{by[v]['peak_mib'] / by[ref]['peak_mib']:.1f}" for v in variants[1:]),
                 *(f"{by[v]['seconds']:.3f}" for v in variants)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024])
    p.add_argument("--variants", nargs="+", default=["drope_rope", "rpe"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--out", type=Path, default=None,
                   help="default: a fresh experiments/drope/runs/reproduce_<time>_<uid>/ "
                        "(experiments/drope with --write)")
    p.add_argument("--write", action="store_true",
                   help="overwrite the committed experiments/drope/traj_memory.{json,png}")
    p.add_argument("--child", nargs=2, metavar=("VARIANT", "AGENTS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        torch.set_num_threads(1)
        print(json.dumps(one_step(args.child[0], int(args.child[1]), "cpu", args.dim, args.depth, args.heads)))
        return []
    rows = [measure(v, n, args.device, args.dim, args.depth, args.heads) for n in args.agents for v in args.variants]
    ref = args.variants[0]
    print(f"device={args.device} dim={args.dim} depth={args.depth} heads={args.heads}")
    print(f"{'agents':>7} " + " ".join(f"{v + ' MiB':>16} {v + ' s':>12}" for v in args.variants)
          + "".join(f" {v + '/' + ref + ' mem':>18}" for v in args.variants[1:]))
    for n in args.agents:
        by = {r["variant"]: r for r in rows if r["agents"] == n}
        line = f"{n:>7} " + " ".join(f"{by[v]['peak_mib']:>16.1f} {by[v]['seconds']:>12.3f}" for v in args.variants)
        line += "".join(f" {by[v]['peak_mib'] / max(by[ref]['peak_mib'], 1e-9):>18.1f}" for v in args.variants[1:])
        print(line)
    sys.path.insert(0, str(ROOT))
    from rope_lab.analysis.reproduce import WRITE_ENV, output_dir

    if args.write:
        os.environ[WRITE_ENV] = "1"
    args.out = output_dir(args.out or ROOT / "experiments" / "drope")  # committed files only with --write
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {args.out / 'traj_memory.json'}")
    data = {"device": args.device, "rows": rows}
    (args.out / "traj_memory.json").write_text(json.dumps(data, indent=1))
    (args.out / "traj_memory.md").write_text(markdown(data))
    plot(rows, args.out / "traj_memory.png")
    return rows


if __name__ == "__main__":
    main()
