"""The seeds runner and the results page (rope_lab/analysis/study.py, results_page.py): a fake study runs every
variant x seed, writes runs.csv/manifest/summary with verdicts; a cached run is reused only for the same command;
every committed study summary and docs/results.md regenerate identically from their committed runs.csv."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rope_lab.analysis import results_page, stats, study

SPEC = study.StudySpec(
    name="fake", title="Fake study", base=["experiment=x"],
    budgets={"quick": study.Budget(steps=5, overrides=["task.eval_windows=2"]), "full": study.Budget(steps=50)},
    variants={"A": ["pe=rope"], "B": ["pe=nope"], "C": ["pe=p_rope"]},
    metrics=["val/ppl"],
    claims=[study.Claim("A beats B", "val/ppl", "A", "B", True, "1 vs 2"),
            study.Claim("C beats A", "val/ppl", "C", "A", True, "")])


def test_runner_trains_every_variant_and_seed_and_decides_by_the_paired_interval(monkeypatch, tmp_path):
    calls = []

    def fake_train(run_dir: Path, overrides: list[str]):
        calls.append(overrides)
        seed = int(overrides[-1].split("=")[1])
        variant = {"pe=rope": 1.0, "pe=nope": 2.0, "pe=p_rope": 1.0}[overrides[1]]
        noise = [0.0, 0.05, -0.05][seed]  # shared by every variant at a seed: pairing removes it
        ppl = variant + noise + (0.3 * (seed - 1) if overrides[1] == "pe=p_rope" else 0.0)
        return {"val/ppl": ppl}, 1.5

    monkeypatch.setattr(study, "train_one", fake_train)
    out = study.run_study(SPEC, seeds=3, budget="quick", extra=["x=1"], out=tmp_path, command="cmd")
    assert len(calls) == 9
    assert calls[0] == ["experiment=x", "pe=rope", "trainer.max_steps=5", "trainer.val_check_interval=5",
                        "task.eval_windows=2", "seed=0", "x=1"]
    manifest = json.loads((out / study.MANIFEST).read_text())
    assert manifest["seeds"] == [0, 1, 2] and manifest["budget"]["steps"] == 5 and manifest["cpu_minutes"] == pytest.approx(9 * 1.5 / 60, abs=0.01)
    assert {"commit", "command", "machine", "torch", "wall_minutes", "variants"} <= set(manifest)
    summary = json.loads((out / study.SUMMARY_JSON).read_text())
    verdicts = {c["claim"]: c["verdict"] for c in summary["claims"]}
    assert verdicts == {"A beats B": "held", "C beats A": "inconclusive"}  # C - A = 0.3 (s - 1): mean 0
    assert "| A beats B |" in (out / study.SUMMARY_MD).read_text()


def test_a_claim_against_a_baseline_metric_pairs_the_same_runs(monkeypatch, tmp_path):
    """``than_metric``: the variant's own runs against a trivial baseline the task logs (e.g. constant velocity)."""
    spec = study.StudySpec(name="fake", title="Fake", variants={"A": ["pe=rope"]}, metrics=["test/ade"],
                           claims=[study.Claim("A beats constant velocity", "test/ade", "A", "A", True, "",
                                               than_metric="test/cv_ade")])
    values = {0: (100.0, 130.0), 1: (104.0, 131.0), 2: (98.0, 129.5)}
    monkeypatch.setattr(study, "train_one", lambda run_dir, o: (dict(zip(
        ["test/ade", "test/cv_ade"], values[int(o[-1].split("=")[1])])), 0.0))
    out = study.run_study(spec, seeds=3, budget="full", extra=[], out=tmp_path, command="cmd")
    assert spec.recorded_metrics() == ["test/ade", "test/cv_ade"]
    claim = json.loads((out / study.SUMMARY_JSON).read_text())["claims"][0]
    assert claim["than_metric"] == "test/cv_ade" and claim["than"]["mean"] == pytest.approx(130.1666, abs=1e-3)
    assert claim["difference"]["mean"] == pytest.approx(29.5, abs=1e-3) and claim["verdict"] == "held"
    assert "130.2 [128.3, 132.1] (test/cv_ade)" in (out / study.SUMMARY_MD).read_text()


