"""Run a composed configuration from Python (reproduction scripts, analyses, tests) and load its trained model back:
the programmatic twin of ``python train.py <overrides>``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

#: the repository's configs/ (train.yaml and the groups), beside the package
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_config(overrides: list[str], run_dir: Path | str) -> DictConfig:
    """``train.yaml`` + overrides, with Hydra's runtime dirs pointing at ``run_dir`` (no hydra node left)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    cfg.hydra.runtime.output_dir = cfg.hydra.runtime.cwd = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_config(overrides: list[str], run_dir: Path | str) -> dict[str, float]:
    """Train + validate one configuration in ``run_dir``; returns its final metrics (results.json)."""
    from rope_lab.run import register_resolvers, run

    register_resolvers()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = compose_config(overrides, run_dir)
    (run_dir / "config.json").write_text(json.dumps({"overrides": list(overrides)}, indent=2))
    run(cfg, run_dir)
    return json.loads((run_dir / "results.json").read_text())["metrics"]


def load_trained(overrides: list[str], run_dir: Path | str):
    """(task module, model) rebuilt from ``overrides`` with the weights of ``run_dir/checkpoints/last.ckpt``."""
    from rope_lab.run import build, register_resolvers

    register_resolvers()
    cfg = compose_config(overrides, run_dir)
    _, module, _, model = build(cfg)
    ckpt = torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    module.load_state_dict(ckpt["state_dict"])
    return module, model.eval()
