"""Train one configuration: ``python train.py [pe=...] [task=...] [backbone=...] [experiment=...]``."""

import os

import rope_lab  # noqa: F401, I001 -- first: importing rope_lab sets OMP_WAIT_POLICY before torch loads OpenMP
import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rope_lab.cli import report_user_errors
from rope_lab.run import register_resolvers, run
from rope_lab.sweeps import run_sweep_job

register_resolvers()
os.environ.setdefault("WANDB_MODE", "offline")  # wandb never syncs unless the user asks


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    out_dir = hydra_cfg.runtime.output_dir
    if hydra_cfg.mode == RunMode.MULTIRUN:  # a failed job is recorded and the sweep goes on (rope_lab/sweeps.py)
        return run_sweep_job(lambda: run(cfg, out_dir), out_dir)
    return report_user_errors(lambda: run(cfg, out_dir))


if __name__ == "__main__":
    main()
