"""Multi-seed reproductions: a study declared in ``experiments/<study>/study.yaml`` is run at N seeds, aggregated
with confidence intervals, and its claims get a verdict from the paired differences (rope_lab/analysis/stats.py).

``study.yaml``::

    title: p-RoPE (Barbero et al. 2025)
    base: [experiment=p_rope/compare]          # overrides shared by every variant
    budgets:                                    # --quick / --full (default: full)
      quick: {steps: 150, overrides: [task.eval_windows=4]}
      full: {steps: 300}
    variants: {RoPE: [pe=rope], 0.75-RoPE: [pe=p_rope, pe.p=0.75]}
    # a variant may also start from another variant's run at the same seed (see Derived):
    #   YaRN: {eval_of: RoPE, overrides: [pe/scaling=yarn, pe.scaling.factor=8]}      -> eval.py on its checkpoint
    #   YaRN +ft: {finetune_of: RoPE, overrides: [pe/scaling=yarn, task.train_length=512]}  -> train.py from its weights
    metrics: [val/ppl@128, val/ppl@256]        # reported per variant
    claims:
      - {claim: "0.75-RoPE beats RoPE", metric: val/ppl@128, better: 0.75-RoPE, than: RoPE,
         lower_is_better: true, paper: "4.4414 vs 4.4627 (Table 2)"}
      - {claim: "RoPE beats the unigram floor", metric: val/ppl@128, better: RoPE, than: RoPE,
         than_metric: val/unigram_ppl@128}     # a baseline the task logs in the same runs

Results, generated and never typed by hand (``experiments/<study>/results/``, or a fresh git-ignored folder unless
``--write``): ``runs.csv`` (one row per variant x seed x metric), ``manifest.json`` (commit, command, overrides,
seeds, budget, wall and CPU time, machine, torch version), ``summary.md`` / ``summary.json`` (per-variant means with
intervals, per-claim paired differences and verdicts). Studies committed before the seeds runner carry a
``runs.csv`` converted from their single-seed results (``legacy: true`` in the manifest, seeds = 1).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from rope_lab.analysis import stats
from rope_lab.analysis.results import markdown_table
from rope_lab.progress import progress

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
RUNS_CSV, MANIFEST, SUMMARY_MD, SUMMARY_JSON = "runs.csv", "manifest.json", "summary.md", "summary.json"
CURVE_PNG = "curve.png"


@dataclass
class Claim:
    claim: str
    metric: str
    better: str
    than: str
    lower_is_better: bool = True
    paper: str = ""
    # compare against another metric of the ``than`` variant's own runs (a trivial baseline the task logs, e.g. the
    # constant-velocity floor test/cv_minADE, or the same sampler with the control off), paired by seed
    than_metric: str | None = None

    @property
    def baseline_metric(self) -> str:
        return self.than_metric or self.metric

    @property
    def than_label(self) -> str:
        return f"{self.than} ({self.than_metric})" if self.than_metric else self.than


@dataclass
class Curve:
    """A metric family over a condition, drawn per variant (mean over seeds with its 95% band) as
    ``results/curve.png``: metric ``f"{prefix}{x:g}"`` at every x of ``at`` (e.g. val/ppl@128 ... val/ppl@2048)."""

    prefix: str
    at: list[float]
    xlabel: str
    ylabel: str
    logy: bool = False
    logx: bool = True
    vline: float | None = None  # e.g. the training length
    vline_label: str = "training length"
    bounds: tuple[float, float] | None = None  # the metric's range (a rate: [0, 1]); the bands are clipped to it

    def __post_init__(self) -> None:
        if self.bounds is not None:
            if len(self.bounds) != 2 or not self.bounds[0] < self.bounds[1]:
                raise ValueError(f"curve.bounds must be [low, high] with low < high; got {list(self.bounds)}")
            self.bounds = (float(self.bounds[0]), float(self.bounds[1]))

    def clip(self, low: float, high: float) -> tuple[float, float]:
        """A band (low, high) inside ``bounds`` (a t-interval of a rate near 1 can reach past 1)."""
        if self.bounds is None:
            return low, high
        return max(low, self.bounds[0]), min(high, self.bounds[1])

    @property
    def metrics(self) -> list[str]:
        return [f"{self.prefix}{x:g}" for x in self.at]


@dataclass
class Derived:
    """A variant that starts from ``source``'s run at the same seed instead of training from scratch.

    ``mode="eval"``: ``eval.py ckpt_path=<source run>/checkpoints/last.ckpt <overrides>`` (training-free methods:
    a scaling applied to a trained model); ``mode="finetune"``: train.py with the source's command, then
    ``overrides``, and ``init_ckpt=<source run>/checkpoints/last.ckpt`` (its weights as the starting point)."""

    source: str
    mode: str
    overrides: list[str] = field(default_factory=list)

    MODES = ("eval", "finetune")

    @classmethod
    def parse(cls, variant: str, raw: dict) -> "Derived":
        keys = {f"{m}_of" for m in cls.MODES}
        modes = [m for m in cls.MODES if f"{m}_of" in raw]
        unknown = set(raw) - keys - {"overrides"}
        if len(modes) != 1 or unknown:
            raise ValueError(f"variant '{variant}': expected a list of overrides or a mapping with one of "
                             f"{sorted(keys)} and 'overrides'; got keys {sorted(raw)}")
        return cls(source=str(raw[f"{modes[0]}_of"]), mode=modes[0], overrides=list(raw.get("overrides", [])))


@dataclass
class Budget:
    steps: int | None = None
    overrides: list[str] = field(default_factory=list)
    # rate metrics (exact-match accuracies) -> trials per run under this budget: summary.md then adds the successes
    # pooled over seeds with their Wilson interval next to the across-seed interval
    trials: dict[str, int] = field(default_factory=dict)


@dataclass
class StudySpec:
    name: str
    title: str
    variants: dict[str, list[str] | Derived]
    metrics: list[str]
    claims: list[Claim]
    base: list[str] = field(default_factory=list)
    budgets: dict[str, Budget] = field(default_factory=dict)
    legacy: dict | None = None  # where the single-seed results committed before the seeds runner are (see import_legacy)
    # an analysis study (no train.py runs): "module:function" called as function(seed=, budget=) ->
    # {variant: {metric: value}}; its variants are then names of that function's outputs (``[]``)
    analysis: str | None = None
    curve: Curve | None = None

    @classmethod
    def load(cls, name: str) -> "StudySpec":
        path = EXPERIMENTS / name / "study.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"no study '{name}' ({path} missing); studies: {available()}")
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        claims = [Claim(**c) for c in raw.pop("claims", [])]
        budgets = {k: Budget(**v) for k, v in raw.pop("budgets", {}).items()}
        variants = {v: Derived.parse(v, o) if isinstance(o, dict) else list(o) for v, o in raw.pop("variants").items()}
        curve = Curve(**raw.pop("curve")) if raw.get("curve") else None
        spec = cls(name=name, claims=claims, budgets=budgets, variants=variants, curve=curve, **raw)
        spec.check_sources(path)
        for c in spec.claims:
            missing = {c.better, c.than} - set(spec.variants)
            if missing:
                raise ValueError(f"{path}: claim '{c.claim}' names unknown variant(s) {sorted(missing)}; "
                                 f"variants: {list(spec.variants)}")
        return spec

    def check_sources(self, path: Path | str) -> None:
        for variant, how in self.variants.items():
            if not isinstance(how, Derived):
                continue
            source = self.variants.get(how.source)
            if source is None or isinstance(source, Derived):
                trained = [v for v, o in self.variants.items() if not isinstance(o, Derived)]
                raise ValueError(f"{path}: variant '{variant}' starts from '{how.source}', which is not a train.py "
                                 f"variant of this study; choose one of {trained}")

    def trained_variants(self) -> list[str]:
        return [v for v, o in self.variants.items() if not isinstance(o, Derived)]

    def run_order(self) -> list[str]:
        """Trained variants first (in file order), then the variants derived from them."""
        return self.trained_variants() + [v for v in self.variants if v not in self.trained_variants()]

    def recorded_metrics(self) -> list[str]:
        """Every metric runs.csv keeps: the reported ones and those the claims compare (baselines included)."""
        curve = self.curve.metrics if self.curve else []
        return sorted(set(self.metrics) | {c.metric for c in self.claims} | {c.baseline_metric for c in self.claims}
                      | set(curve))

    def check_runnable(self) -> None:
        """Every variant must be a train.py command; analysis studies (variants ``[]``) run their reproduce.py."""
        empty = [v for v, o in self.variants.items() if not isinstance(o, Derived) and not o]
        if empty and not self.analysis:
            raise ValueError(f"study {self.name}: variant(s) {empty} are not train.py runs (an evaluation or analysis "
                             f"of one model), so the seeds runner cannot run them; use "
                             f"experiments/{self.name}/reproduce.py")

    def overrides(self, variant: str, budget: str, seed: int, extra: list[str]) -> list[str]:
        if budget not in self.budgets and self.budgets:
            raise ValueError(f"study {self.name} has no budget '{budget}'; choose one of {list(self.budgets)}")
        b = self.budgets.get(budget, Budget())
        how = self.variants[variant]
        if isinstance(how, Derived) and how.mode == "eval":
            return [*how.overrides, *extra]
        steps = [f"trainer.max_steps={b.steps}", f"trainer.val_check_interval={b.steps}"] if b.steps else []
        if isinstance(how, Derived):  # fine-tune: the source's command, then the variant's own overrides win
            return [*self.overrides(how.source, budget, seed, []), *how.overrides, *extra]
        return [*self.base, *how, *steps, *b.overrides, f"seed={seed}", *extra]

    def command_record(self, variant: str, budget: str, seed: int, extra: list[str]) -> list[str]:
        """What the manifest records for a variant: its train.py or eval.py arguments (without run paths)."""
        how = self.variants[variant]
        if isinstance(how, Derived):
            return [f"{how.mode}_of={how.source}", *self.overrides(variant, budget, seed, extra)]
        return [*self.base, *how]


def available() -> list[str]:
    return sorted(p.parent.name for p in EXPERIMENTS.glob("*/study.yaml"))


# -- running ---------------------------------------------------------------------------------------------------------
def _cached(run_dir: Path, overrides: list[str]) -> bool:
    """A finished run made by exactly this command (the resolved config is then the one recorded in the run)."""
    record = run_dir / "command.json"
    if not ((run_dir / "results.json").is_file() and record.is_file()):
        return False
    saved = json.loads(record.read_text())
    return (saved.get("overrides"), saved.get("code")) == (overrides, _code_version())


def _recorded_cpu(run_dir: Path) -> float:
    """The CPU seconds a cached run took when it ran (NaN for runs recorded before that was kept), so a study
    rerun from its cache reports what its results cost, not the seconds this invocation spent."""
    return float(json.loads((run_dir / "command.json").read_text()).get("cpu_seconds", math.nan))


def _record(run_dir: Path, overrides: list[str], cpu: float) -> None:
    (run_dir / "command.json").write_text(json.dumps({"overrides": overrides, "code": _code_version(),
                                                      "cpu_seconds": cpu}))


def _code_version() -> str:
    """The commit plus a hash of uncommitted changes to code and configs: a cached run is reused only if both match."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD", "--", "rope_lab", "configs", "train.py"], cwd=ROOT,
                              capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    import hashlib

    return head + ("+" + hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else "")