def test_a_claims_noise_floor_pools_only_its_two_compared_series():
    """A third variant whose seeds scatter wildly (PI at 1x in yarn) must not make a clear A-vs-B effect
    inconclusive."""
    runs = {"val/ppl": {"A": {0: 1.0, 1: 1.1, 2: 0.9}, "B": {0: 2.0, 1: 2.2, 2: 1.9}, "C": {0: 10.0, 1: 60.0, 2: 90.0}}}
    result, = study.evaluate_claims(dataclasses.replace(SPEC, claims=SPEC.claims[:1]), runs)
    assert result.noise_floor == pytest.approx(stats.pooled_sd([[1.0, 1.1, 0.9], [2.0, 2.2, 1.9]]))
    assert result.noise_floor < 0.2 and result.verdict == "held"


def test_unknown_budget_or_variant_is_refused():
    with pytest.raises(ValueError, match="no budget 'huge'"):
        SPEC.overrides("A", "huge", 0, [])


def test_a_run_is_reused_only_for_the_same_command_and_code(monkeypatch, tmp_path):
    monkeypatch.setattr(study, "_code_version", lambda: "abc")
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"metrics": {"val/ppl": 3.0}}))
    (run / "command.json").write_text(json.dumps({"overrides": ["pe=rope"], "code": "abc"}))
    assert study._cached(run, ["pe=rope"])
    assert not study._cached(run, ["pe=rope", "seed=1"])
    monkeypatch.setattr(study, "_code_version", lambda: "def")
    assert not study._cached(run, ["pe=rope"])


@pytest.mark.parametrize("name", [n for n in study.available()
                                  if (study.EXPERIMENTS / n / "results" / study.RUNS_CSV).is_file()])
def test_committed_study_summaries_regenerate_from_their_runs(tmp_path, name):
    committed = study.EXPERIMENTS / name / "results"
    for f in (study.RUNS_CSV, study.MANIFEST):
        (tmp_path / f).write_bytes((committed / f).read_bytes())
    study.write_summary(study.StudySpec.load(name), tmp_path)
    assert (tmp_path / study.SUMMARY_MD).read_text() == (committed / study.SUMMARY_MD).read_text()


def test_results_page_regenerates_identically(tmp_path):
    page = results_page.write_page(tmp_path / "results.md", tmp_path / "results.png")
    assert page.read_text() == results_page.PAGE.read_text()
    assert (tmp_path / "results.png").stat().st_size > 1000


@pytest.mark.parametrize("name", [n for n in study.available() if (study.EXPERIMENTS / n / "expected.csv").is_file()])
def test_paper_numbers_on_the_results_page_come_from_expected_csv(name):
    """Every decimal number a claim quotes from the paper (study.yaml `paper`, shown on docs/results.md) is one of
    the paper numbers recorded, with their sources, in the study's expected.csv."""
    import re

    recorded = set(re.findall(r"-?\d+\.?\d*", (study.EXPERIMENTS / name / "expected.csv").read_text()))
    for claim in study.StudySpec.load(name).claims:
        quoted = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", claim.paper)
        assert all(n in recorded or str(float(n)) in recorded for n in quoted), (claim.claim, quoted)


