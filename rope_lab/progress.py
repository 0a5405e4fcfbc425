"""A progress line for long loops (study runs, evaluations), shown only on a terminal.

tqdm is already a dependency (Lightning's progress bar). On a terminal the line is redrawn in place; when stderr is
not a TTY (CI, a log file, a SLURM job) nothing is printed, so logs stay readable.
"""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def on_terminal() -> bool:
    """True when stderr, where progress goes, is a terminal."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress(items: Iterable[T] | None, desc: str, total: int | None = None, unit: str = "run") -> tqdm:
    """``items`` wrapped in a progress line on stderr (``desc: 3/12 runs [elapsed<remaining]``); silent off a TTY.
    Use ``.set_postfix_str(...)`` on the result to name the current item; with ``items=None`` and a ``total``, advance
    it by hand with ``.update()`` (work finishing out of order)."""
    return tqdm(items, desc=desc, total=total, unit=unit, file=sys.stderr, disable=not on_terminal(),
                dynamic_ncols=True, leave=True)