def _fresh(run_dir: Path) -> None:
    if run_dir.exists():  # another command (or an unfinished one) used this dir: start it afresh
        import shutil

        shutil.rmtree(run_dir)


# threads per child run when several run at once (``run_study(jobs=N)`` sets it; None = torch's default)
_CHILD_THREADS: int | None = None


def _run_child(argv: list[str]) -> tuple[str, float]:
    """Run ``python <argv>`` in the repo root; (stdout, CPU seconds of this child alone: children running at the same
    time in other threads are not counted, which the process-wide ``os.times`` would do)."""
    env = {**os.environ, "ROPE_LAB_KERNEL": os.environ.get("ROPE_LAB_KERNEL", "eager")}
    if _CHILD_THREADS is not None:
        env.update(OMP_NUM_THREADS=str(_CHILD_THREADS), MKL_NUM_THREADS=str(_CHILD_THREADS))
    child = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    stdout = child.stdout.read()
    child.stdout.close()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    sys.stdout.write(stdout)
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, child.args, output=stdout)
    return stdout, usage.ru_utime + usage.ru_stime


def _source_record(source_run: Path) -> str:
    """A derived run is redone whenever its source run was retrained (another command or code)."""
    return f"source={json.loads((source_run / 'command.json').read_text())}"


def train_one(run_dir: Path, overrides: list[str], record: list[str] | None = None) -> tuple[dict, float]:
    """Train one (variant, seed) into ``run_dir`` unless the same command (``record``: what identifies it, default
    the overrides) already finished there; returns (metrics, CPU seconds spent now)."""
    record = overrides if record is None else record
    if _cached(run_dir, record):
        return json.loads((run_dir / "results.json").read_text())["metrics"], _recorded_cpu(run_dir)
    _fresh(run_dir)
    _, cpu = _run_child(["train.py", *overrides, f"hydra.run.dir={run_dir}"])
    _record(run_dir, record, cpu)
    return json.loads((run_dir / "results.json").read_text())["metrics"], cpu