def test_derived_variants_evaluate_and_finetune_the_source_run_of_the_same_seed(monkeypatch, tmp_path):
    """A training-free method is eval.py on the base run's checkpoint; a fine-tune starts from its weights; both
    are cached, and redone when the base run is retrained (real train.py / eval.py on a tiny LM)."""
    from tests.test_train import TINY

    base = [f"paths.output_dir={tmp_path}/outputs", *TINY, "task.passkey_lengths=[]"]
    spec = study.StudySpec(
        name="fake", title="Fake", base=base, budgets={"full": study.Budget(steps=2)},
        variants={"RoPE": ["pe=rope"],
                  "PI": study.Derived("RoPE", "eval", ["pe/scaling=linear", "pe.scaling.factor=2"]),
                  "PI +ft": study.Derived("RoPE", "finetune", ["pe/scaling=linear", "pe.scaling.factor=2",
                                                               "trainer.max_steps=1", "trainer.val_check_interval=1"])},
        metrics=["val/ppl@32", "val/ppl@64"], claims=[])
    monkeypatch.setattr(study, "EXPERIMENTS", tmp_path / "experiments")
    out = study.run_study(spec, seeds=1, budget="full", extra=[], out=tmp_path / "results", command="cmd")
    runs = study.read_runs(out / study.RUNS_CSV)
    root = tmp_path / "experiments" / "fake" / "runs" / "seeds" / "full"
    evaluated = json.loads((root / "PI" / "seed0" / "results.json").read_text())
    assert evaluated["ckpt_path"] == str(root / "RoPE" / "seed0" / "checkpoints" / "last.ckpt")
    assert evaluated["pe_config"]["scaling"]["name"] == "linear" and evaluated["pe_config"]["scaling"]["factor"] == 2
    assert runs["val/ppl@64"]["PI"][0] == pytest.approx(evaluated["metrics"]["val/ppl@64"])
    assert runs["val/ppl@32"]["PI"][0] != runs["val/ppl@32"]["RoPE"][0]  # the scaling changed the model
    ft_config = (root / "PI +ft".replace(" ", "_").replace("+", "_") / "seed0" / "run_config.yaml").read_text()
    assert "init_ckpt: " + str(root / "RoPE" / "seed0" / "checkpoints" / "last.ckpt") in ft_config
    assert "max_steps: 1" in ft_config and "name: linear" in ft_config
    # cached: nothing reruns; retraining the base (another command) reruns everything derived from it
    monkeypatch.setattr(study, "_run_child", lambda argv: pytest.fail(f"reran {argv[0]}"))
    again = study.run_study(spec, seeds=1, budget="full", extra=[], out=tmp_path / "again", command="cmd")
    # the manifest's CPU time is what the results cost, also when every run came from the cache
    first_cpu = json.loads((out / study.MANIFEST).read_text())["cpu_minutes"]
    assert first_cpu > 0 and json.loads((again / study.MANIFEST).read_text())["cpu_minutes"] == first_cpu
    ran = []
    monkeypatch.setattr(study, "_run_child", lambda argv: (ran.append(argv[0]), ("", 0.0))[1])
    record = json.loads((root / "RoPE" / "seed0" / "command.json").read_text())
    (root / "RoPE" / "seed0" / "command.json").write_text(json.dumps({**record, "code": "other"}))
    with pytest.raises(Exception):  # the fake child writes nothing: what matters is what it was asked to run
        study.run_study(spec, seeds=1, budget="full", extra=[], out=tmp_path / "third", command="cmd")
    assert ran == ["train.py"]


def test_a_derived_variant_needs_a_trained_source():
    with pytest.raises(ValueError, match="starts from 'Nope', which is not a train.py variant.*\\['RoPE'\\]"):
        study.StudySpec(name="x", title="x", variants={"RoPE": ["pe=rope"], "PI": study.Derived("Nope", "eval")},
                        metrics=[], claims=[]).check_sources("study.yaml")
    with pytest.raises(ValueError, match="one of \\['eval_of', 'finetune_of'\\]"):
        study.Derived.parse("PI", {"evaluate_of": "RoPE"})


CALLS: list[int] = []


def fake_analysis(seed: int, budget: str) -> dict:
    CALLS.append(seed)
    return {"short": {"err": 1.0 + 0.01 * seed}, "long": {"err": 2.0 + 0.02 * seed}}


def test_an_analysis_study_calls_its_function_once_per_seed_and_caches(monkeypatch, tmp_path):
    spec = study.StudySpec(name="fake", title="Fake", variants={"short": [], "long": []}, metrics=["err"],
                           claims=[study.Claim("error grows with length", "err", "long", "short", False)],
                           analysis="tests.analysis.test_study:fake_analysis")
    monkeypatch.setattr(study, "EXPERIMENTS", tmp_path)
    CALLS.clear()
    out = study.run_study(spec, seeds=3, budget="full", extra=[], out=tmp_path / "r", command="cmd")
    assert CALLS == [0, 1, 2]
    runs = study.read_runs(out / study.RUNS_CSV)
    assert runs["err"]["long"] == {0: 2.0, 1: 2.02, 2: 2.04}
    assert json.loads((out / study.SUMMARY_JSON).read_text())["claims"][0]["verdict"] == "held"
    study.run_study(spec, seeds=3, budget="full", extra=[], out=tmp_path / "r2", command="cmd")
    assert CALLS == [0, 1, 2]  # cached for the same code
    with pytest.raises(ValueError, match="takes no train.py overrides"):
        study.run_study(spec, seeds=1, budget="full", extra=["pe=rope"], out=tmp_path / "r3", command="cmd")
    bad = study.StudySpec(name="fake", title="Fake", variants={"short": []}, metrics=[], claims=[],
                          analysis="tests.analysis.test_study:no_such_function")
    with pytest.raises(ValueError, match="not an importable module:function"):
        study.run_study(bad, seeds=1, budget="full", extra=[], out=tmp_path / "r4", command="cmd")


