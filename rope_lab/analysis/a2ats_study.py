"""A²ATS (He et al., ACL Findings 2025, arXiv 2502.12665; official code: github.com/hjhe0/A2ATS) as a seeded analysis
study: experiments/a2ats/study.yaml runs :func:`study_seed` per seed.

A seed trains its own RoPE LM (the default byte-level decoder at L = 512, batch 4; ``seed=<seed>``), calibrates
query-aware and plain k-means codebooks on its training text (k-means and the random-UUID calibration text seeded by
the seed too), scores each codebook's WRoPE-score error on held-out text, and evaluates perplexity at 512 with
``pe.name=a2ats`` for every retrieval setting next to full attention and the local window + sinks alone. Every
setting of a seed is the same trained model, so the paired differences compare retrieval methods, not trainings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BUDGETS = {"full": 600, "quick": 150}  # training steps of each seed's LM (the committed single-seed run: 600)
LENGTH, BATCH = 512, 4
WINDOW, SINKS, RELATIVE_POS = 16, 4, 256  # local window (the paper's 64 is for 32k+), sinks, WRoPE w < L
CALIB_TOKENS, MAX_ITER = 32768, 100
PPL, ERROR = f"val/ppl@{LENGTH}", "vq/score_error"


@dataclass(frozen=True)
class Retrieval:
    """One evaluated setting: top-k fraction (None: full attention), codebook size (None: exact keys) and kind."""

    topk: float | None = None
    size: int | None = None
    query_aware: bool = True


SETTINGS = {
    "full attention": Retrieval(),
    "window+sinks": Retrieval(topk=0.0),
    "WRoPE exact k0.1": Retrieval(topk=0.1),
    "A2ATS-16 k0.03": Retrieval(0.03, 16, True), "plainVQ-16 k0.03": Retrieval(0.03, 16, False),
    "A2ATS-16 k0.1": Retrieval(0.1, 16, True), "plainVQ-16 k0.1": Retrieval(0.1, 16, False),
    "A2ATS-256 k0.1": Retrieval(0.1, 256, True), "plainVQ-256 k0.1": Retrieval(0.1, 256, False),
}


def train_overrides(steps: int, seed: int) -> list[str]:
    return [f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "trainer.enable_progress_bar=false",
            f"task.train_length={LENGTH}", f"task.batch_size={BATCH}", f"task.eval_lengths=[{LENGTH}]",
            "task.passkey_lengths=[]", f"seed={seed}"]


def pe_overrides(r: Retrieval, codebooks: Path | None) -> dict:
    """eval.py overrides of one setting (none for full attention: the trained RoPE model as it is)."""
    if r.topk is None:
        return {}
    over = {"pe.name": "a2ats", "+pe.local_window": WINDOW, "+pe.sinks": SINKS, "+pe.topk": r.topk}
    if r.topk > 0:
        over["+pe.relative_pos"] = RELATIVE_POS
    if codebooks is not None:
        over["+pe.codebooks"] = str(codebooks)
    return over


def codebook_path(run_dir: Path, size: int, query_aware: bool, seed: int) -> Path:
    """The calibrated codebooks of one kind and size, computed once per trained run."""
    from rope_lab.analysis.a2ats import calibrate

    path = run_dir / f"codebooks_{'qa' if query_aware else 'plain'}_{size}_w{RELATIVE_POS}.pt"
    if not path.exists():
        calibrate(str(run_dir / "checkpoints" / "last.ckpt"), path, size, CALIB_TOKENS, CALIB_TOKENS // 4, LENGTH,
                  RELATIVE_POS, query_aware, MAX_ITER, seed=seed)
    return path


def score_errors(ckpt: Path, books: dict, relative_pos: int | None = None, tokens: int | None = None,
                 length: int | None = None) -> dict:
    """Mean relative WRoPE-score error over layers on held-out text (``tokens`` of it in windows of ``length``), per
    codebook file; the study's settings unless given."""
    from rope_lab.analysis.a2ats import collect, load_model, windows
    from rope_lab.analysis.a2ats_vq import relative_score_error
    from rope_lab.pe.variants.attention.a2ats_codebooks import CodebookFile

    model, datamodule, _ = load_model(str(ckpt), relative_pos or RELATIVE_POS)
    held_out = collect(model, list(windows(datamodule.val_stream, tokens or CALIB_TOKENS // 4,
                                           length or LENGTH).split(8)))
    return {key: sum(e := relative_score_error(held_out, CodebookFile.load(f))) / len(e) for key, f in books.items()}


def study_seed(seed: int, budget: str = "full", root: Path | None = None) -> dict[str, dict[str, float]]:
    """{setting: {val/ppl@512: ..., vq/score_error: ... (codebook settings)}} for one seed's trained LM."""
    from rope_lab.analysis.study import EXPERIMENTS, train_one
    from rope_lab.evaluate import evaluate

    if budget not in BUDGETS:
        raise ValueError(f"a2ats study: no budget {budget!r}; choose one of {list(BUDGETS)}")
    run_dir = (root or EXPERIMENTS / "a2ats" / "runs" / "seeds" / budget) / f"lm_seed{seed}"
    train_one(run_dir, train_overrides(BUDGETS[budget], seed))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    books = {(r.size, r.query_aware): codebook_path(run_dir, r.size, r.query_aware, seed)
             for r in SETTINGS.values() if r.size is not None}
    errors = score_errors(ckpt, books)
    out = {}
    for name, r in SETTINGS.items():
        book = books.get((r.size, r.query_aware))
        out[name] = {PPL: evaluate(str(ckpt), pe_overrides(r, book))[PPL]}
        if book is not None:
            out[name][ERROR] = errors[r.size, r.query_aware]
    return out
