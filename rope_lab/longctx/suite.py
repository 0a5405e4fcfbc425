"""``eval.py pretrained=<dir>``: load a pretrained causal LM, run the chosen evaluations, write the results.

Output: ``results.json`` (metrics, the config, the model's class and RoPE settings, the corpus source; written last,
so its presence marks a finished evaluation), ``samples.jsonl`` (one line per passkey / RULER sample: prompt
length, depths, prediction, score), ``metrics.csv`` and the plots, in a new directory that never overwrites a
finished result.
"""

from __future__ import annotations

import csv
import json
import secrets
import time
from dataclasses import asdict
from pathlib import Path

import torch

from rope_lab.longctx.causal_lm import CausalLM, load_pretrained_causal_lm
from rope_lab.longctx.config import PretrainedEvalConfig, parse_config
from rope_lab.longctx.corpus import load_long_documents
from rope_lab.longctx.passkey import run_passkey
from rope_lab.longctx.perplexity import perplexity_by_position, sliding_window_perplexity
from rope_lab.longctx.plots import write_plots
from rope_lab.longctx.prompts import split_sentences
from rope_lab.longctx.ruler import run_ruler
from rope_lab.run_dir import RESULTS_FILE


def output_dir(cfg: PretrainedEvalConfig, model_name: str) -> Path:
    if cfg.out_dir is not None:
        out = Path(cfg.out_dir)
        if (out / RESULTS_FILE).exists():
            raise FileExistsError(f"out_dir={cfg.out_dir} already holds a finished evaluation ({RESULTS_FILE}); "
                                  f"nothing is overwritten: choose another out_dir or leave it unset")
    else:
        stamp = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"
        out = Path("outputs") / "eval_pretrained" / model_name / stamp
    out.mkdir(parents=True, exist_ok=True)
    return out


def model_info(lm: CausalLM) -> dict:
    config = getattr(lm.model, "config", None)
    info = {"class": type(lm.model).__name__, "name": lm.name,
            "parameters": sum(p.numel() for p in lm.model.parameters())}
    for key in ("rope_parameters", "max_position_embeddings", "model_type"):
        if config is not None and getattr(config, key, None) is not None:
            info[key] = getattr(config, key)
    return info


def leading_tokens(lm: CausalLM, text: str, count: int) -> list[int]:
    """The first ``count`` tokens of ``text`` (fewer if it is shorter), tokenizing only a prefix of a long book."""
    chars = 16 * count  # at most ~16 characters per token in practice; the whole text when that falls short
    ids = lm.encode(text[:chars])
    return (ids if len(ids) >= count or chars >= len(text) else lm.encode(text))[:count]


def run_suite(cfg: PretrainedEvalConfig, lm: CausalLM) -> tuple[dict[str, float], list[dict], str | None]:
    """(metrics, per-sample records, corpus source) of the evaluations in ``cfg.eval_suite``, lengths ascending
    (HF dynamic scaling keeps the largest base it has seen; reference/evaluation.md section 2.2)."""
    lengths = sorted(cfg.eval_lengths)
    metrics: dict[str, float] = {}
    records: list[dict] = []
    essay_tasks = {"niah_multikey_1", "niah_multivalue", "niah_multiquery"} & set(cfg.ruler_tasks)
    needs_text = bool({"ppl_by_position", "sliding_window"} & set(cfg.eval_suite)) or (
        "ruler" in cfg.eval_suite and bool(essay_tasks))
    documents, source = load_long_documents(cfg.corpus, cfg.data_dir, cfg.corpus_path) if needs_text else ([], None)
    keep = max(lengths[-1], cfg.sliding_tokens or 2 * lengths[-1])
    token_docs = [leading_tokens(lm, d.text, keep) for d in documents[: cfg.num_documents]]
    if "ppl_by_position" in cfg.eval_suite:
        for length in lengths:
            metrics.update(perplexity_by_position(lm, token_docs, length, cfg.position_buckets).metrics())
    if "sliding_window" in cfg.eval_suite:
        scored = cfg.sliding_tokens or 2 * lengths[-1]
        for window in lengths:
            ppl = sliding_window_perplexity(lm, [d[:scored] for d in token_docs], window, cfg.sliding_stride)
            metrics[f"sliding_window/ppl@window={window}/stride={cfg.sliding_stride}"] = ppl
    if "passkey" in cfg.eval_suite:
        found, rows = run_passkey(lm, lengths, list(cfg.depths), cfg.passkey_trials, cfg.seed)
        metrics.update(found)
        records += rows
    if "ruler" in cfg.eval_suite:
        essay = [s for d in documents for s in split_sentences(d.text)]
        found, rows = run_ruler(lm, list(cfg.ruler_tasks), lengths, list(cfg.depths), cfg.ruler_samples, cfg.seed,
                                essay, cfg.ruler_threshold)
        metrics.update(found)
        records += rows
    return metrics, records, source


def write_results(out: Path, cfg: PretrainedEvalConfig, lm: CausalLM, metrics: dict[str, float],
                  records: list[dict], source: str | None, seconds: float) -> Path:
    with open(out / "samples.jsonl", "w") as f:
        for row in records:
            f.write(json.dumps(row) + "\n")
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "value"])
        writer.writerows(sorted(metrics.items()))
    plots = write_plots(metrics, out, lm.name)
    result = {"metrics": metrics, "config": asdict(cfg), "model": model_info(lm), "corpus_source": source,
              "plots": [p.name for p in plots], "seconds": round(seconds, 2), "torch": torch.__version__}
    path = out / RESULTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    return path


def evaluate_pretrained(values: dict) -> dict[str, float]:
    cfg = parse_config(values)
    torch.manual_seed(cfg.seed)
    start = time.time()
    lm = load_pretrained_causal_lm(cfg.pretrained, cfg.device, cfg.dtype, cfg.pe, cfg.scaling)
    out = output_dir(cfg, lm.name)
    metrics, records, source = run_suite(cfg, lm)
    path = write_results(out, cfg, lm, metrics, records, source, time.time() - start)
    width = max((len(k) for k in metrics), default=6)
    print("\n".join(f"{k:<{width}}  {v:.6g}" for k, v in sorted(metrics.items())))
    print(f"results: {path}")
    return metrics