def test_a_study_curve_records_its_metrics_and_draws_every_variant_with_its_band(monkeypatch, tmp_path):
    curve = study.Curve(prefix="val/ppl@", at=[128, 256], xlabel="length", ylabel="ppl", logy=True, vline=128)
    spec = study.StudySpec(name="fake", title="Fake", variants={"A": ["pe=rope"], "B": ["pe=nope"]},
                           metrics=["val/ppl@128"], claims=[], curve=curve)
    assert spec.recorded_metrics() == ["val/ppl@128", "val/ppl@256"]

    def fake_train(run_dir, overrides):
        seed, slope = int(overrides[-1].split("=")[1]), 2.0 if overrides[0] == "pe=nope" else 1.0
        return {"val/ppl@128": 3.0 + 0.1 * seed, "val/ppl@256": 3.0 + slope + 0.1 * seed}, 0.0

    monkeypatch.setattr(study, "train_one", fake_train)
    out = study.run_study(spec, seeds=3, budget="full", extra=[], out=tmp_path, command="cmd")
    assert (out / study.CURVE_PNG).stat().st_size > 1000
    assert "![ppl vs length](curve.png)" in (out / study.SUMMARY_MD).read_text()
    from rope_lab.analysis import plots

    drawn = {}
    monkeypatch.setattr(plots, "plot_curve", lambda series, path, *a, bands=None, **k: drawn.update(
        series=series, bands=bands) or path)
    study.write_curve(spec, study.read_runs(out / study.RUNS_CSV), tmp_path / "again.png")
    assert drawn["series"]["B"] == {128: pytest.approx(3.1), 256: pytest.approx(5.1)}
    low, high = drawn["bands"]["A"][256]
    assert low < 4.1 < high


def test_a_rate_curve_clips_its_band_to_the_metric_range():
    rate = study.Curve(prefix="val/passkey@len=", at=[128], xlabel="length", ylabel="exact match", bounds=[0, 1])
    assert rate.clip(0.8, 1.3) == (0.8, 1.0) and rate.clip(-0.2, 0.4) == (0.0, 0.4)
    assert study.Curve(prefix="p", at=[1], xlabel="x", ylabel="y").clip(-1.0, 2.0) == (-1.0, 2.0)
    with pytest.raises(ValueError, match=r"curve.bounds must be \[low, high\] with low < high; got \[1, 0\]"):
        study.Curve(prefix="p", at=[1], xlabel="x", ylabel="y", bounds=[1, 0])


def test_parallel_runs_give_the_same_results_and_start_derived_runs_after_their_source(monkeypatch, tmp_path):
    """--jobs 2: every (variant, seed) once, derived variants only after their source run at that seed finished,
    and runs.csv / verdicts identical to one run at a time."""
    import threading
    import time as clock

    spec = study.StudySpec(
        name="fake", title="Fake", base=[], budgets={"full": study.Budget(steps=2)},
        variants={"A": ["pe=rope"], "B": ["pe=nope"], "A ev": study.Derived("A", "eval", ["pe.base=2"])},
        metrics=["val/ppl"], claims=[study.Claim("A beats B", "val/ppl", "A", "B", True, "")])
    finished, lock = set(), threading.Lock()

    def fake_run(spec_, variant, budget, seed, extra, root):
        how = spec_.variants[variant]
        if isinstance(how, study.Derived):
            assert (seed, how.source) in finished, f"{variant} seed {seed} started before its source"
        clock.sleep(0.01 * (3 - seed))  # later seeds finish first: rows must still come out seed-major
        with lock:
            finished.add((seed, variant))
        return {"val/ppl": {"A": 1.0, "B": 2.0, "A ev": 1.5}[variant] + 0.1 * seed}, 1.0

    monkeypatch.setattr(study, "run_variant", fake_run)
    one = study.run_study(spec, seeds=3, budget="full", extra=[], out=tmp_path / "one", command="cmd")
    finished.clear()
    two = study.run_study(spec, seeds=3, budget="full", extra=[], out=tmp_path / "two", command="cmd", jobs=2)
    assert len(finished) == 9
    assert (one / study.RUNS_CSV).read_text() == (two / study.RUNS_CSV).read_text()
    assert json.loads((two / study.MANIFEST).read_text())["jobs"] == 2
    assert json.loads((two / study.SUMMARY_JSON).read_text())["claims"][0]["verdict"] == "held"
    with pytest.raises(ValueError, match="jobs=0"):
        study.run_study(spec, seeds=1, budget="full", extra=[], out=tmp_path / "bad", command="cmd", jobs=0)


