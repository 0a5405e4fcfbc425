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


def test_reproduce_unknown_name_lists_choices(capsys):
    with pytest.raises(SystemExit) as exit_:
        _dispatcher().main(["nope"])
    assert exit_.value.code == 2
    assert "error: unknown experiment 'nope'; choose one of" in capsys.readouterr().err


DEMO = '''
from pathlib import Path

from rope_lab.analysis.reproduce import write_report

HERE = Path(__file__).resolve().parent


def main(argv):
    (HERE / "plot.png").write_bytes(b"new plot")
    write_report(HERE, ["new table", (HERE / "expected.csv").read_text()])
'''


@pytest.fixture
def demo(tmp_path, monkeypatch):
    """A stand-in experiments/ tree with one study whose committed results must survive a default reproduction."""
    import rope_lab.analysis.reproduce as helpers

    experiments = tmp_path / "experiments"
    study = experiments / "demo"
    study.mkdir(parents=True)
    (study / "reproduce.py").write_text(DEMO)
    (study / "README.md").write_text("demo")
    (study / "expected.csv").write_text("claim,paper\n")
    (study / "results.md").write_text("committed table")
    (study / "plot.png").write_bytes(b"committed plot")
    dispatcher = _dispatcher()
    monkeypatch.setattr(dispatcher, "EXPERIMENTS", experiments)
    monkeypatch.setattr(helpers, "EXPERIMENTS", experiments)
    monkeypatch.delenv(helpers.WRITE_ENV, raising=False)
    return dispatcher, study


def test_reproduce_writes_a_fresh_folder_by_default(demo):
    dispatcher, study = demo
    out = dispatcher.main(["demo"])
    assert (study / "results.md").read_text() == "committed table"
    assert (study / "plot.png").read_bytes() == b"committed plot"
    assert out.parent == study / "runs" and out.name.startswith("reproduce_")
    assert (out / "results.md").read_text() == "new table\nclaim,paper\n"
    assert (out / "plot.png").read_bytes() == b"new plot"
    assert not (out / "reproduce.py").exists()


def test_reproduce_write_flag_updates_the_committed_results(demo):
    import rope_lab.analysis.reproduce as helpers

    dispatcher, study = demo
    assert dispatcher.main(["demo", "--write"]) == study
    assert (study / "results.md").read_text().startswith("new table")
    assert (study / "plot.png").read_bytes() == b"new plot"
    assert helpers.WRITE_ENV not in __import__("os").environ  # not leaked to later runs


def test_write_report_never_overwrites_a_committed_folder_by_itself(demo):
    from rope_lab.analysis.reproduce import write_report

    _, study = demo
    out = write_report(study, ["stray"])
    assert out != study and (out / "results.md").read_text() == "stray"
    assert (study / "results.md").read_text() == "committed table"


def test_base_bound_script_does_not_overwrite_committed_table(tmp_path):
    import sys

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from scripts.base_bound import main as base_bound

    committed = root / "experiments" / "base_bound" / "table.md"
    before = committed.read_bytes()
    runs = root / "experiments" / "base_bound" / "runs"
    existing = set(runs.glob("reproduce_*")) if runs.exists() else set()
    try:
        base_bound(["--max-length", "1024", "--out", str(committed)])
        assert committed.read_bytes() == before
        (fresh,) = set(runs.glob("reproduce_*")) - existing
        assert (fresh / "table.md").read_text().startswith("RoPE base lower bound")
        base_bound(["--max-length", "1024", "--out", str(tmp_path / "t.md")])  # any other path: written as asked
        assert (tmp_path / "t.md").exists()
    finally:
        import shutil

        for d in set(runs.glob("reproduce_*")) - existing if runs.exists() else []:
            shutil.rmtree(d)


def test_committed_drope_memory_table_is_generated_from_its_json():
    """experiments/drope/traj_memory.md (quoted in its README) regenerates from traj_memory.json."""
    import json

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("bench_traj_memory", root / "scripts" / "bench_traj_memory.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder = root / "experiments" / "drope"
    table = bench.markdown(json.loads((folder / "traj_memory.json").read_text()))
    assert table == (folder / "traj_memory.md").read_text()
    assert table.split("\n\n", 1)[1] in (folder / "README.md").read_text()
