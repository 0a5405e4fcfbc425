"""Read finished runs (``results.json`` + the run's config) from outputs/ or multirun/ folders."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from rope_lab.run_dir import config_file


@dataclass
class RunResult:
    run_dir: Path
    task: str
    pe: str
    metrics: dict[str, float]
    config: dict
    overrides: list[str]

    @property
    def label(self) -> str:
        """The PE name plus the overrides that distinguish this run inside its sweep."""
        keep = [o for o in self.overrides if not o.startswith(("experiment=", "trainer.", "debug=", "hydra."))]
        return self.pe + (f" ({', '.join(keep)})" if keep else "")


def load_runs(root: Path | str) -> list[RunResult]:
    """Every finished training run under ``root`` (a run dir, a sweep dir, or a whole outputs tree). A
    ``results.json`` without the run's config beside it (eval.py's ``<run>/eval/<time>/``) is not a run."""
    runs = []
    for res in sorted(Path(root).rglob("results.json")):
        run_dir = res.parent
        cfg_path = config_file(run_dir)
        if cfg_path is None:
            continue
        data = json.loads(res.read_text())
        ovr_path = run_dir / ".hydra" / "overrides.yaml"
        cfg = OmegaConf.to_container(OmegaConf.load(cfg_path))
        overrides = list(OmegaConf.load(ovr_path)) if ovr_path.exists() else []
        runs.append(RunResult(run_dir, data.get("task", "?"), data.get("pe", "?"), data["metrics"], cfg, overrides))
    return runs


def markdown_table(rows: list[list], header: list[str]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def metric_table(runs: list[RunResult], prefix: str) -> tuple[list[str], list[list]]:
    """Rows: one per run; columns: every metric starting with ``prefix`` (sorted by their numeric suffix)."""
    keys = sorted({k for r in runs for k in r.metrics if k.startswith(prefix)}, key=_suffix_key)
    header = ["run"] + [k[len(prefix):] for k in keys]
    rows = [[r.label] + [r.metrics.get(k, float("nan")) for k in keys] for r in runs]
    return header, rows


def _suffix_key(key: str):
    tail = key.rsplit("@", 1)[-1].split("=")[-1]
    try:
        return (0, float(tail), key)
    except ValueError:
        return (1, 0.0, key)
