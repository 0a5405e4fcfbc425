"""Multiruns that survive a failing job, and the sweep summary.

Hydra's sweepers stop a sweep at a failed job (the basic sweeper re-raises the first failure; a job that calls
``sys.exit``, as train.py does for a user error, ends the whole process at once). In a multirun, train.py runs each
job through :func:`run_sweep_job` instead: a failure (a bad value, a diverged run, a crash) is written to
``<job dir>/failure.json`` with its traceback, logged in one line, and the job returns a :class:`FailedJob`, so the
launcher goes on with the next job. Sweepers see it as a failed trial: it is not a number (``float()`` raises
``ValueError``), which Optuna's sweeper records as a failed trial.

:class:`SweepSummary` (a Hydra callback, configs/hydra/default.yaml) writes ``<sweep dir>/summary.json`` after every
job and at the end, from the job directories themselves (so it works for any launcher, SLURM's too): per job its
overrides, status (``ok``, ``failed`` or ``missing``: no record, e.g. a job the scheduler killed), headline metric
or error. When any job did not finish it prints which and the process exits with status 1.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rope_lab.cli import RunFailed, user_error_types

log = logging.getLogger(__name__)

FAILURE_FILE = "failure.json"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class FailedJob:
    """What a failed job returns to the sweeper: not a number, so no sweeper mistakes it for a metric."""

    job_dir: str
    kind: str
    message: str

    def __float__(self) -> float:
        raise ValueError(f"job {self.job_dir} failed ({self.kind}): {self.message}")

    def __repr__(self) -> str:
        return f"FailedJob({self.kind}: {self.message}; see {Path(self.job_dir) / FAILURE_FILE})"


def failure_kind(err: BaseException) -> str:
    """``user_error`` (bad value, missing data: the message says what to fix), ``run_failed`` (diverged, no step)
    or ``crash`` (anything else: a bug, the traceback matters)."""
    if isinstance(err, RunFailed):
        return "run_failed"
    if isinstance(err, user_error_types()):
        return "user_error"
    return "crash"


def record_failure(job_dir: Path, err: BaseException) -> FailedJob:
    """Write ``failure.json`` (kind, error, traceback) into the job's directory; return the job's FailedJob."""
    kind, message = failure_kind(err), " ".join(str(err).split()) or type(err).__name__
    job_dir.mkdir(parents=True, exist_ok=True)
    record = {"kind": kind, "error_type": type(err).__name__, "message": message,
              "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__))}
    tmp = job_dir / f".{FAILURE_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, job_dir / FAILURE_FILE)
    return FailedJob(str(job_dir), kind, message)


def run_sweep_job(work: Callable[[], float], job_dir: str | Path) -> float | FailedJob:
    """Run one job of a multirun; a failure is recorded in the job dir and returned, never raised (an interrupt,
    Ctrl+C, still stops the sweep)."""
    try:
        return work()
    except Exception as err:  # noqa: BLE001 - every failure is recorded with its traceback, then the sweep goes on
        failed = record_failure(Path(job_dir), err)
        if failed.kind == "crash":
            log.error("job failed with an unexpected error (traceback in %s)", Path(job_dir) / FAILURE_FILE,
                      exc_info=err)
        log.error("job %s failed (%s): %s", job_dir, failed.kind, failed.message)
        return failed


def job_record(job_dir: Path) -> dict[str, Any]:
    """One job's line of the summary, read from its directory."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    record: dict[str, Any] = {"job": job_dir.name, "dir": str(job_dir), "overrides": overrides}
    failure, results = job_dir / FAILURE_FILE, job_dir / "results.json"
    if failure.is_file():
        info = json.loads(failure.read_text())
        record.update(status="failed", kind=info["kind"], error=info["message"])
    elif results.is_file():
        info = json.loads(results.read_text())
        monitor = info.get("monitor")
        record.update(status="ok", monitor=monitor, value=info.get("metrics", {}).get(monitor))
    else:
        record.update(status="missing")
    return record


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep (each holds Hydra's ``.hydra/overrides.yaml``), in job order."""
    dirs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(dirs, key=lambda p: (len(p.name), p.name))


def write_summary(sweep_dir: Path) -> dict[str, Any]:
    """``<sweep dir>/summary.json``: every job's record and the counts; returned as well."""
    jobs = [job_record(d) for d in job_dirs(sweep_dir)]
    counts = {s: sum(j["status"] == s for j in jobs) for s in ("ok", "failed", "missing")}
    summary = {"sweep_dir": str(sweep_dir), "jobs": jobs, **counts}
    tmp = sweep_dir / f".{SUMMARY_FILE}.{os.getpid()}.tmp"  # concurrent jobs (SLURM) each write a whole file
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, sweep_dir / SUMMARY_FILE)
    return summary


class SweepSummary(Callback):
    """Hydra callback: keep ``<sweep dir>/summary.json`` current; at the end of a multirun with failed or missing
    jobs, print them and exit with status 1."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            write_summary(Path(hydra_cfg.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        summary = write_summary(sweep_dir)
        bad = [j for j in summary["jobs"] if j["status"] != "ok"]
        log.info("multirun: %d ok, %d failed, %d missing; summary: %s", summary["ok"], summary["failed"],
                 summary["missing"], sweep_dir / SUMMARY_FILE)
        if not bad:
            return
        shared = set.intersection(*(set(j["overrides"]) for j in summary["jobs"])) if len(summary["jobs"]) > 1 else set()
        lines = [f"  {j['job']} {' '.join(o for o in j['overrides'] if o not in shared)}: {j['status']}"
                 + (f" ({j['kind']}: {j['error']})" if j["status"] == "failed" else "") for j in bad]
        print(f"error: {len(bad)} of {len(summary['jobs'])} jobs did not finish (details in each job's "
              f"{FAILURE_FILE}; summary: {sweep_dir / SUMMARY_FILE}):\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(1)
