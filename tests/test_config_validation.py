"""Config validation at build time: the optimizer name reaches timm, pe x task axes and task x backbone
compatibility, non-finite and out-of-range numbers, and the video hosts' base (one source of pe defaults, the
dataclass ``Config``: tests/test_config_defaults.py)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from timm.optim import Lamb

from rope_lab.optim import OptimConfig, build_optimizer
from rope_lab.pe import AXIS_NAMES
from rope_lab.pe.registry import PE, build_pe, build_scaling
from rope_lab.registry import typed_config
from rope_lab.run import _OptimHolder, build, register_resolvers
from rope_lab.tasks.base import TASK

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _compose(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def _optimizer(*overrides: str) -> torch.optim.Optimizer:
    cfg = _compose(*overrides)
    optim = typed_config(_OptimHolder, cfg.optim, "optim")
    return build_optimizer(torch.nn.Linear(4, 4), optim)


# -- item 3: the optimizer name ------------------------------------------------------------------------------
def test_optim_lamb_builds_timm_lamb():
    opt = _optimizer("optim=lamb")
    assert isinstance(opt, Lamb), type(opt)
    assert opt.defaults["lr"] == pytest.approx(5e-3)


def test_optim_adamw_builds_adamw():
    opt = _optimizer("optim=adamw")
    assert isinstance(opt, torch.optim.AdamW), type(opt)


def test_optim_name_override_reaches_the_optimizer():
    assert isinstance(_optimizer("optim.name=lamb"), Lamb)


def test_unknown_optimizer_is_refused_at_build_naming_it():
    cfg = _compose("optim.name=adamx", "debug=fast")
    with pytest.raises(ValueError, match=r"adamx.*choose one of \[.*'adamw'.*'lamb'") as err:
        build(cfg)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="adamx"):
        build_optimizer(torch.nn.Linear(2, 2), _unchecked_optim("adamx"))


def _unchecked_optim(name: str) -> OptimConfig:
    cfg = OptimConfig()
    object.__setattr__(cfg, "name", name)  # bypass __post_init__: build_optimizer checks on its own too
    return cfg


def test_registry_configs_without_a_name_field_still_drop_name():
    assert dataclasses.is_dataclass(typed_config(PE.get("rope"), {"name": "rope"}, "pe"))


# -- item 5: pe x task axes, task x backbone ---------------------------------------------------------------------
def test_drope_on_token_indices_is_refused_listing_compatible_pes():
    with pytest.raises(ValueError, match=r"pe=drope.*compatible variants: \[.*'rope'.*\]") as err:
        build(_compose("pe=drope", "task=lm_longctx", "debug=fast"))
    msg = str(err.value)
    assert "\n" not in msg and "'drope'" not in msg.split("compatible variants:")[1]


def test_heading_variants_fit_the_trajectory_task():
    spec = TASK.build(_compose("task=trajectory").task).spec()
    for name in ("drope", "drope_rope", "rope_2d", "rpe"):
        build_pe({"name": name}).check_compatible(spec.num_axes, spec.causal, axes=spec.axes)


@pytest.mark.parametrize("pe,task", [("rope_2d", "image_cls"), ("hirope", "image_cls"), ("drope", "image_gen"),
                                     ("rpe", "image_gen")])
def test_variants_that_give_axes_a_meaning_refuse_other_axes(pe, task):
    overrides = ["task.id_axes=3"] if pe == "rpe" else []
    spec = TASK.build(_compose(f"task={task}", *overrides).task).spec()
    with pytest.raises(ValueError, match=rf"pe={pe}.*compatible variants"):
        build_pe({"name": pe}).check_compatible(spec.num_axes, spec.causal, axes=spec.axes)


def test_vit_on_the_lm_task_is_refused_at_build():
    with pytest.raises(ValueError,
                       match=r"task=lm_longctx runs on backbone in \['llama', 'hf_causal_lm'\]; got backbone=vit"):
        build(_compose("backbone=vit", "task=lm_longctx", "debug=fast"))


def test_every_task_declares_its_axes_and_backbones():
    for name in TASK.names():
        task = TASK.build(_compose(f"task={name}").task)
        spec = task.spec()
        axes = spec.axes
        assert axes is not None and len(axes) == spec.num_axes, (name, axes)
        assert set(axes) <= set(AXIS_NAMES), (name, axes)
        assert getattr(task, "backbones", None), name


def test_declared_pe_axes_use_known_names():
    for name in PE.names():
        axes = getattr(PE.get(name), "axes", None)
        assert axes is None or set(axes) <= set(AXIS_NAMES), (name, axes)


# -- item 7: numbers ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_pe_base_is_refused(value):
    with pytest.raises(ValueError, match=rf"'rope'.*base={value}.*not a finite number"):
        build_pe({"name": "rope", "base": value})


@pytest.mark.parametrize("override", ["pe.base=nan", "pe.base=inf", "optim.lr=nan", "pe/scaling=yarn",
                                      "optim.betas=[0.9,nan]"])
def test_non_finite_numbers_from_the_command_line_are_refused(override):
    extra = ["pe.scaling.factor=inf"] if override == "pe/scaling=yarn" else []
    key = {"pe/scaling=yarn": "scaling.factor", "optim.betas=[0.9,nan]": r"betas\[1\]"}.get(
        override, override.split("=")[0].split(".")[-1])
    with pytest.raises(ValueError, match=rf"{key}=(nan|inf).*not a finite number"):
        build(_compose(override, *extra, "debug=fast"))


@pytest.mark.parametrize("name,base", [("rope", 0.0), ("rope", -10.0), ("rope_2d", 1.0), ("ape", -1.0)])
def test_non_positive_bases_are_refused_naming_key_and_value(name, base):
    with pytest.raises(ValueError, match=rf"'{name}': base must be > 1, got base={base}"):
        build_pe({"name": name, "base": base})


def test_non_finite_scaling_numbers_are_refused():
    with pytest.raises(ValueError, match=r"factor=nan"):
        build_scaling({"name": "linear", "factor": math.nan})


# -- item 7: the video hosts' base, in the dataclass (the one source; configs/pe repeat no default) -----------
def test_video_host_variants_default_to_the_qwen2_vl_base():
    for name in ("vrope", "tad_rope", "mrope", "videorope", "hope"):
        assert build_pe({"name": name}).cfg.base == 1e6, name
    cfg = _compose("pe=vrope").pe
    assert build_pe(OmegaConf.to_container(cfg, resolve=True)).cfg.base == 1e6
