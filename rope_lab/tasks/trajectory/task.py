"""``task=trajectory``: K-mode trajectory prediction for every aircraft of a real ADS-B scene (DRoPE's setting)."""

from __future__ import annotations

from rope_lab.tasks.base import Task, TaskSpec, register_task
from rope_lab.tasks.trajectory.datamodule import TrajectoryConfig, TrajectoryDataModule, check_config
from rope_lab.tasks.trajectory.module import TrajectoryModule

FEATURES_PER_STEP = 5  # (dx, dy, cos dphi, sin dphi, valid) -- see positions.agent_features


@register_task("trajectory")
class TrajectoryTask(Task):
    Config = TrajectoryConfig
    monitor, mode = "val/minADE", "min"
    backbones = ("traj_transformer",)
    curve = {"prefix": "val/minADE@", "xlabel": "horizon (s)", "ylabel": "minADE (m)",
             "filename": "minade_vs_horizon.png", "logy": False}

    def __init__(self, cfg: TrajectoryConfig) -> None:
        check_config(cfg)  # K <= 0, bad horizons, bad split: clear errors before anything is built
        self.cfg = cfg

    def spec(self) -> TaskSpec:
        c = self.cfg
        extra = {"in_features": c.past_steps * FEATURES_PER_STEP, "future_steps": c.future_steps,
                 "num_modes": c.num_modes}
        return TaskSpec(num_axes=3, causal=False, max_tokens=c.max_agents, axes=("x", "y", "heading"), extra=extra)

    def datamodule(self, seed: int, total_steps: int) -> TrajectoryDataModule:
        return TrajectoryDataModule(self.cfg, seed, total_steps)

    def module(self, model, optim, total_steps: int, datamodule: TrajectoryDataModule) -> TrajectoryModule:
        return TrajectoryModule(model, optim, total_steps, self.cfg, datamodule.stats)
