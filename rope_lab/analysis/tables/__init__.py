"""Per-task table/plot makers for ``scripts/make_tables.py``.

Each module here registers ``@table_maker("<task name>")`` on ``fn(runs, out_dir) -> list[Path]``; tasks without
one get the generic table of every ``val/`` metric.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Callable

TABLE_MAKERS: dict[str, Callable] = {}


def table_maker(task: str):
    def deco(fn: Callable) -> Callable:
        TABLE_MAKERS[task] = fn
        return fn

    return deco


def load_makers() -> dict[str, Callable]:
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__name__}.{info.name}")
    return TABLE_MAKERS
