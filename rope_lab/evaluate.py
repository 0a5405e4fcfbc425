"""Evaluate a trained checkpoint under (possibly changed) task settings, e.g. new lengths or resolutions.

The base config is the run's own: ``<run>/run_config.yaml`` (the immutable resolved config train writes once at
the start of a run) or, for older runs, ``<run>/.hydra/config.yaml``. Overrides use Hydra's grammar:

- ``a.b=value`` changes a key of the run's config; ``+a.new=value`` adds a key it lacks;
- ``group=option`` / ``group/sub=option`` swaps a whole config group, as in train.py: ``pe/scaling=yarn`` composes
  configs/pe/scaling/yarn.yaml with Hydra's compose API and places it at ``pe.scaling`` (group swaps are applied
  before key overrides, so ``pe/scaling=yarn pe.scaling.factor=8`` works). Unknown groups or options are refused
  with the valid choices. A scaling's original length follows the run's ``task.train_length``.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from rope_lab.experiment import CONFIGS
from rope_lab.progress import on_terminal
from rope_lab.run import build, load_model_weights
from rope_lab.run_dir import config_file

#: groups that rewrite the whole config (``@package _global_``) or Hydra itself: not swappable after training
GLOBAL_GROUPS = ("experiment", "debug", "sweep", "hydra")


def parse_overrides(argv: list[str]) -> dict:
    """Hydra override grammar (``a.b=[1,2]``, ``x=null``, ``+a.new=1``, ``pe/scaling=yarn``) ->
    {dotted key or group (``+`` kept): value}."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(argv)
    except OverrideParseException as err:  # a user's typo: one line via rope_lab.cli, not a traceback
        raise ValueError(f"bad override: {' '.join(str(err).split())}") from err
    return {("+" if o.is_add() else "") + o.key_or_group: o.value() for o in parsed}


