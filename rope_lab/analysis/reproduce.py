"""Helpers shared by the paper reproductions (``experiments/<paper>/reproduce.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_entry(argv: list[str]) -> None:
    """``python <train.py|eval.py> ...`` in the repository root; the rotary kernel defaults to eager (no compile
    time in short runs) unless ROPE_LAB_KERNEL says otherwise."""
    env = {**os.environ, "ROPE_LAB_KERNEL": os.environ.get("ROPE_LAB_KERNEL", "eager")}
    subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, check=True)


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (for reports that are checked in)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def write_report(folder: Path, lines: list[str], name: str = "results.md") -> Path:
    """Write ``lines`` to ``folder/name``, print them, return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines))
    print("\n".join(lines))
    return folder
