"""Packaging: pyproject.toml holds ranges, constraints.txt the exact versions CI installs, and optional packages
missing at run time are a one-line error naming the extra to install."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the [dev] extra installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SELF = canonicalize_name("rope_lab")


def declared() -> dict[str, Requirement]:
    """Every requirement of pyproject.toml (core + all extras, the ``rope_lab[...]`` self-reference excluded) that
    applies to this interpreter, by canonical name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    env = default_environment()
    return {canonicalize_name(r.name): r for r in reqs
            if canonicalize_name(r.name) != SELF and (r.marker is None or r.marker.evaluate(env))}


def pins() -> dict[str, list[Requirement]]:
    """constraints.txt's lines that apply to this interpreter, by canonical name."""
    env = default_environment()
    out: dict[str, list[Requirement]] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                out.setdefault(canonicalize_name(req.name), []).append(req)
    return out


def pinned_version(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", f"constraints.txt: {req} is not an exact pin"
    return spec.version


def test_constraints_pin_every_dependency_exactly_once_inside_its_range():
    deps, locked = declared(), pins()
    assert sorted(set(deps) - set(locked)) == [], "dependencies of pyproject.toml with no pin in constraints.txt"
    assert sorted(set(locked) - set(deps)) == [], "pins in constraints.txt that no dependency needs (stale)"
    for name, reqs in locked.items():
        assert len(reqs) == 1, f"{name} is pinned {len(reqs)} times for this Python: {[str(r) for r in reqs]}"
        version = pinned_version(reqs[0])
        assert deps[name].specifier.contains(version, prereleases=True), \
            f"constraints.txt pins {name}=={version}, outside pyproject.toml's range '{deps[name].specifier}'"


def test_installed_versions_are_the_pinned_ones():
    """What `make install` (and so CI) installs: exactly the pins, never a newer release pip happened to find."""
    wrong = {}
    for name, (req,) in pins().items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != pinned_version(req):
            wrong[name] = (have, pinned_version(req))
    assert not wrong, f"installed != pinned (run `make install`): {wrong}"


def test_make_install_uses_the_constraints():
    """`make install` re-runs when either file changes, and installs under the constraints."""
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile and "$(STAMP): pyproject.toml constraints.txt" in makefile


def test_python_range_covers_the_running_interpreter():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(project["requires-python"]).contains(f"{sys.version_info.major}.{sys.version_info.minor}")


def test_unused_dependencies_are_not_declared():
    """rich and rdata were declared but never imported (issue 22); nothing under rope_lab imports them now either."""
    assert not {"rich", "rdata"} & set(declared())
    for path in (ROOT / "rope_lab").rglob("*.py"):
        text = path.read_text()
        assert "import rich" not in text and "from rich" not in text and "rdata" not in text, path


# --- optional packages missing at run time ---------------------------------------------------------------------


def test_hf_backbone_without_transformers_names_the_extra(monkeypatch):
    from rope_lab.backbones.hf_qwen2vl import HFQwen2VL, HFQwen2VLConfig
    from rope_lab.cli import UserError
    from rope_lab.pe.registry import build_pe

    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails as if not installed
    with pytest.raises(UserError, match=r"backbone=hf_qwen2vl needs the 'transformers' package.*"
                                        r"pip install 'rope_lab\[hf\]'"):
        HFQwen2VL(HFQwen2VLConfig(), build_pe({"name": "rope"}))


def test_adapter_without_peft_names_the_extra(monkeypatch):
    from torch import nn

    from rope_lab.adapters import apply_adapter
    from rope_lab.cli import UserError

    monkeypatch.setitem(sys.modules, "peft", None)
    model = nn.Sequential()
    model.add_module("q_proj", nn.Linear(4, 4))
    with pytest.raises(UserError, match=r"adapter=lora needs the 'peft' package.*pip install 'rope_lab\[adapters\]'"):
        apply_adapter(model, {"name": "lora", "target_modules": ["q_proj"]})


@pytest.mark.parametrize("module,flag,target", [
    ("lightning.pytorch.loggers.wandb", "_WANDB_AVAILABLE", "lightning.pytorch.loggers.WandbLogger"),
    ("lightning.fabric.loggers.tensorboard", "_TENSORBOARD_AVAILABLE", "lightning.pytorch.loggers.TensorBoardLogger"),
])
def test_logger_without_its_package_names_the_extra(monkeypatch, tmp_path, module, flag, target):
    """Lightning decides from its availability flags (not an import) whether a logger's package is there."""
    import importlib

    from omegaconf import OmegaConf

    from rope_lab.cli import UserError
    from rope_lab.loggers import build_loggers

    monkeypatch.setattr(importlib.import_module(module), flag, False)
    if "tensorboard" in module:
        monkeypatch.setattr(importlib.import_module(module), "_TENSORBOARDX_AVAILABLE", False)
    cfg = OmegaConf.create({"extra": {"_target_": target, "save_dir": str(tmp_path)}})
    with pytest.raises(UserError, match=r"logger.extra .* needs the '(wandb|tensorboard)' package.*"
                                        r"pip install 'rope_lab\[loggers\]'"):
        build_loggers(cfg)


ENTRY_POINTS = ["train.py", "eval.py", "tests/conftest.py", *sorted(p.relative_to(ROOT).as_posix()
                                                                    for p in (ROOT / "scripts").glob("*.py"))]


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_entry_points_import_rope_lab_before_torch(path):
    """rope_lab/__init__.py is the one place that sets OMP_WAIT_POLICY; it only works if it runs before torch loads
    OpenMP, so no entry point may import torch (or a module importing it) first."""
    import ast

    first = None
    for node in ast.parse((ROOT / path).read_text()).body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        heavy = [n for n in names if n.split(".")[0] in ("rope_lab", "torch", "torchvision", "lightning",
                                                          "transformers", "timm", "bench_rope")]
        if heavy:
            first = heavy[0].split(".")[0]
            break
    assert first in (None, "rope_lab"), f"{path} imports {first} before rope_lab"


def test_importing_rope_lab_sets_a_passive_omp_wait_policy_unless_the_user_chose_one():
    code = "import os, rope_lab, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_the_pe_defaults_plugin_is_found_outside_the_repository(tmp_path):
    """configs/pe/*.yaml extend the dataclass defaults that hydra_plugins/rope_lab_defaults stores: the plugin ships
    with the package, so a script run from elsewhere (scripts/, another cwd) composes too."""
    code = ("import tempfile; from rope_lab.experiment import compose_config; "
            "print(compose_config(['pe=rope'], tempfile.mkdtemp()).pe.base)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "10000.0", out.stderr[-2000:]
