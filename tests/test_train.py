"""End-to-end: config composition, fast_dev_run, multirun dirs, resume-exactly, seeding, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TINY = ["backbone.dim=32", "backbone.depth=1", "backbone.n_heads=2", "backbone.n_kv_heads=2", "backbone.mlp_hidden=64",
        "task.train_length=32", "task.batch_size=4", "task.eval_lengths=[32,64]", "task.eval_windows=2",
        "task.passkey_lengths=[128]", "task.passkey_depths=[0.5]", "task.passkey_samples=2",
        "trainer.enable_progress_bar=false", "optim.warmup_steps=2"]


def train(tmp_path: Path, *overrides: str, check: bool = True, tiny: list[str] = TINY) -> subprocess.CompletedProcess:
    flags = [o for o in overrides if o.startswith("-")]
    rest = [o for o in overrides if not o.startswith("-")]
    cmd = [sys.executable, "train.py", *flags, f"paths.output_dir={tmp_path}/outputs",
           f"paths.multirun_dir={tmp_path}/multirun", *tiny, *rest]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and res.returncode != 0:
        raise AssertionError(f"train.py failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())["metrics"]


def _group_options():
    for group in sorted(p for p in CONFIGS.iterdir() if p.is_dir() and p.name not in ("experiment", "hydra")):
        for f in sorted(group.glob("*.yaml")):
            yield group.name, f.stem
    for f in sorted((CONFIGS / "pe" / "scaling").glob("*.yaml")):
        yield "pe/scaling", f.stem


@pytest.mark.parametrize("group,option", list(_group_options()))
def test_every_group_option_composes(group, option):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"{group}={option}"])
    assert cfg.pe.name and cfg.task.name and cfg.backbone.name


def test_default_run_fast_dev_run(tmp_path):
    """`python train.py` defaults (real python_docs corpus) with one batch per loader."""
    res = train(tmp_path, "debug=fast")
    assert "Trainer.fit" in res.stderr or res.returncode == 0
    (run_dir,) = (tmp_path / "outputs" / "lm_longctx" / "rope").glob("*/*")
    assert (run_dir / "results.json").exists() and (run_dir / ".hydra" / "config.yaml").exists()


def test_tiny_run_writes_metrics_plot_and_checkpoint(tmp_path):
    train(tmp_path, "trainer.max_steps=4", "trainer.val_check_interval=2", "logger=tensorboard")
    (run_dir,) = (tmp_path / "outputs" / "lm_longctx" / "rope").glob("*/*")
    metrics = results(run_dir)
    assert {"val/ppl@32", "val/ppl@64", "val/passkey@len=128/depth=0.5", "train/loss"} <= set(metrics)
    assert (run_dir / "ppl_vs_length.png").stat().st_size > 1000
    from tests.test_plot_logging import tensorboard_images

    # the plot is in TensorBoard too, once per validation (steps 2 and 4)
    assert [e.step for e in tensorboard_images(run_dir / "tensorboard")["plots/ppl_vs_length"]] == [2, 4]
    assert (run_dir / "metrics.csv").exists() and (run_dir / "checkpoints" / "last.ckpt").exists()
    # a finished run dir is never overwritten
    res = train(tmp_path, f"hydra.run.dir={run_dir}", "trainer.max_steps=4", check=False)
    assert res.returncode != 0 and "already holds a finished run" in res.stderr


def test_same_seed_same_metrics_and_resume_continues_exactly(tmp_path):
    steps = ["trainer.max_steps=6", "trainer.val_check_interval=3", "callbacks.checkpoint.every_n_train_steps=1"]
    a, b = tmp_path / "a", tmp_path / "b"
    train(a, *steps)
    train(b, *steps)
    (run_a,), (run_b,) = (a / "outputs").rglob("results.json"), (b / "outputs").rglob("results.json")
    assert results(run_a.parent) == results(run_b.parent)
    c = tmp_path / "c"
    res = train(c, *steps, "+callbacks.stop._target_=tests.train_helpers.InterruptAtStep", "+callbacks.stop.step=4",
                check=False)
    assert res.returncode != 0
    (ckpt,) = (c / "outputs").rglob("last.ckpt")
    run_c = ckpt.parent.parent
    assert not (run_c / "results.json").exists()
    train(c, *steps, f"hydra.run.dir={run_c}", "ckpt_path=last")
    ra, rc = results(run_a.parent), results(run_c)
    for key in ("train/loss", "val/ppl@32", "val/ppl@64"):
        assert ra[key] == pytest.approx(rc[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("override,message", [
    ("pe=ropee", "Could not find 'pe/ropee'"),
    ("task=lm_shortctx", "Could not find 'task/lm_shortctx'"),
    ("+pe.bogus=1", "no option(s) ['bogus']"),
    ("task.corpus=wiki", "unknown corpus 'wiki'"),
])
def test_bad_input_is_a_clear_error(tmp_path, override, message):
    res = train(tmp_path, override, "debug=fast", check=False)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr[-2000:]


def _experiments() -> list[list[str]]:
    """Standalone experiment files; files under a ``variant/`` folder are sweep members applied on top of their
    parent experiment (``experiment=drope/aircraft +experiment/drope/variant=rpe``) and run that way."""
    runs = []
    for p in sorted((CONFIGS / "experiment").rglob("*.yaml")):
        rel = p.relative_to(CONFIGS / "experiment").with_suffix("")
        if rel.parent.name == "variant":
            runs.append([f"experiment={_parent(rel.parent.parent)}", f"+experiment/{rel.parent}={rel.name}"])
        else:
            runs.append([f"experiment={rel}"])
    return runs


def _parent(folder: Path) -> str:
    """The one standalone experiment in a folder that has a variant/ sub-group."""
    (main,) = [p for p in (CONFIGS / "experiment" / folder).glob("*.yaml")]
    return str(folder / main.stem)


#: GPU-sized experiments: the smoke run keeps their model and data but evaluates one small cell
SMOKE_SIZE = {
    "experiment=videorope/vniah_d_hd64": ["task.eval_frames=[32]", "task.depths=[0.5]", "task.eval_samples=2",
                                          "task.batch_size=2", "task.eval_batch_size=2", "task.answer_choice=false"],
    "experiment=rope_vit/grid14": ["task.val_samples=64", "task.eval_resolutions=[28,64]", "task.batch_size=8"],
    "experiment=base_bound/control": ["task.batch_size=2", "task.passkey_samples=2", "task.eval_windows=2"],
}


@pytest.mark.parametrize("experiment", _experiments(), ids=lambda e: " ".join(e))
def test_every_experiment_config_runs_fast_dev_run(tmp_path, experiment):
    res = subprocess.run([sys.executable, "train.py", *experiment, *SMOKE_SIZE.get(experiment[0], []), "debug=fast",
                          f"paths.output_dir={tmp_path}/outputs", f"paths.multirun_dir={tmp_path}/multirun",
                          "trainer.enable_progress_bar=false"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert list(tmp_path.rglob("results.json"))


@pytest.mark.parametrize("sweep", sorted(p.stem for p in (CONFIGS / "sweep").glob("*.yaml")))
def test_sweep_configs_compose(sweep):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"sweep={sweep}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params
