"""docs/architecture.md stays true: the layers import one way only, every task folder has the files the layout
promises, and every repository path the README, docs/ and the study READMEs name exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rope_lab"
ORCHESTRATION = ("rope_lab.run", "rope_lab.evaluate", "rope_lab.experiment", "rope_lab.sweeps")

#: package folder -> module prefixes it must never import (also not lazily inside a function)
FORBIDDEN = {
    "pe": ("rope_lab.backbones", "rope_lab.tasks", "rope_lab.adapters", "rope_lab.analysis", "rope_lab.longctx",
           *ORCHESTRATION),
    "backbones": ("rope_lab.tasks", "rope_lab.adapters", "rope_lab.analysis", *ORCHESTRATION),
    "tasks": ORCHESTRATION,
    "adapters": ("rope_lab.tasks", "rope_lab.analysis", *ORCHESTRATION),
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_lower_layer_never_imports_a_higher_one(layer):
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def task_folders() -> list[Path]:
    return sorted(p for p in (PACKAGE / "tasks").iterdir() if p.is_dir() and (p / "__init__.py").is_file())


def test_every_task_folder_has_the_files_the_layout_promises():
    assert len(task_folders()) >= 6
    for folder in task_folders():
        missing = [f for f in ("task.py", "datamodule.py", "positions.py", "module.py") if not (folder / f).is_file()]
        assert not missing, f"{folder.relative_to(ROOT)} lacks {missing} (docs/architecture.md, Layout)"


PATH = re.compile(r"(?<![\w/.<])((?:rope_lab|configs|scripts|tests|experiments|docs|hydra_plugins)/[\w./-]*\w)")


PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("docs/*.md"),
                                                                  *ROOT.glob("experiments/*/README.md")])]


@pytest.mark.parametrize("doc", PAGES)
def test_every_repository_path_a_page_names_exists(doc):
    text = (ROOT / doc).read_text()
    named = {m.group(1) for m in PATH.finditer(text) if "<" not in m.group(1) and "*" not in m.group(1)}
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{doc} names paths that do not exist: {missing}"
