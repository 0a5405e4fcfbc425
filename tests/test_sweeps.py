"""Multiruns: separate run dirs, a failing job recorded while the sweep goes on, the summary, Optuna and SLURM
configs (rope_lab/sweeps.py, configs/hparams_search/, configs/hydra/launcher/)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rope_lab.cli import RunFailed, UserError
from rope_lab.sweeps import FAILURE_FILE, SUMMARY_FILE, FailedJob, failure_kind, run_sweep_job, write_summary
from tests.test_train import CONFIGS, train


def _sweep_dir(tmp_path: Path) -> Path:
    (summary,) = (tmp_path / "multirun").rglob(SUMMARY_FILE)
    return summary.parent


def tiny_corpus(tmp_path: Path) -> list[str]:
    """A few small text files (task.corpus=files): the sweep machinery is under test, not the data pipeline."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    words = "rotary position embedding base frequency length sweep trial".split()
    for i in range(8):
        (folder / f"doc{i}.txt").write_text(" ".join(words[(i + j) % len(words)] for j in range(300)))
    return ["task.corpus=files", f"task.data_path={folder}", "task.val_fraction=0.25"]  # doc3, doc5: validation


def test_multirun_goes_on_past_a_failing_job_and_exits_non_zero(tmp_path):
    """Job 1 gets a bad value (base <= 1): it is recorded, jobs 0 and 2 still train into their own dirs, the
    summary lists all three and the process exits with 1 naming the failed job."""
    res = train(tmp_path, "-m", "pe.base=1e2,0.5,1e6", "debug=fast", *tiny_corpus(tmp_path), check=False)
    assert res.returncode == 1, res.stderr[-3000:]
    sweep = _sweep_dir(tmp_path)
    dirs = sorted(p.parent for p in sweep.rglob("results.json"))
    assert [d.name for d in dirs] == ["job0", "job2"]
    assert sorted(OmegaConf.load(d / ".hydra" / "config.yaml").pe.base for d in dirs) == [1e2, 1e6]
    failure = json.loads((sweep / "job1" / FAILURE_FILE).read_text())
    assert failure["kind"] == "user_error" and "base must be > 1, got base=0.5" in failure["message"]
    assert not (sweep / "job1" / "results.json").exists()
    summary = json.loads((sweep / SUMMARY_FILE).read_text())
    assert (summary["ok"], summary["failed"], summary["missing"]) == (2, 1, 0)
    ok = [j for j in summary["jobs"] if j["status"] == "ok"]
    assert all(j["monitor"] == "val/ppl" and j["value"] > 1 for j in ok)
    assert "error: 1 of 3 jobs did not finish" in res.stderr and "job1 pe.base=0.5: failed (user_error:" in res.stderr


def test_optuna_sweep_two_trials(tmp_path):
    """hparams_search=optuna: two trials of a tiny config; the best value Optuna reports is the lower val/ppl of the
    two runs (lm_longctx minimises), and every trial has its own run dir."""
    res = train(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "debug=fast", *tiny_corpus(tmp_path),
                check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = _sweep_dir(tmp_path)
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("job*/results.json"))]
    assert len(runs) == 2
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(r["metrics"]["val/ppl"] for r in runs))
    assert set(best.best_params) == {"optim.lr", "pe.base"}
    for job in sweep.glob("job*"):
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        assert 1e-4 <= cfg.optim.lr <= 3e-3 and 1e2 <= cfg.pe.base <= 1e6


@pytest.mark.parametrize("task,direction", [("lm_longctx", "minimize"), ("image_cls", "maximize"),
                                            ("trajectory", "minimize"), ("vniah", "maximize")])
def test_optuna_direction_follows_the_task_metric(task, direction):
    from rope_lab.run import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hparams_search=optuna", f"task={task}"],
                      return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == direction
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")


def test_slurm_launcher_config_composes_with_the_submitit_schema():
    """configs/hydra/launcher/slurm.yaml is merged into submitit's structured config (a mistyped key would fail)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm", "sweep=rope_base"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.tasks_per_node == launcher.gpus_per_node == 1 and launcher.nodes == 1


# --- the pieces, without a subprocess -----------------------------------------------------------------------------


def test_failed_job_is_not_a_number_and_pickles(tmp_path):
    """A sweeper must never read a failure as a metric (Optuna: float() fails -> failed trial); submitit pickles the
    return value back from the cluster node."""
    failed = FailedJob(str(tmp_path), "user_error", "pe.base=0.5")
    with pytest.raises(ValueError, match="failed"):
        float(failed)
    assert pickle.loads(pickle.dumps(failed)) == failed


@pytest.mark.parametrize("err,kind", [(UserError("bad"), "user_error"), (FileNotFoundError("x"), "user_error"),
                                      (RunFailed("diverged"), "run_failed"), (RuntimeError("bug"), "crash")])
def test_failure_kinds(err, kind):
    assert failure_kind(err) == kind


def test_run_sweep_job_records_a_crash_with_its_traceback(tmp_path):
    def boom() -> float:
        raise ZeroDivisionError("division by zero in the model")

    out = run_sweep_job(boom, tmp_path / "job3")
    assert isinstance(out, FailedJob) and out.kind == "crash"
    record = json.loads((tmp_path / "job3" / FAILURE_FILE).read_text())
    assert record["error_type"] == "ZeroDivisionError" and "in boom" in record["traceback"]
    assert run_sweep_job(lambda: 1.5, tmp_path / "job4") == 1.5


def test_interrupt_still_stops_the_sweep(tmp_path):
    def interrupted() -> float:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep_job(interrupted, tmp_path)


def test_summary_counts_a_job_without_record_as_missing(tmp_path):
    """A job the scheduler killed leaves neither results.json nor failure.json."""
    for i in range(3):
        (tmp_path / f"job{i}" / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create([f"pe.base={i}"]), tmp_path / f"job{i}" / ".hydra" / "overrides.yaml")
    (tmp_path / "job0" / "results.json").write_text(json.dumps({"monitor": "val/acc", "metrics": {"val/acc": 0.5}}))
    run_sweep_job(lambda: (_ for _ in ()).throw(UserError("no")), tmp_path / "job1")
    summary = write_summary(tmp_path)
    assert [j["status"] for j in summary["jobs"]] == ["ok", "failed", "missing"]
    assert summary["jobs"][0]["value"] == 0.5 and summary["jobs"][2]["overrides"] == ["pe.base=2"]
