"""A²ATS (He et al., ACL Findings 2025) training-free at CPU scale: train the default RoPE LM (byte-level LLaMA,
python_docs) at L = 512, calibrate codebooks on its training text (query-aware, and plain k-means with H = I) at two
codebook sizes, then report on held-out text (1) the WRoPE-score error of each codebook and (2) perplexity at 512
with ``pe.name=a2ats`` at several top-k fractions, next to full attention, WRoPE retrieval on exact keys (no VQ) and
the local window + sinks alone; writes experiments/a2ats/results.md (runs and codebooks go to multirun/a2ats/).

    python scripts/reproduce.py a2ats [--steps 600] [--topk 0.03 0.1 0.25] [--codebook-sizes 16 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rope_lab.analysis.reproduce import run_entry, shown, write_report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PAPER_W = 2048  # the official wrope_relative_pos
EXACT, QA, PLAIN = "WRoPE, exact keys (no VQ)", "A²ATS: WRoPE + query-aware VQ", "WRoPE + plain k-means VQ (H = I)"


def train_base(out: Path, steps: int, length: int, batch: int) -> Path:
    base = out / "rope"
    if not (base / "results.json").exists():
        run_entry(["train.py", f"hydra.run.dir={base}", f"trainer.max_steps={steps}",
                   "trainer.enable_progress_bar=false",
                   f"task.train_length={length}", f"task.batch_size={batch}", f"task.eval_lengths=[{length}]",
                   "task.passkey_lengths=[]"])
    return base / "checkpoints" / "last.ckpt"


def codebooks(args, ckpt: Path, size: int, w: int, aware: bool) -> Path:
    from rope_lab.analysis.a2ats import calibrate

    path = args.out / f"codebooks_{'qa' if aware else 'plain'}_{size}_w{w}.pt"
    if not path.exists():
        calibrate(str(ckpt), path, size, args.calib_tokens, args.calib_tokens // 4, args.length, w, aware,
                  args.max_iter)
    return path


def score_errors(args, ckpt: Path, files: dict) -> dict:
    """Mean relative WRoPE-score error over layers, on held-out text, per codebook file."""
    from rope_lab.analysis.a2ats_study import score_errors as errors

    return errors(ckpt, files, args.relative_pos, args.calib_tokens // 4, args.length)


def ppl(ckpt: Path, length: int, pe: dict | None) -> float:
    from rope_lab.evaluate import evaluate

    over = {} if pe is None else {"pe.name": "a2ats", **{f"+pe.{k}": v for k, v in pe.items()}}
    return evaluate(str(ckpt), over)[f"val/ppl@{length}"]


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--topk", type=float, nargs="+", default=[0.03, 0.1, 0.25])
    p.add_argument("--window", type=int, default=16, help="local_window (the paper's 64 is for 32k+ contexts)")
    p.add_argument("--sinks", type=int, default=4)
    p.add_argument("--relative-pos", type=int, default=256, help="WRoPE w inside the trained range")
    p.add_argument("--codebook-sizes", type=int, nargs="+", default=[16, 256])
    p.add_argument("--calib-tokens", type=int, default=32768)
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--out", type=Path, default=ROOT / "multirun" / "a2ats" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    p.add_argument("--tables", type=Path, default=HERE)
    args = p.parse_args(argv)
    os.environ.setdefault("ROPE_LAB_KERNEL", "eager")  # no compile time in short runs (as run_entry)
    started = time.time()
    ckpt = train_base(args.out, args.steps, args.length, args.batch)
    w, big = args.relative_pos, max(args.codebook_sizes)
    files = {(kind, size): codebooks(args, ckpt, size, w, kind == QA) for kind in (QA, PLAIN)
             for size in args.codebook_sizes}
    errors = score_errors(args, ckpt, files)
    common = {"local_window": args.window, "sinks": args.sinks}
    rows = [("full attention (RoPE)", "-", "-", "-", ppl(ckpt, args.length, None)),
            ("local window + sinks only", 0.0, "-", "-", ppl(ckpt, args.length, {**common, "topk": 0.0}))]
    for topk in args.topk:
        base = {**common, "topk": topk, "relative_pos": w}
        rows.append((EXACT, topk, w, "-", ppl(ckpt, args.length, base)))
        rows += [(kind, topk, w, size, ppl(ckpt, args.length, {**base, "codebooks": str(files[kind, size])}))
                 for size in args.codebook_sizes for kind in (QA, PLAIN)]
    mid = args.topk[len(args.topk) // 2]
    paper = {**common, "topk": mid, "relative_pos": PAPER_W}
    rows.append((EXACT, mid, PAPER_W, "-", ppl(ckpt, args.length, paper)))
    paper_book = codebooks(args, ckpt, big, PAPER_W, True)
    rows.append((QA, mid, PAPER_W, big, ppl(ckpt, args.length, {**paper, "codebooks": str(paper_book)})))
    return write_report(args.tables, report(args, rows, errors, started))


def report(args, rows: list[tuple], errors: dict, started: float) -> list[str]:
    sizes, w = args.codebook_sizes, args.relative_pos
    lines = [f"# A²ATS, training-free, on a RoPE LM trained at L = {args.length}", "",
             f"Written by `python scripts/reproduce.py a2ats` on {time.strftime('%Y-%m-%d')} "
             f"({(time.time() - started) / 60:.1f} min; finished runs and codebooks in {shown(args.out)} are reused). "
             f"Byte-level LLaMA decoder (4 layers, dim 128, 4 query / 2 key heads, head_dim 32), python_docs, "
             f"{args.steps} steps at {args.length} (batch {args.batch}). Held-out text at {args.length}; every "
             f"query retrieves for itself (as if decoded token by token); local_window {args.window}, sinks "
             f"{args.sinks}. Codebooks per layer and key head from {args.calib_tokens} training tokens + "
             f"{args.calib_tokens // 4} random-UUID tokens.", "",
             f"## WRoPE-score error of the codebooks (held-out, w = {w}; mean over layers)", "",
             "| codebook size | query-aware VQ | plain k-means VQ (H = I) |", "|---|---|---|"]
    lines += [f"| {n} | {errors[QA, n]:.4f} | {errors[PLAIN, n]:.4f} |" for n in sizes]
    lines += ["", "## Perplexity", "", "| retrieval | top-k fraction | WRoPE w | codebook size | ppl |",
              "|---|---|---|---|---|"]
    lines += [f"| {name} | {topk} | {ww} | {n} | {v:.3f} |" for name, topk, ww, n, v in rows]
    by = {r[:4]: r[4] for r in rows}
    pairs = [(by[QA, t, w, n], by[PLAIN, t, w, n]) for n in sizes for t in args.topk]
    wins = sum(a < b for a, b in pairs)
    err_wins = sum(errors[QA, n] < errors[PLAIN, n] for n in sizes)
    small, top = min(sizes), args.topk[-1]
    lines += ["", "## Claims", "",
              f"- query-aware VQ approximates the retrieval (WRoPE) scores better than plain k-means: lower held-out "
              f"score error at {err_wins} of {len(sizes)} codebook sizes -> {_verdict(err_wins, len(sizes))}",
              f"- and retrieves better: lower ppl in {wins} of {len(pairs)} (size, top-k) settings -> "
              f"{_verdict(wins, len(pairs))}; with {small} centroids: "
              + ", ".join(f"{by[QA, t, w, small]:.3f} vs {by[PLAIN, t, w, small]:.3f}" for t in args.topk),
              f"- retrieval approaches full attention as top-k grows: A²ATS ({max(sizes)} centroids) "
              f"{by[QA, top, w, max(sizes)]:.3f} at top-k {top}, exact-key WRoPE {by[EXACT, top, w, '-']:.3f}, full "
              f"{rows[0][4]:.3f}; window + sinks alone {rows[1][4]:.3f}", ""]
    return lines


def _verdict(wins: int, total: int) -> str:
    return "held" if wins == total else "partly held" if wins else "NOT held"


if __name__ == "__main__":
    main(sys.argv[1:])
