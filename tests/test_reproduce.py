"""Paper reproductions (``make reproduce``): each runs ``python scripts/reproduce.py NAME`` in-process.

Experiments whose reproduction needs arguments (a temporary output dir, a shortened budget) have their own slow
tests next to their task (tests/tasks/test_image_cls.py, test_image_gen.py, ...); these run at their defaults and
write their tables/plots next to their README, as documented there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce.py"


def _dispatcher():
    spec = importlib.util.spec_from_file_location("rope_lab_reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yarn", "p_rope", "bf16_anchor", "base_bound", "road", "hirope", "a2ats", "elitekv",
                                  "chunked_memory"])
def test_reproduce(name):
    dispatcher = _dispatcher()
    assert name in dispatcher.available()
    dispatcher.main([name])


def test_reproduce_lists_every_experiment_with_a_readme(capsys):
    dispatcher = _dispatcher()
    dispatcher.main(["--list"])
    listed = capsys.readouterr().out
    experiments = Path(__file__).resolve().parents[1] / "experiments"
    for folder in experiments.iterdir():
        if (folder / "reproduce.py").exists():
            assert folder.name in listed and (folder / "README.md").exists()


def test_reproduce_unknown_name_lists_choices():
    with pytest.raises(SystemExit, match="unknown experiment 'nope'; choose one of"):
        _dispatcher().main(["nope"])
