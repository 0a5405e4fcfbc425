"""Reproduce one paper's experiment: ``python scripts/reproduce.py NAME`` runs ``experiments/NAME/reproduce.py``.

Each ``experiments/<name>/reproduce.py`` defines ``main(argv) -> None`` that trains/evaluates what the paper's
claim needs and writes its tables/plots next to its README. ``python scripts/reproduce.py --list`` lists them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def available() -> list[str]:
    return sorted(p.parent.name for p in EXPERIMENTS.glob("*/reproduce.py"))


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print(__doc__)
        print("available:", ", ".join(available()) or "(none)")
        return
    name, rest = argv[0], argv[1:]
    script = EXPERIMENTS / name / "reproduce.py"
    if not script.exists():
        sys.exit(f"unknown experiment '{name}'; choose one of: {available()}")
    spec = importlib.util.spec_from_file_location(f"reproduce_{name}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
