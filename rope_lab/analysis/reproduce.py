"""Helpers shared by the paper reproductions (``experiments/<paper>/reproduce.py``).

Committed results (the tables, CSVs and plots next to each ``experiments/<study>/README.md``) are only rewritten on
purpose: ``python scripts/reproduce.py <study> --write`` (which sets ``ROPE_LAB_WRITE_RESULTS=1``). By default a
reproduction writes to a fresh, git-ignored ``experiments/<study>/runs/reproduce_<time>_<uid>/``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
#: set to "1" (by ``scripts/reproduce.py --write``) to let reproductions overwrite committed results
WRITE_ENV = "ROPE_LAB_WRITE_RESULTS"


def run_entry(argv: list[str]) -> None:
    """``python <train.py|eval.py> ...`` in the repository root; the rotary kernel defaults to eager (no compile
    time in short runs) unless ROPE_LAB_KERNEL says otherwise."""
    env = {**os.environ, "ROPE_LAB_KERNEL": os.environ.get("ROPE_LAB_KERNEL", "eager")}
    subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, check=True)


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (for reports that are checked in)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def writes_committed() -> bool:
    """True when the user asked to overwrite committed results (``--write``)."""
    return os.environ.get(WRITE_ENV) == "1"


def is_committed_location(path: Path | str) -> bool:
    """``path`` is inside ``experiments/<study>/`` but not in its git-ignored ``runs*/`` folders."""
    path = Path(path).resolve()
    if not path.is_relative_to(EXPERIMENTS.resolve()):
        return False
    parts = path.relative_to(EXPERIMENTS.resolve()).parts
    return not (len(parts) >= 2 and parts[1].startswith("runs"))


def fresh_results_dir(study: str) -> Path:
    """A new, git-ignored ``experiments/<study>/runs/reproduce_<time>_<uid>/``."""
    stamp = f"reproduce_{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"
    return EXPERIMENTS / study / "runs" / stamp


def output_dir(folder: Path | str) -> Path:
    """``folder``, unless it is a committed experiments folder and ``--write`` was not given: then a fresh one."""
    folder = Path(folder)
    if is_committed_location(folder) and not writes_committed():
        study = folder.resolve().relative_to(EXPERIMENTS.resolve()).parts[0]
        fresh = fresh_results_dir(study)
        print(f"{shown(folder)} holds committed results: writing to {shown(fresh)} instead "
              f"(python scripts/reproduce.py {study} --write updates the committed files)")
        return fresh
    return folder


def write_report(folder: Path, lines: list[str], name: str = "results.md") -> Path:
    """Write ``lines`` to ``folder/name`` (see :func:`output_dir`), print them, return the folder written."""
    folder = output_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines))
    print("\n".join(lines))
    return folder