def eval_one(run_dir: Path, source_run: Path, overrides: list[str]) -> tuple[dict, float]:
    """eval.py on ``source_run``'s last checkpoint with ``overrides``; its results.json is kept in ``run_dir``
    (cached like a training run, and redone whenever the source run was retrained)."""
    record = overrides + [_source_record(source_run)]
    if _cached(run_dir, record):
        return json.loads((run_dir / "results.json").read_text())["metrics"], _recorded_cpu(run_dir)
    _fresh(run_dir)
    stdout, cpu = _run_child(["eval.py", f"ckpt_path={source_run / 'checkpoints' / 'last.ckpt'}", *overrides])
    written = [line.split("results:", 1)[1].strip() for line in stdout.splitlines() if line.startswith("results:")]
    if not written:
        raise RuntimeError(f"eval.py on {source_run} did not report its results.json")
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(Path(written[-1]).read_text())
    _record(run_dir, record, cpu)
    return json.loads((run_dir / "results.json").read_text())["metrics"], cpu


def run_variant(spec: "StudySpec", variant: str, budget: str, seed: int, extra: list[str], root: Path
                ) -> tuple[dict, float]:
    """One (variant, seed): a train.py run, or an eval / fine-tune of its source variant's run at this seed."""
    run_dir = root / _slug(variant) / f"seed{seed}"
    overrides = spec.overrides(variant, budget, seed, extra)
    how = spec.variants[variant]
    if not isinstance(how, Derived):
        return train_one(run_dir, overrides)
    source_run = root / _slug(how.source) / f"seed{seed}"
    if how.mode == "eval":
        return eval_one(run_dir, source_run, overrides)
    overrides = [*overrides, f"init_ckpt={source_run / 'checkpoints' / 'last.ckpt'}"]
    return train_one(run_dir, overrides, record=overrides + [_source_record(source_run)])


