"""What the command-line entry points share: a user's mistake ends in one line, not a traceback.

``train.py`` and ``eval.py`` call their work through :func:`report_user_errors`. A bad value in a config, a
missing file or data source, or a run directory that must not be touched is the user's to fix, so it prints
``error: <message>`` on stderr and exits with status 2 (the convention of argparse and Hydra's own override
errors); a run that failed on its own terms (:class:`RunFailed`: diverged, took no step) prints the same way and
exits with 1. Any other exception is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` keeps the traceback for
user errors too.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, TypeVar

T = TypeVar("T")

#: exit status of a run refused for the user's input (argparse and Hydra use 2 as well)
USAGE_ERROR = 2


#: exit status of a run that failed on its own terms (diverged, took no step, wrote no checkpoint)
RUN_FAILED = 1


class UserError(ValueError):
    """A mistake in what the user asked for (config, paths, run directory); the message says how to fix it."""


class RunFailed(RuntimeError):
    """A run that cannot produce a result (diverged, took no step, saved no checkpoint): reported in one line."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that report a user's mistake: bad values, missing files or data, a run dir that is taken."""
    from omegaconf.errors import OmegaConfBaseException

    from rope_lab.data.fetch import DataUnavailable

    return (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
            PermissionError, DataUnavailable, OmegaConfBaseException)


def report_user_errors(work: Callable[[], T]) -> T:
    """Run ``work``; a user's mistake prints ``error: ...`` and exits with status 2 (traceback if
    ``HYDRA_FULL_ERROR=1``)."""
    try:
        return work()
    except (*user_error_types(), RunFailed) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(RUN_FAILED if isinstance(err, RunFailed) else USAGE_ERROR) from None