def run_dir_of(ckpt_path: Path) -> Path:
    """<run>/checkpoints/x.ckpt -> <run> (the folder holding run_config.yaml or .hydra/config.yaml)."""
    for parent in Path(ckpt_path).resolve().parents:
        if config_file(parent) is not None:
            return parent
    raise FileNotFoundError(f"no run_config.yaml or .hydra/config.yaml above {ckpt_path}; was it written by train.py?")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _groups() -> list[str]:
    return sorted(str(p.parent.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")
                  if p.parent != CONFIGS and p.parent.relative_to(CONFIGS).parts[0] not in GLOBAL_GROUPS)


def is_group(name: str) -> bool:
    """``pe/scaling`` (a path) or a top-level folder of configs/ (``pe``, ``task``): a config-group override."""
    return "/" in name or (CONFIGS / name).is_dir()


def compose_groups(choices: dict[str, Any]) -> DictConfig:
    """configs/train.yaml composed with ``group=option`` for each choice."""
    return _compose([f"{g}={o}" for g, o in choices.items()])


def _compose(overrides: list[str]) -> DictConfig:
    """configs/train.yaml composed with Hydra overrides (Hydra's compose API; any Hydra app already initialised
    in this process is restored afterwards)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    saved = gh.hydra if gh.is_initialized() else None
    gh.clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose(config_name="train", overrides=overrides)
    finally:
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


def apply_overrides(cfg: DictConfig, overrides: dict, source: str) -> None:
    """Group swaps first (outermost group first), then key overrides in order; ``source`` names the config file."""
    groups = {k: v for k, v in overrides.items() if is_group(k.lstrip("+"))}
    choices: dict[str, Any] = {}
    for key, option in groups.items():
        add, group = key.startswith("+"), key.lstrip("+")
        if group.split("/")[0] in GLOBAL_GROUPS:
            raise ValueError(f"eval override '{group}={option}': eval.py cannot swap the '{group}' group (it "
                             f"rewrites the whole config); override the keys you need instead")
        if not (CONFIGS / group).is_dir():
            raise ValueError(f"eval override '{group}={option}': unknown config group '{group}'; "
                             f"groups: {_groups()}")
        valid = group_options(group)
        if not isinstance(option, str) or option not in valid:
            raise ValueError(f"eval override '{group}={option}': no option {option!r} in config group '{group}'; "
                             f"choose one of: {valid}")
        package = group.replace("/", ".")
        exists = OmegaConf.select(cfg, package, default=None) is not None
        if add and exists:
            raise ValueError(f"eval override '+{group}={option}': the run's config already has '{package}'; "
                             f"drop the '+' to replace it")
        choices[group] = option
    if choices:
        composed = compose_groups(choices)
        for group in sorted(choices, key=lambda g: g.count("/")):
            package = group.replace("/", ".")
            OmegaConf.update(cfg, package, OmegaConf.select(composed, package), merge=False, force_add=True)
    for key, value in overrides.items():
        if key in groups:
            continue
        add, name = key.startswith("+"), key.lstrip("+")
        exists = OmegaConf.select(cfg, name, default="__missing__") != "__missing__"
        if not add and not exists:
            raise ValueError(f"eval override '{name}' is not a key of the run's config ({source}); add a new key "
                             f"with '+{name}=...' (e.g. an option of another pe: +pe.split=0.3), or swap a config "
                             f"group with 'group=option' (e.g. pe/scaling=yarn)")
        if add and exists:
            raise ValueError(f"eval override '+{name}': the run's config already has '{name}'; drop the '+'")
        OmegaConf.update(cfg, name, value, merge=False, force_add=add)


def _table(metrics: dict[str, float]) -> str:
    width = max((len(k) for k in metrics), default=6)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 12}"]
    lines += [f"{k:<{width}}  {v:.6g}" for k, v in sorted(metrics.items())]
    return "\n".join(lines)


def evaluate(ckpt_path: str, overrides: dict) -> dict[str, float]:
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path} is not a file")
    run_dir = run_dir_of(ckpt)
    source = config_file(run_dir)
    cfg = OmegaConf.load(source)
    apply_overrides(cfg, overrides, str(source))
    changes = [f"{k}={v}" for k, v in overrides.items()]
    L.seed_everything(int(cfg.seed), workers=True)
    task, module, datamodule, model = build(cfg, load_init=False)
    try:  # a Lightning checkpoint of this run, or a plain state dict of the model (same rules as init_ckpt)
        load_model_weights(module.model, str(ckpt))
    except ValueError as err:
        raise ValueError(f"ckpt_path={ckpt} does not fit the model built from {source} and the eval "
                         f"overrides: {err.__cause__ or err}") from err
    out_dir = run_dir / "eval" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"
    return validate_and_record(cfg, task, module, datamodule, model, out_dir,
                               {"ckpt_path": str(ckpt), "overrides": changes, "run_config": str(source)})


def validate_and_record(cfg: DictConfig, task, module, datamodule, model, out_dir: Path,
                        record: dict[str, Any]) -> dict[str, float]:
    """Run the task's validation once; write ``out_dir``/results.json (metrics + ``record``), metrics.csv and the
    task's curve plot; print the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    logger = L.pytorch.loggers.CSVLogger(str(out_dir), name="", version="")
    # default_root_dir: plots the task module writes (e.g. V-NIAH heatmaps) go to the eval dir, never the cwd
    trainer = L.Trainer(accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, logger=logger,
                        default_root_dir=str(out_dir), enable_progress_bar=on_terminal(), enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    metrics.update(task.generation_metrics(model, datamodule, out_dir))
    pe_config = OmegaConf.to_container(cfg.pe, resolve=True)
    (out_dir / "results.json").write_text(json.dumps(
        {"metrics": metrics, **record, "task": task.name, "pe": model.pe.name, "pe_repr": repr(model.pe),
         "pe_config": pe_config, "data_source": getattr(datamodule, "source", None)},
        indent=2, sort_keys=True, default=str))
    curve = task.curve
    if curve:
        from rope_lab.callbacks import MetricCurvePlot

        MetricCurvePlot(str(out_dir), **curve).on_validation_end(trainer, module)
    print(_table(metrics))
    print(f"results: {out_dir / 'results.json'}")
    return metrics


def evaluate_from_configs(argv: list[str], out_dir: str | None = None) -> dict[str, float]:
    """Evaluate weights from outside rope_lab (e.g. ``backbone.timm_weights=...``) with no training run:
    configs/train.yaml composed with ``argv`` (Hydra overrides, ``experiment=`` included). Results go to
    ``out_dir`` or ``outputs/eval/<task>/<pe>/<time>_<uid>/``. A backbone that loaded no outside weights
    (``model.pretrained_source`` unset) is refused: a randomly initialised model has nothing to evaluate."""
    cfg = compose_overrides(argv)
    L.seed_everything(int(cfg.seed), workers=True)
    task, module, datamodule, model = build(cfg)
    source = getattr(model, "pretrained_source", None) or cfg.get("init_ckpt")
    if not source:
        raise ValueError("eval.py without ckpt_path evaluates pretrained weights, but none were given: pass "
                         "ckpt_path=<run>/checkpoints/last.ckpt, or the backbone's weights (e.g. backbone=vit_base "
                         "backbone.timm_weights=<file or timm model name>), or init_ckpt=<state dict>")
    stamp = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"
    target = Path(out_dir) if out_dir else Path("outputs") / "eval" / task.name / model.pe.name / stamp
    if (target / "results.json").exists():
        raise ValueError(f"out_dir={target} already holds a results.json; choose another out_dir")
    return validate_and_record(cfg, task, module, datamodule, model, target,
                               {"weights": str(source), "overrides": list(argv)})


def compose_overrides(argv: list[str]) -> DictConfig:
    """configs/train.yaml composed with raw Hydra overrides (a bad group, option or key: one-line ValueError)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    parse_overrides(argv)  # grammar errors first, in rope_lab's wording
    try:
        return _compose(list(argv))
    except (HydraException, OmegaConfBaseException) as err:
        raise ValueError(f"eval overrides {' '.join(argv)}: {' '.join(str(err).split())}") from err
