"""``task=control_gen``: Fashion-MNIST images generated under a time-aligned "melody" control given at a
different rate (28 frames vs. L_q column strips), with MuseControlLite's decoupled cross-attention in every
DiT block (``backbone=dit``, ``backbone.patch_size=[28, w]``; ``backbone.control.layout`` picks the rotary
layout of the branch: ``musecontrollite_compat`` | ``half`` | ``none``).

Training: rectified flow; the label and the control are dropped (null label / zero control, as MuseControlLite's
condition dropout) independently. Sampling: MuseControlLite's multi-CFG over [uncond, text, text+control]:
``v = v_u + g_text (v_t - v_u) + g_con (v_tc - v_t)``. Metric: frame-level control accuracy (``val/frame_acc``),
next to the same sampler with the control guidance off (``val/frame_acc@control=off``) and three request-blind
baselines (``val/frame_acc@baseline=class_mean|constant|noise``, control.ControlBaselines).
"""

from __future__ import annotations

from rope_lab.tasks.base import Task, TaskSpec, register_task
from rope_lab.tasks.control_gen.datamodule import SIZE, ControlGenConfig, ControlGenDataModule
from rope_lab.tasks.control_gen.module import ControlGenModule
from rope_lab.tasks.image_gen.flow import SAMPLERS, T_SAMPLING, check_guidance


@register_task("control_gen")
class ControlGenTask(Task):
    Config = ControlGenConfig
    backbones = ("dit",)
    monitor, mode = "val/frame_acc", "max"

    def __init__(self, cfg: ControlGenConfig) -> None:
        check_guidance(cfg.guidance_text)
        check_guidance(cfg.guidance_control)
        if cfg.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler '{cfg.sampler}'; choose one of {list(SAMPLERS)}")
        if cfg.t_sampling not in T_SAMPLING:
            raise ValueError(f"unknown t_sampling '{cfg.t_sampling}'; choose one of {list(T_SAMPLING)}")
        if not 1 <= cfg.bins <= SIZE:
            raise ValueError(f"bins must be in 1..{SIZE}; got {cfg.bins}")
        self.cfg = cfg

    def spec(self) -> TaskSpec:
        return TaskSpec(num_axes=1, causal=False, num_classes=10, max_tokens=SIZE,
                        axes=("token",),  # column strips in order
                        extra={"in_channels": 1, "control_dim": self.cfg.bins + 1})

    def datamodule(self, seed: int, total_steps: int) -> ControlGenDataModule:
        return ControlGenDataModule(self.cfg, seed, total_steps)

    def module(self, model, optim, total_steps: int, datamodule: ControlGenDataModule) -> ControlGenModule:
        return ControlGenModule(model, optim, total_steps, self.cfg, datamodule.seed)
