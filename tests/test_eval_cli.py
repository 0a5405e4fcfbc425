"""eval.py / rope_lab.evaluate: config-group swaps (pe/scaling=...), the run's immutable run_config.yaml, plain
state dict checkpoints, outputs confined to the eval dir, one compact table, and user errors as exit status 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rope_lab.evaluate import evaluate, run_dir_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One tiny trained LM run (train_length 32), shared by the tests; each test reads, never changes, it."""
    from tests.test_train import train

    tmp = tmp_path_factory.mktemp("eval_cli")
    train(tmp, "trainer.max_steps=2", "trainer.val_check_interval=2")
    (run_dir,) = (tmp / "outputs" / "lm_longctx" / "rope").glob("*/*")
    return run_dir


def _evaluate(run_dir: Path, overrides: dict, ckpt: Path | None = None) -> tuple[dict, dict]:
    before = set((run_dir / "eval").glob("*")) if (run_dir / "eval").exists() else set()
    metrics = evaluate(str(ckpt or run_dir / "checkpoints" / "last.ckpt"), overrides)
    (out,) = set((run_dir / "eval").glob("*")) - before
    return metrics, json.loads((out / "results.json").read_text()) | {"_dir": str(out)}


def test_scaling_group_override_is_applied_with_the_run_training_length(run):
    metrics, res = _evaluate(run, {"pe/scaling": "dynamic_ntk", "task.eval_lengths": [64]})
    assert "val/ppl@64" in metrics
    assert "DynamicNTKScaling" in res["pe_repr"] and "original_max_position_embeddings=32" in res["pe_repr"]
    assert res["pe_config"]["scaling"]["name"] == "dynamic_ntk" and "pe/scaling=dynamic_ntk" in res["overrides"]
    _, yarn = _evaluate(run, {"pe.scaling.factor": 8.0, "pe/scaling": "yarn", "task.eval_lengths": [64]})
    assert "YaRNScaling" in yarn["pe_repr"] and "factor=8.0" in yarn["pe_repr"]
    assert "original_max_position_embeddings=32" in yarn["pe_repr"]
    _, plain = _evaluate(run, {"task.eval_lengths": [64]})
    assert "NoScaling" in plain["pe_repr"]


def test_bad_group_overrides_are_refused_with_the_choices(run):
    ckpt = str(run / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match=r"no option 'warp' in config group 'pe/scaling'; choose one of: .*'yarn'"):
        evaluate(ckpt, {"pe/scaling": "warp"})
    with pytest.raises(ValueError, match=r"unknown config group 'pe/warp'; groups: .*'pe/scaling'"):
        evaluate(ckpt, {"pe/warp": "x"})
    with pytest.raises(ValueError, match=r"already has 'pe.scaling'; drop the '\+'"):
        evaluate(ckpt, {"+pe/scaling": "dynamic_ntk"})
    with pytest.raises(ValueError, match=r"cannot swap the 'experiment' group"):
        evaluate(ckpt, {"experiment": "yarn/train"})


def test_run_config_yaml_is_preferred_and_found(run, tmp_path):
    """run_config.yaml (immutable, written once by train) wins over .hydra/config.yaml; either marks a run dir."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval"))
    cfg = OmegaConf.load(copy / ".hydra" / "config.yaml")
    cfg.task.eval_lengths = [32]
    cfg.task.passkey_lengths = []
    OmegaConf.save(cfg, copy / "run_config.yaml")
    metrics, res = _evaluate(copy, {})
    assert res["run_config"].endswith("run_config.yaml")
    assert sorted(k for k in metrics if k.startswith("val/ppl@")) == ["val/ppl@32"]
    shutil.rmtree(copy / ".hydra")
    assert run_dir_of(copy / "checkpoints" / "last.ckpt") == copy.resolve()
    with pytest.raises(FileNotFoundError, match="no run_config.yaml or .hydra/config.yaml above"):
        run_dir_of(tmp_path / "elsewhere" / "x.ckpt")


def test_plain_state_dict_checkpoint(run, tmp_path):
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    plain = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    ckpt = run / "checkpoints" / f"plain_{tmp_path.name}.pt"
    torch.save(plain, ckpt)
    try:
        ref, _ = _evaluate(run, {"task.eval_lengths": [32]})
        got, _ = _evaluate(run, {"task.eval_lengths": [32]}, ckpt=ckpt)
        assert got["val/ppl@32"] == pytest.approx(ref["val/ppl@32"], rel=1e-6)
        torch.save({"not": torch.zeros(1)}, ckpt)
        with pytest.raises(ValueError, match=r"ckpt_path=.* does not fit the model"):
            evaluate(str(ckpt), {})
    finally:
        ckpt.unlink()


def test_module_plots_go_to_the_eval_dir(run, tmp_path, monkeypatch):
    """Task modules write plots under trainer.default_root_dir (the V-NIAH heatmap does): it is the eval dir."""
    from rope_lab.tasks.lm.module import LMModule

    original = LMModule.on_validation_epoch_end

    def probe(self):
        (Path(self.trainer.default_root_dir) / "probe_heatmap.png").write_bytes(b"png")
        return original(self)

    monkeypatch.setattr(LMModule, "on_validation_epoch_end", probe)
    monkeypatch.chdir(tmp_path)
    _, res = _evaluate(run, {"task.eval_lengths": [32]})
    assert (Path(res["_dir"]) / "probe_heatmap.png").is_file()
    assert list(tmp_path.iterdir()) == []


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "eval.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_cli_prints_one_table_and_user_errors_exit_2(run, tmp_path):
    ckpt = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    res = _cli(ckpt, "pe/scaling=yarn", "task.eval_lengths=[32,64]", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("metric") == 1 and "val/ppl@64" in res.stdout  # one table, not one per dataloader
    assert "Validate metric" not in res.stdout + res.stderr and "DataLoader 0" not in res.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written into the working directory
    usage = _cli(cwd=tmp_path)
    assert usage.returncode == 2 and "usage: python eval.py ckpt_path=" in usage.stderr
    bad = _cli(ckpt, "pe/scaling=warp", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: eval override 'pe/scaling=warp'")
    assert "Traceback" not in bad.stderr
    missing = _cli("ckpt_path=/nonexistent.ckpt", cwd=tmp_path)
    assert missing.returncode == 2 and "error: ckpt_path=/nonexistent.ckpt is not a file" in missing.stderr
    typo = _cli(ckpt, "task.eval_lengths=[32", cwd=tmp_path)
    assert typo.returncode == 2 and "error: bad override" in typo.stderr


def test_make_tables_counts_training_runs_not_evals(run, tmp_path):
    sys.path.insert(0, str(ROOT))
    from rope_lab.analysis.results import load_runs
    from scripts.make_tables import main as make_tables

    _evaluate(run, {"task.eval_lengths": [32]})
    root = run.parent.parent
    assert len(list(root.rglob("results.json"))) > 1  # the eval's results.json is there too ...
    assert [r.run_dir for r in load_runs(root)] == [run]  # ... but only the run counts
    written = make_tables([str(root), "--out", str(tmp_path)])
    table = next(p for p in written if p.suffix == ".md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| rope")]
    assert len(rows) == table.count("| run |")  # one row per table: the eval is not a second run
