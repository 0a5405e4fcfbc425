"""Reproduce one paper's experiment.

    python scripts/reproduce.py NAME --seeds 3 [--quick] [--steps N] [--jobs J] [--write] [-- key=value ...]
    python scripts/reproduce.py --summary          # docs/results.md + docs/results.png from the committed results

A study with ``experiments/NAME/study.yaml`` is run by the seeds runner (rope_lab/analysis/study.py): every variant at
seeds 0..N-1 (same seed = same data order and init across variants), cached runs reused only when made by the same
command and code, then runs.csv, manifest.json and summary.md with 95% intervals, paired differences and verdicts.
``--import-legacy`` converts a study's committed single-seed results (``legacy`` in its study.yaml) into
results/runs.csv, seeds = 1. ``--quick`` takes the study's quick budget (<= 20 CPU-minutes), ``--steps`` overrides the training steps, anything
after ``--`` is passed to train.py. Other experiments run their ``experiments/NAME/reproduce.py``.

Each ``experiments/<name>/reproduce.py`` defines ``main(argv) -> None`` that trains/evaluates what the paper's
claim needs and writes its tables/plots into its folder. By default that folder is a fresh, git-ignored copy,
``experiments/<name>/runs/reproduce_<time>_<uid>/``, so the committed results next to the README are never
overwritten by accident; ``--write`` writes next to the README (updating the committed files).
``python scripts/reproduce.py --list`` lists the experiments.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
sys.path.insert(0, str(ROOT))

from rope_lab.analysis.reproduce import WRITE_ENV, fresh_results_dir, shown  # noqa: E402


def available() -> list[str]:
    return sorted({p.parent.name for p in [*EXPERIMENTS.glob("*/reproduce.py"), *EXPERIMENTS.glob("*/study.yaml")]})


def fresh_copy(name: str) -> Path:
    """A fresh results folder seeded with the experiment's inputs (README, expected.csv, ...), not its runs."""
    fresh = fresh_results_dir(name)
    shutil.copytree(EXPERIMENTS / name, fresh,
                    ignore=shutil.ignore_patterns("runs", "runs*", "__pycache__", "reproduce.py"))
    return fresh


def run_seeds(name: str, argv: list[str], write: bool) -> Path:
    """The seeds runner for a study with a study.yaml."""
    import argparse

    from rope_lab.analysis import study

    parser = argparse.ArgumentParser(prog=f"reproduce.py {name}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the study's quick budget (<= 20 CPU-minutes)")
    parser.add_argument("--steps", type=int, help="training steps (overrides the budget's)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at the same time, each with cores/jobs threads (2 on a 2-core CPU: ~1.4x sooner)")
    parser.add_argument("extra", nargs="*", help="train.py overrides (after --)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds={args.seeds}: give at least 1")
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs}: give at least 1")
    spec = study.StudySpec.load(name)
    extra = [*args.extra, *([f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}"]
                            if args.steps else [])]
    out = (EXPERIMENTS / name / "results") if write else fresh_results_dir(name) / "results"
    command = " ".join(["python scripts/reproduce.py", name, *argv, *(["--write"] if write else [])])
    study.run_study(spec, args.seeds, "quick" if args.quick else "full", extra, out, command, jobs=args.jobs)
    print((out / study.SUMMARY_MD).read_text())
    print(f"results: {shown(out)}" + ("" if write else " (committed results untouched; --write updates them)"))
    return out


def _seeds_runnable(name: str) -> bool:
    """A study whose variants are all train.py runs (or derived from them), or an analysis study with a per-seed
    function (``analysis:``); other studies keep their own reproduce.py."""
    if not (EXPERIMENTS / name / "study.yaml").is_file():
        return False
    from rope_lab.analysis import study

    spec = study.StudySpec.load(name)
    return bool(spec.analysis) or all(spec.variants.values())


def main(argv: list[str]) -> Path | None:
    """Run one experiment; return the folder its results went to."""
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print(__doc__)
        print("available:", ", ".join(available()) or "(none)")
        return None
    if argv[0] == "--summary":
        from rope_lab.analysis.results_page import write_page

        page = write_page()
        print(f"wrote {shown(page)}")
        return page.parent
    name, rest = argv[0], argv[1:]
    write = "--write" in rest
    rest = [a for a in rest if a != "--write"]
    if (EXPERIMENTS / name / "study.yaml").is_file() and rest == ["--import-legacy"]:
        from rope_lab.analysis import study

        out = study.import_legacy(study.StudySpec.load(name), EXPERIMENTS / name / "results")
        print(f"wrote {shown(out)} from the committed single-seed results")
        return out
    if _seeds_runnable(name) and (not (EXPERIMENTS / name / "reproduce.py").exists()
                                  or any(a.startswith("--seeds") for a in rest)):
        return run_seeds(name, rest, write)
    script = EXPERIMENTS / name / "reproduce.py"
    if not script.exists():
        print(f"error: unknown experiment '{name}'; choose one of: {available()}", file=sys.stderr)
        sys.exit(2)
    spec = importlib.util.spec_from_file_location(f"reproduce_{name}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    previous = os.environ.get(WRITE_ENV)
    if write:  # results go next to the README, overwriting the committed files
        os.environ[WRITE_ENV] = "1"
        out = EXPERIMENTS / name
    else:  # the script's folder (HERE, read at call time by its functions) becomes a fresh copy
        os.environ.pop(WRITE_ENV, None)
        out = fresh_copy(name)
        module.HERE = out
        print(f"results of {name} go to {shown(out)} (committed files untouched; --write updates them)")
    try:
        module.main(rest)
    finally:
        if previous is None:
            os.environ.pop(WRITE_ENV, None)
        else:
            os.environ[WRITE_ENV] = previous
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
