"""Reproduce one paper's experiment: ``python scripts/reproduce.py NAME [--write] [args]`` runs
``experiments/NAME/reproduce.py``.

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
    return sorted(p.parent.name for p in EXPERIMENTS.glob("*/reproduce.py"))


def fresh_copy(name: str) -> Path:
    """A fresh results folder seeded with the experiment's inputs (README, expected.csv, ...), not its runs."""
    fresh = fresh_results_dir(name)
    shutil.copytree(EXPERIMENTS / name, fresh,
                    ignore=shutil.ignore_patterns("runs", "runs*", "__pycache__", "reproduce.py"))
    return fresh


def main(argv: list[str]) -> Path | None:
    """Run one experiment; return the folder its results went to."""
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print(__doc__)
        print("available:", ", ".join(available()) or "(none)")
        return None
    name, rest = argv[0], argv[1:]
    write = "--write" in rest
    rest = [a for a in rest if a != "--write"]
    script = EXPERIMENTS / name / "reproduce.py"
    if not script.exists():
        sys.exit(f"unknown experiment '{name}'; choose one of: {available()}")
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