def test_a_derived_run_starts_as_soon_as_its_own_source_finished(monkeypatch, tmp_path):
    """3 seeds, 2 jobs, one slow base model per seed: seed 0's derived run must not wait for seed 2's base (a slot
    would sit idle while the last base trains alone)."""
    import threading
    import time as clock

    spec = study.StudySpec(name="fake", title="Fake", base=[], budgets={"full": study.Budget(steps=2)},
                           variants={"A": ["pe=rope"], "A ev": study.Derived("A", "eval", ["pe.base=2"])},
                           metrics=["val/ppl"], claims=[])
    events, lock = [], threading.Lock()

    def fake_run(spec_, variant, budget, seed, extra, root):
        with lock:
            events.append(("start", variant, seed))
        clock.sleep(0.3 if variant == "A" else 0.01)
        with lock:
            events.append(("end", variant, seed))
        return {"val/ppl": 1.0}, 1.0

    monkeypatch.setattr(study, "run_variant", fake_run)
    study.run_study(spec, seeds=3, budget="full", extra=[], out=tmp_path, command="cmd", jobs=2)
    assert events.index(("start", "A ev", 0)) < events.index(("end", "A", 2))
    assert all(events.index(("start", "A ev", s)) > events.index(("end", "A", s)) for s in range(3))


def test_a_child_run_reports_its_own_cpu_time_and_thread_cap_while_another_runs(monkeypatch):
    """The CPU seconds of a run are its own child's, not those of a busy run finishing meanwhile in another thread
    (os.times() counts every reaped child); a capped run sees OMP_NUM_THREADS; a failing child raises."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    busy = ["-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"]
    idle = ["-c", "import os, time\ntime.sleep(0.8)\nprint(os.environ.get('OMP_NUM_THREADS'))"]
    monkeypatch.setattr(study, "_CHILD_THREADS", 1)
    with ThreadPoolExecutor(2) as pool:
        slow, fast = pool.submit(study._run_child, idle), pool.submit(study._run_child, busy)
        (idle_out, idle_cpu), (_, busy_cpu) = slow.result(), fast.result()
    assert busy_cpu >= 0.35 and idle_cpu < 0.3 and idle_out.strip() == "1"
    with pytest.raises(subprocess.CalledProcessError):
        study._run_child(["-c", "raise SystemExit(3)"])


def test_rate_metrics_are_pooled_over_seeds_with_wilson_intervals(monkeypatch, tmp_path):
    """A budget's ``trials`` turns a rate metric into successes / trials summed over seeds with the Wilson interval
    (evaluation.md 8.6); a rate that is no count of the declared trials is refused."""
    from rope_lab.analysis import stats

    spec = study.StudySpec(
        name="fake", title="Fake", base=[], variants={"A": ["pe=rope"], "B": ["pe=nope"]},
        budgets={"full": study.Budget(steps=2, trials={"val/acc": 32})}, metrics=["val/acc"], claims=[])
    hits = {"A": [32, 30, 31], "B": [0, 1, 0]}
    monkeypatch.setattr(study, "train_one", lambda run_dir, o: (
        {"val/acc": hits["A" if "pe=rope" in o else "B"][int(o[-1].split("=")[1])] / 32}, 1.0))
    out = study.run_study(spec, seeds=3, budget="full", extra=[], out=tmp_path, command="cmd")
    pooled = {p["variant"]: p for p in json.loads((out / study.SUMMARY_JSON).read_text())["pooled_rates"]}
    assert (pooled["A"]["successes"], pooled["A"]["trials"]) == (93, 96) and pooled["B"]["successes"] == 1
    assert pooled["A"]["wilson"] == pytest.approx(list(stats.wilson(93, 96)))
    assert "| A | val/acc | 93/96 |" in (out / study.SUMMARY_MD).read_text()
    spec.budgets["full"].trials["val/acc"] = 30  # 31/32 is no count out of 30
    with pytest.raises(ValueError, match="not a count out of 30"):
        study.write_summary(spec, out)
