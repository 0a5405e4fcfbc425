"""Running and scoring the RULER-style tasks (:mod:`rope_lab.longctx.ruler_tasks`) as RULER scores them
(reference/evaluation.md sections 1.3-1.4): greedy decoding of the task's generation budget after the answer
prefix; ``string_match_all`` per sample (the fraction of references contained, case-insensitive, in the cleaned
prediction); per task and length the mean over samples; per length the unweighted mean over tasks; over lengths the
plain mean and RULER's index-weighted means (weights 1..n increasing / n..1 decreasing); the effective length is
the largest tested length whose score exceeds ``threshold``. Scores are on a 0-1 scale (RULER prints x100).
"""

from __future__ import annotations

from rope_lab.longctx.causal_lm import CausalLM
from rope_lab.longctx.prompts import string_match_all
from rope_lab.longctx.ruler_tasks import TASKS, ruler_sample


def check_tasks(tasks: list[str]) -> None:
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"ruler_tasks={tasks}: unknown or empty {unknown}; choose from {list(TASKS)}")


def length_summary(per_length: dict[int, float], threshold: float) -> dict[str, float]:
    """RULER's aggregates over lengths (sorted increasing): avg, wavg_inc, wavg_dec, effective_length (0: none)."""
    lengths = sorted(per_length)
    scores = [per_length[n] for n in lengths]
    inc = list(range(1, len(lengths) + 1))
    passed = [n for n in lengths if per_length[n] > threshold]
    return {"ruler/avg": sum(scores) / len(scores),
            "ruler/wavg_inc": sum(w * s for w, s in zip(inc, scores)) / sum(inc),
            "ruler/wavg_dec": sum(w * s for w, s in zip(reversed(inc), scores)) / sum(inc),
            "ruler/effective_length": float(max(passed, default=0))}


def run_ruler(lm: CausalLM, tasks: list[str], lengths: list[int], depths: list[float], samples: int, seed: int,
              essay: list[str], threshold: float) -> tuple[dict[str, float], list[dict]]:
    """Metrics ``ruler/<task>/len=L/depth=d``, ``ruler/<task>/len=L``, ``ruler/len=L`` and the aggregates, plus one
    record per sample (prompt length, depths, prediction, score)."""
    check_tasks(tasks)

    def count_tokens(text: str) -> int:
        return len(lm.encode(text))

    metrics: dict[str, float] = {}
    records: list[dict] = []
    per_length: dict[int, float] = {}
    for length in lengths:
        task_scores = []
        for task in tasks:
            cell_means = []
            for depth in depths:
                scores = []
                for i in range(samples):
                    sample = ruler_sample(task, length, depth, i, seed, count_tokens, essay)
                    prediction = lm.generate_text(sample.prompt, sample.gen_tokens)
                    scores.append(string_match_all(prediction, sample.references))
                    records.append({"task": task, "length": length, "depth": depth, "index": i,
                                    "prompt_tokens": count_tokens(sample.prompt), "answer_depth": sample.answer_depth,
                                    "needle_depths": sample.needle_depths, "references": sample.references,
                                    "prediction": prediction, "score": scores[-1]})
                cell_means.append(sum(scores) / len(scores))
                metrics[f"ruler/{task}/len={length}/depth={depth}"] = cell_means[-1]
            metrics[f"ruler/{task}/len={length}"] = sum(cell_means) / len(cell_means)
            task_scores.append(metrics[f"ruler/{task}/len={length}"])
        per_length[length] = sum(task_scores) / len(task_scores)
        metrics[f"ruler/len={length}"] = per_length[length]
    metrics.update(length_summary(per_length, threshold))
    return metrics, records
