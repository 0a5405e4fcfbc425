"""One source of pe and scaling defaults: the registered class's ``Config`` dataclass.

configs/pe/<name>.yaml (and configs/pe/scaling/<name>.yaml) extend the dataclass defaults that
``store_dataclass_defaults`` puts in Hydra's ConfigStore and hold only the name and deliberate overrides, each with
a comment saying why. Every registered variant is covered (the registry lists them), so a new one needs no edit here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from rope_lab.pe.registry import PE, PE_DEFAULTS_GROUP, SCALING, SCALING_DEFAULTS_GROUP, build_pe

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

#: (registry, configs/ group folder, ConfigStore group of its defaults, overrides composing an option of the group)
GROUPS = {"pe": (PE, "pe", PE_DEFAULTS_GROUP, lambda name: [f"pe={name}"]),
          "scaling": (SCALING, "pe/scaling", SCALING_DEFAULTS_GROUP, lambda name: ["pe=rope", f"pe/scaling={name}"])}
CASES = [(kind, name) for kind, (registry, *_) in GROUPS.items() for name in registry.names()]


def _yaml(kind: str, name: str) -> tuple[Path, dict]:
    path = CONFIGS / GROUPS[kind][1] / f"{name}.yaml"
    assert path.is_file(), f"registered {kind} '{name}' has no {path.relative_to(ROOT)}"
    return path, yaml.safe_load(path.read_text()) or {}


def _overrides(raw: dict) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in ("defaults", "name")}


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def _node(kind: str, cfg: DictConfig) -> dict:
    """The composed pe (or pe.scaling) section, interpolations left as written."""
    return OmegaConf.to_container(cfg.pe if kind == "pe" else cfg.pe.scaling, resolve=False)


@pytest.mark.parametrize("kind,name", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_yaml_holds_only_the_name_and_commented_overrides(kind, name):
    registry, _, group, _ = GROUPS[kind]
    path, raw = _yaml(kind, name)
    assert raw.get("name") == name, f"{path.name}: name must be {name!r}"
    defaults_list = raw.get("defaults") or []
    entry = f"/{group}/{name}@_here_"
    assert entry in defaults_list and defaults_list[-1] == "_self_", (
        f"{path.name}: its defaults list must extend {entry!r} and end with _self_ (the yaml's overrides win)")
    defaults = registry.defaults(name)
    for key, value in _overrides(raw).items():
        assert key in defaults, f"{path.name}: {key!r} is not an option of {name} ({sorted(defaults)})"
        assert value != defaults[key], (
            f"{path.name} repeats the dataclass default {key}: {value!r}; delete the line (the dataclass is the "
            f"one source of a default) or change the default there")
    lines = path.read_text().splitlines()
    keys = [line.split(":", 1)[0] for line in lines]
    for i, key in enumerate(keys):
        if key in _overrides(raw) and "#" not in lines[i]:
            above = i - 1  # a comment line may head a block of overrides
            while above >= 0 and keys[above] in _overrides(raw) and "#" not in lines[above]:
                above -= 1
            assert above >= 0 and lines[above].startswith("#"), (
                f"{path.name}: the override {key!r} needs a comment (on its line or above it) saying why")


@pytest.mark.parametrize("kind,name", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_composed_config_has_every_option_at_its_dataclass_default(kind, name):
    """``pe=<name>`` composes exactly the dataclass's options (and ``name``), at their defaults but for the yaml's
    overrides; a rotary pe's ``scaling`` is the pe/scaling group's ``none``, the dataclass's default too."""
    registry, _, _, overrides = GROUPS[kind]
    _, raw = _yaml(kind, name)
    cfg = _compose(*overrides(name))
    assert _node(kind, cfg) == {"name": name, **registry.defaults(name), **_overrides(raw)}
    if kind == "pe":  # and what it builds is what the dataclass builds, but for those overrides
        built = build_pe(OmegaConf.to_container(cfg.pe, resolve=True)).cfg
        default = build_pe({"name": name}).cfg
        differ = {k for k in vars(default) if getattr(built, k) != getattr(default, k)}
        assert differ <= set(_overrides(raw)), differ


def test_every_option_is_overridden_without_plus_and_typos_are_refused():
    cfg = _compose("pe=hirope", "pe.split=0.3", "pe.base=1e5", "pe.kernel=eager")
    assert (cfg.pe.split, cfg.pe.base, cfg.pe.kernel) == (0.3, 1e5, "eager")
    cfg = _compose("pe=rope", "pe/scaling=yarn", "pe.scaling.beta_fast=16", "pe.scaling.truncate=false")
    assert (cfg.pe.scaling.beta_fast, cfg.pe.scaling.truncate, cfg.pe.scaling.factor) == (16, False, 4.0)
    with pytest.raises(ConfigCompositionException, match=r"(?s)override .pe\.bse.*use \+pe\.bse=1"):
        _compose("pe=rope", "pe.bse=1")
    with pytest.raises(ValueError, match=r"'rope' has no option\(s\) \['bse'\]"):
        build_pe(OmegaConf.to_container(_compose("pe=rope", "+pe.bse=1").pe, resolve=True))


def test_a_fresh_process_composes_without_importing_rope_lab():
    """The defaults reach Hydra through hydra_plugins/rope_lab_defaults, not through an import of rope_lab: a
    script that only composes configs/ (as tests/test_train.py does) still gets every option."""
    code = ("from hydra import compose, initialize_config_dir\n"
            f"with initialize_config_dir(config_dir={str(CONFIGS)!r}, version_base='1.3'):\n"
            "    print(compose(config_name='train', overrides=['pe=vrope', 'pe.psc=true']).pe.base)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[-1] == "1000000.0"
