"""A run directory's guarantees: one process at a time, the config it was started with kept unchanged, resume only
from a checkpoint that exists and with the same config, checkpoints that are never left half-written.

Layout of a run directory (``outputs/<task>/<pe>/<date>/<time>_<uid>``)::

    run_config.yaml      the resolved config, written once when the run starts; eval and resume read it
    .hydra/              Hydra's record of the latest invocation (rewritten by every command aimed at the dir)
    .lock                held while a process trains in the dir
    checkpoints/         last.ckpt (+ the best one), each written to a temp file and renamed into place
    metrics.csv          every logged row; a resumed run keeps the rows before its checkpoint
    results.json         written last: its presence marks the run as finished
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from rope_lab.cli import UserError

CONFIG_FILE = "run_config.yaml"
ABSENT = "<absent>"
RESULTS_FILE = "results.json"
LOCK_FILE = ".lock"
#: keys that may differ between a run's start and its resumption: how to resume, log and show progress, not what
#: is trained (dotted prefixes)
RESUME_FREE = ("ckpt_path", "callbacks", "logger", "paths", "trainer.enable_progress_bar",
               "trainer.enable_model_summary", "trainer.log_every_n_steps")


def lock(run_dir: Path) -> FileLock:
    """Take the run dir's lock or fail at once: two processes writing one run would mix their results.
    The lock dies with its process (flock), so a killed run leaves nothing to clean up."""
    run_dir.mkdir(parents=True, exist_ok=True)
    held = FileLock(str(run_dir / LOCK_FILE), timeout=0)
    try:
        held.acquire()
    except Timeout:
        raise UserError(f"{run_dir} is in use by another process (it holds {run_dir / LOCK_FILE}); wait for it to "
                        f"finish or choose another hydra.run.dir") from None
    return held


def check_not_finished(run_dir: Path, ckpt_path: str | None) -> None:
    if (run_dir / RESULTS_FILE).exists() and ckpt_path is None:
        raise FileExistsError(
            f"{run_dir} already holds a finished run ({RESULTS_FILE}). Nothing is overwritten: pass ckpt_path=last "
            f"to continue it, or choose another hydra.run.dir."
        )
    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    if saved and ckpt_path is None:
        raise FileExistsError(f"{run_dir} holds checkpoints of an unfinished run ({', '.join(saved)}); nothing is "
                              f"overwritten: pass ckpt_path=last to continue it, or choose another hydra.run.dir.")


def remove_partial_saves(run_dir: Path) -> list[Path]:
    """Delete the temp files of checkpoint saves that were killed midway (call with the run dir's lock held)."""
    partial = sorted((run_dir / "checkpoints").glob(".*.ckpt.*.tmp"))
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def resolve_ckpt(run_dir: Path, ckpt_path: str | None) -> str | None:
    """``last`` -> <run>/checkpoints/last.ckpt, which must exist (Lightning would silently start from scratch);
    any other path must be a file."""
    if ckpt_path is None:
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        hint = "ckpt_path=last continues the run in hydra.run.dir, which needs its checkpoints/last.ckpt"
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: {path} does not exist ({hint})")
    return str(path)


def _plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def record_config(run_dir: Path, cfg: DictConfig) -> None:
    """Write the resolved config once; on a resume, refuse a config that differs from the one the run started with
    (the schedule, data and model must be the same to continue exactly)."""
    path = run_dir / CONFIG_FILE
    now = _plain(cfg)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(now)))
        os.replace(tmp, path)
        return
    # keys the recorded config lacks came with a newer rope_lab (their defaults keep the old behaviour)
    changed = [d for d in _differences(_plain(OmegaConf.load(path)), now)
               if d[1] != ABSENT and not any(d[0] == k or d[0].startswith(k + ".") for k in RESUME_FREE)]
    if changed:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed[:8])
        raise UserError(f"{run_dir} was started with another config ({shown}); a resume continues the run exactly "
                        f"with the config in {path}. To train with new settings start a new run from its weights: "
                        f"init_ckpt={run_dir}/checkpoints/last.ckpt")


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(key, ABSENT), b.get(key, ABSENT), f"{prefix}{key}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def config_file(run_dir: Path) -> Path | None:
    """Where a run's config is: ``run_config.yaml``, or ``.hydra/config.yaml`` for runs older than it (None: not a
    run dir)."""
    return next((p for p in (run_dir / CONFIG_FILE, run_dir / ".hydra" / "config.yaml") if p.is_file()), None)


def stored_config(run_dir: Path) -> DictConfig:
    """The config a run was started with (see :func:`config_file`)."""
    path = config_file(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir} has no {CONFIG_FILE} (nor .hydra/config.yaml); was it written by "
                                f"train.py?")
    return OmegaConf.load(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temp file in the same directory, flushed to disk, then renamed over the old one:
    a process killed mid-save leaves the previous checkpoint intact (Lightning's own save goes through a temp file
    in TMPDIR, whose copy onto another filesystem is not atomic). Failing to write is an error, never a skip."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r})")
        fs = get_filesystem(path)
        if type(fs).__name__ != "LocalFileSystem":  # remote storage: fsspec's own transaction
            return super().save_checkpoint(checkpoint, path)
        import torch

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)