def analysis_function(spec: StudySpec):
    import importlib

    module, _, name = (spec.analysis or "").partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"study {spec.name}: analysis '{spec.analysis}' is not an importable module:function "
                         f"({err})") from err


def analyse_one(spec: StudySpec, seed: int, budget: str, path: Path) -> tuple[dict, float]:
    """One seed of an analysis study, cached in ``path`` (JSON) for the same code; (outputs, CPU seconds)."""
    record = {"analysis": spec.analysis, "seed": seed, "budget": budget, "code": _code_version()}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("record") == record:
            return saved["outputs"], float(saved.get("cpu_seconds", math.nan))
    before = os.times()
    outputs = analysis_function(spec)(seed=seed, budget=budget)
    after = os.times()  # this process and the train.py children the analysis ran (it runs alone: no other children)
    spent = sum(getattr(after, f) - getattr(before, f) for f in ("user", "system", "children_user", "children_system"))
    missing = set(spec.variants) - set(outputs)
    if missing:
        raise ValueError(f"study {spec.name}: {spec.analysis} returned no variant(s) {sorted(missing)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"record": record, "outputs": outputs, "cpu_seconds": spent}, indent=1))
    return outputs, spent


def _run_all(spec: StudySpec, seeds: int, budget: str, extra: list[str], root: Path, jobs: int
             ) -> dict[tuple[int, str], tuple[dict, float]]:
    """Every (seed, variant) run, ``jobs`` at a time: the trained variants seed-major, and each derived run as soon
    as its source at the same seed has finished (not after every seed's source: with 3 seeds and 2 jobs the last
    base model would otherwise train alone). With jobs > 1 each child gets cores // jobs threads: small models use
    two threads poorly, two one-thread runs at once finish ~1.4x sooner on two cores (measured on the LM studies)."""
    global _CHILD_THREADS
    waiting = [(seed, v) for seed in range(seeds) for v in spec.run_order() if isinstance(spec.variants[v], Derived)]
    done: dict[tuple[int, str], tuple[dict, float]] = {}
    bar = progress(None, desc=f"{spec.name} ({budget})", total=seeds * len(spec.variants))
    _CHILD_THREADS = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            running = {}

            def submit(key: tuple[int, str]) -> None:
                running[pool.submit(run_variant, spec, key[1], budget, key[0], extra, root)] = key

            for seed in range(seeds):
                for variant in spec.trained_variants():
                    submit((seed, variant))
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    seed, variant = running.pop(future)
                    done[seed, variant] = future.result()
                    bar.set_postfix_str(f"{variant} seed {seed}")
                    bar.update()
                    for key in [k for k in waiting if k[0] == seed and spec.variants[k[1]].source == variant]:
                        waiting.remove(key)
                        submit(key)
    finally:
        _CHILD_THREADS = None
        bar.close()
    return done


def run_study(spec: StudySpec, seeds: int, budget: str, extra: list[str], out: Path, command: str, jobs: int = 1
              ) -> Path:
    """Train every variant at seeds 0..seeds-1 (cached runs reused; ``jobs`` train.py/eval.py runs at a time), or
    run an analysis study's function per seed, and write runs.csv, manifest.json, summary."""
    spec.check_runnable()
    if budget not in spec.budgets and spec.budgets:
        raise ValueError(f"study {spec.name} has no budget '{budget}'; choose one of {list(spec.budgets)}")
    if spec.analysis and extra:
        raise ValueError(f"study {spec.name} is an analysis ({spec.analysis}): it takes no train.py overrides; "
                         f"got {extra}")
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: give at least 1 (runs at the same time)")
    start, cpu, rows = time.time(), 0.0, []
    runs_root = EXPERIMENTS / spec.name / "runs" / "seeds" / budget
    if spec.analysis:
        for seed in progress(range(seeds), desc=f"{spec.name} ({budget})"):
            outputs, spent = analyse_one(spec, seed, budget, runs_root / f"analysis_seed{seed}.json")
            cpu += spent
            rows += [{"variant": v, "seed": seed, "metric": m, "value": outputs[v].get(m, math.nan)}
                     for v in spec.variants for m in spec.recorded_metrics()]
    else:
        done = _run_all(spec, seeds, budget, extra, runs_root, jobs)
        for seed in range(seeds):  # seed-major rows, whatever order the runs finished in
            for variant in spec.run_order():
                metrics, spent = done[seed, variant]
                cpu += spent
                rows += [{"variant": variant, "seed": seed, "metric": m, "value": metrics.get(m, math.nan)}
                         for m in spec.recorded_metrics()]
    out.mkdir(parents=True, exist_ok=True)
    write_runs(out / RUNS_CSV, rows)
    b = spec.budgets.get(budget, Budget())
    manifest = {"study": spec.name, "commit": _code_version(), "command": command, "seeds": list(range(seeds)),
                "budget": {"name": budget, "steps": b.steps, "overrides": b.overrides, "extra": extra},
                "jobs": jobs,
                "variants": ({v: [spec.analysis] for v in spec.variants} if spec.analysis else
                             {v: spec.command_record(v, budget, 0, extra) for v in spec.variants}),
                # wall: this invocation; CPU: every run the results come from, cached ones at what they took
                # (None when a cached run predates that record)
                "wall_minutes": round((time.time() - start) / 60, 2),
                "cpu_minutes": None if math.isnan(cpu) else round(cpu / 60, 2),
                "machine": _machine(), "torch": _torch_version(), "date": time.strftime("%Y-%m-%d %H:%M"),
                "legacy": False}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    write_summary(spec, out)
    return out


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _machine() -> str:
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - the manifest records what it can
        gpu = None
    return f"{platform.machine()} {os.cpu_count()} CPUs" + (f", {gpu}" if gpu else "")


def _torch_version() -> str:
    import torch

    return torch.__version__


# -- results files ---------------------------------------------------------------------------------------------------
def write_runs(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["variant", "seed", "metric", "value"])
        writer.writeheader()
        writer.writerows(rows)


def read_runs(path: Path) -> dict[str, dict[str, dict[int, float]]]:
    """runs.csv -> {metric: {variant: {seed: value}}}."""
    table: dict[str, dict[str, dict[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            value = float(row["value"]) if row["value"] not in ("", "nan") else math.nan
            table.setdefault(row["metric"], {}).setdefault(row["variant"], {})[int(row["seed"])] = value
    return table


@dataclass
class ClaimResult:
    claim: Claim
    better: stats.Interval
    than: stats.Interval
    difference: stats.Interval  # signed so that positive supports the claim
    noise_floor: float
    verdict: str
    agreeing: tuple[int, int] = (0, 0)  # (seeds whose own difference supports the claim, seeds compared)


def evaluate_claims(spec: StudySpec, runs: dict) -> list[ClaimResult]:
    out = []
    for c in spec.claims:
        per_variant = runs.get(c.metric, {})
        a, b = per_variant.get(c.better, {}), runs.get(c.baseline_metric, {}).get(c.than, {})
        sign = -1.0 if c.lower_is_better else 1.0
        signed_a, signed_b = ({s: sign * v for s, v in x.items()} for x in (a, b))
        diff = stats.paired_difference(signed_a, signed_b)
        # the rerun noise of the two compared series only: a variant that collapses erratically elsewhere in the
        # study (PI at 1x in yarn) must not widen the floor of an unrelated comparison
        floor = stats.pooled_sd([list(a.values()), list(b.values())])
        out.append(ClaimResult(c, stats.mean_interval(list(a.values())), stats.mean_interval(list(b.values())),
                               diff, floor, stats.verdict(diff, floor), stats.seeds_agreeing(signed_a, signed_b)))
    return out


def budget_text(manifest: dict) -> str:
    b = manifest.get("budget", {})
    if b.get("text"):
        return b["text"]
    steps = f"{b['steps']} steps" if b.get("steps") else b.get("name", "")
    time_text = f", {manifest['cpu_minutes']:.0f} CPU-min" if manifest.get("cpu_minutes") else ""
    return f"{steps}{time_text}".strip(", ") or "?"


def _than_cell(r: ClaimResult) -> str:
    return f"{r.than} ({r.claim.than_metric})" if r.claim.than_metric else str(r.than)


def write_summary(spec: StudySpec, folder: Path) -> dict:
    """summary.md + summary.json of one study from its runs.csv and manifest.json."""
    runs = read_runs(folder / RUNS_CSV)
    manifest = json.loads((folder / MANIFEST).read_text())
    metrics = [m for m in spec.metrics  # a metric the budget did not produce (another length) is left out
               if any(math.isfinite(v) for per_seed in runs.get(m, {}).values() for v in per_seed.values())]
    variant_rows = [[v] + [str(stats.mean_interval(list(runs[m].get(v, {}).values()))) for m in metrics]
                    for v in spec.variants]
    claims = evaluate_claims(spec, runs)
    claim_rows = [[r.claim.claim, r.claim.metric, str(r.better), _than_cell(r), str(r.difference),
                   f"{r.noise_floor:.3g}" if math.isfinite(r.noise_floor) else "n/a", f"{r.agreeing[0]}/{r.agreeing[1]}",
                   r.verdict] for r in claims]
    seeds = len(manifest.get("seeds", []))
    lines = [f"# {spec.title}: results", "",
             f"Generated by `python scripts/reproduce.py {spec.name} ...` from {RUNS_CSV} and {MANIFEST}; "
             f"{seeds} seed(s), budget {budget_text(manifest)}, {manifest.get('machine', '?')}, "
             f"commit {manifest.get('commit', '?')[:12]}. Mean [95% interval: wider of t and bootstrap].", "",
             markdown_table(variant_rows, ["variant", *metrics]), "",
             "Claims (difference = paired, signed so that > 0 supports the claim; verdict by its interval; an effect "
             "below the noise floor, the across-seed SD pooled over the two compared series, is inconclusive):", "",
             markdown_table(claim_rows, ["claim", "metric", "better", "than", "difference", "noise floor",
                                         "seeds agreeing", "verdict"]), ""]
    pooled = pooled_rates(spec, runs, manifest)
    if pooled:
        lines += ["Rates pooled over seeds (successes / trials, Wilson 95% interval; the verdicts above use the "
                  "across-seed intervals):", "",
                  markdown_table([[p["variant"], p["metric"], f"{p['successes']}/{p['trials']}", f"{p['rate']:.3g}",
                                   f"[{p['wilson'][0]:.3g}, {p['wilson'][1]:.3g}]"] for p in pooled],
                                 ["variant", "metric", "successes / trials", "rate", "Wilson 95%"]), ""]
    if spec.curve and write_curve(spec, runs, folder / CURVE_PNG):
        lines += [f"![{spec.curve.ylabel} vs {spec.curve.xlabel}]({CURVE_PNG})", ""]
    (folder / SUMMARY_MD).write_text("\n".join(lines))
    summary = {"study": spec.name, "seeds": seeds, "budget": budget_text(manifest),
               "claims": [{"claim": r.claim.claim, "paper": r.claim.paper, "metric": r.claim.metric,
                           "than_metric": r.claim.than_metric,
                           "better": _jsonable(r.better), "than": _jsonable(r.than),
                           "difference": _jsonable(r.difference), "noise_floor": r.noise_floor,
                           "seeds_agreeing": list(r.agreeing), "verdict": r.verdict} for r in claims],
               **({"pooled_rates": pooled} if pooled else {})}
    (folder / SUMMARY_JSON).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def pooled_rates(spec: StudySpec, runs: dict, manifest: dict) -> list[dict]:
    """Per variant and rate metric of the budget's ``trials``: successes summed over seeds (rate x trials, which must
    be a whole number: a wrong trial count is refused) with the Wilson interval of the pooled rate."""
    budget = spec.budgets.get(manifest.get("budget", {}).get("name", ""), Budget())
    pooled = []
    for metric, n in budget.trials.items():
        for variant in spec.variants:
            values = [v for v in runs.get(metric, {}).get(variant, {}).values() if math.isfinite(v)]
            if not values:
                continue
            counts = [v * n for v in values]
            if any(abs(c - round(c)) > 1e-3 for c in counts):
                raise ValueError(f"study {spec.name}: {metric} of '{variant}' ({values}) is not a count out of "
                                 f"{n} trials; fix budgets.{manifest['budget']['name']}.trials")
            k, total = sum(round(c) for c in counts), n * len(values)
            pooled.append({"variant": variant, "metric": metric, "successes": k, "trials": total, "rate": k / total,
                           "wilson": list(stats.wilson(k, total))})
    return pooled


def write_curve(spec: StudySpec, runs: dict, path: Path) -> Path | None:
    """``spec.curve`` per variant: mean over seeds and its 95% band; None when runs.csv holds none of its metrics."""
    from rope_lab.analysis.plots import plot_curve

    c = spec.curve
    series: dict[str, dict[float, float]] = {}
    bands: dict[str, dict[float, tuple[float, float]]] = {}
    for variant in spec.variants:
        for x, metric in zip(c.at, c.metrics):
            interval = stats.mean_interval(list(runs.get(metric, {}).get(variant, {}).values()))
            if math.isfinite(interval.mean):
                series.setdefault(variant, {})[x] = interval.mean
                bands.setdefault(variant, {})[x] = c.clip(interval.low, interval.high)
    if not series:
        return None
    seeds = max(len(per_seed) for per_seed in runs.get(c.metrics[0], {}).values()) if c.metrics[0] in runs else 0
    return plot_curve(series, path, c.xlabel, c.ylabel, logy=c.logy, logx=c.logx, vline=c.vline,
                      vline_label=c.vline_label, bands=bands, title=f"{spec.name}: mean over {seeds} seed(s), 95% band")


# -- single-seed results committed before the seeds runner ---------------------------------------------------------
def read_table(path: Path, index: int = 0) -> list[dict[str, str]]:
    """Rows of a CSV file, or of the ``index``-th markdown table of a .md file, as {column: cell}."""
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    tables, current = [], None
    for line in path.read_text().splitlines() + [""]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.strip().startswith("|") else None
        if cells is None:
            current = None
            continue
        if current is None:
            current = {"header": cells, "rows": []}
            tables.append(current)
        elif not set("".join(cells)) <= set("-: "):
            current["rows"].append(dict(zip(current["header"], cells)))
    if index >= len(tables):
        raise ValueError(f"{path} has {len(tables)} markdown tables; legacy.table={index} does not exist")
    return tables[index]["rows"]


def _number(cell: str) -> float:
    """'0.7345', '7.7', '5.960', '**4.80**', '0.46 (1 seed)' -> float; '-' or '' -> NaN."""
    text = cell.replace("*", "").strip().split(" ")[0].rstrip("%")
    try:
        return float(text)
    except ValueError:
        return math.nan


def import_legacy(spec: StudySpec, out: Path) -> Path:
    """runs.csv + manifest.json (``legacy: true``, one seed) from the study's committed single-seed results.

    ``legacy`` in study.yaml: ``file`` (next to the README; .csv or .md), ``table`` (index of the markdown table),
    ``variants`` ({our variant: {column: value, ...}} selecting its row), ``metrics`` ({our metric: column}),
    ``seed``, ``budget`` (text), ``command``, ``date``."""
    legacy = spec.legacy or {}
    if not legacy:
        raise ValueError(f"study {spec.name} has no legacy block in study.yaml")
    table = read_table(EXPERIMENTS / spec.name / legacy["file"], int(legacy.get("table", 0)))
    rows = []
    for variant in spec.variants:
        if variant not in legacy["variants"]:  # a variant the single-seed run did not have (added by a redesign)
            continue
        select = legacy["variants"][variant]
        matches = [r for r in table if all(r.get(k, "").strip() == str(v) for k, v in select.items())]
        if len(matches) != 1:
            raise ValueError(f"{spec.name}: legacy row {select} of variant {variant} matches {len(matches)} rows")
        for metric, column in legacy["metrics"].items():
            rows.append({"variant": variant, "seed": int(legacy.get("seed", 0)), "metric": metric,
                         "value": _number(matches[0][column])})
    out.mkdir(parents=True, exist_ok=True)
    write_runs(out / RUNS_CSV, rows)
    manifest = {"study": spec.name, "legacy": True, "source": legacy["file"], "seeds": [int(legacy.get("seed", 0))],
                "budget": {"name": "legacy", "steps": None, "text": legacy.get("budget", "")},
                "command": legacy.get("command", ""), "date": legacy.get("date", ""),
                "commit": legacy.get("commit", ""), "machine": legacy.get("machine", "2-core x86 CPU")}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    write_summary(spec, out)
    return out


def _jsonable(interval: stats.Interval) -> dict:
    return {k: getattr(interval, k) for k in ("mean", "low", "high", "n", "std")}
