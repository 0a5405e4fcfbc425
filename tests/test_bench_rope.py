"""scripts/bench_rope.py's bookkeeping (issue 6): the page regimes it pins and the per-row target verdicts its
tables end with. The timings themselves are ``make bench``'s job, never a test's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_rope.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("rope_lab_bench_rope", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_regime_environment_replaces_every_malloc_setting(bench, monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")  # left over from another regime: must not leak into 'fresh'
    monkeypatch.setenv("KEEP_ME", "1")
    env = bench.regime_env("fresh")
    assert env["MALLOC_MMAP_THRESHOLD_"] == "65536" and "MALLOC_MMAP_MAX_" not in env and env["KEEP_ME"] == "1"
    assert "THP_MEM_ALLOC_ENABLE" not in env and bench.regime_env("fresh-thp")["THP_MEM_ALLOC_ENABLE"] == "1"
    for key in bench.MALLOC_VARS:
        monkeypatch.delenv(key, raising=False)
    for key, value in bench.REGIMES["reuse"].items():
        monkeypatch.setenv(key, value)
    assert bench.in_regime("reuse") and not bench.in_regime("fresh") and not bench.in_regime("fresh-thp")


def _row(mode, auto_ms, clone_ms, copy_ms, library_ms):
    methods = {"ours auto": {"ms": auto_ms, "x_clone": auto_ms / clone_ms, "x_copy": auto_ms / copy_ms},
               "transformers": {"ms": library_ms}}
    return {"mode": mode, "methods": methods}


@pytest.mark.parametrize(("row", "device", "verdict"), [
    (_row("forward", 1.1, 1.0, 1.0, 5.0), "cpu", "yes"),
    (_row("forward", 1.3, 1.0, 1.0, 5.0), "cpu", "no (1.30 > 1.20)"),
    (_row("forward+backward", 1.3, 1.0, 1.0, 5.0), "cpu", "yes"),   # 1.5x allowed with the backward
    (_row("forward", 1.1, 1.0, 1.0, 1.0), "cpu", "no (a library is faster)"),
    (_row("forward", 1.3, 5.0, 1.0, 5.0), "cuda", "yes"),            # GPU: vs the copy, >= 70% of bandwidth
    (_row("forward", 1.5, 5.0, 1.0, 5.0), "cuda", "no (1.50 > 1.43)"),
])
def test_target_verdict(bench, row, device, verdict):
    assert bench.target_verdict(row, device) == verdict


@pytest.mark.parametrize("argv", [["--regime", "all", "--scale", "0.5"], ["--scale", "0.5", "--regime=all"],
                                  ["--scale", "0.5"]])
def test_each_regime_process_gets_the_command_line_without_the_regime(bench, argv):
    assert bench.without_regime(argv) == ["--scale", "0.5"]


@pytest.mark.parametrize("n", [2, 3, 7, 8])
def test_every_round_times_every_method_once_and_predecessors_change(bench, n):
    names = [f"m{i}" for i in range(n)]
    orders = bench.round_orders(names, bench.ROUNDS)
    assert all(sorted(order) == names for order in orders)
    predecessors = {name: {o[o.index(name) - 1] for o in orders if o.index(name) > 0} for name in names}
    if n > 2:  # with two methods each can only follow the other
        assert all(len(p) >= 2 for p in predecessors.values()), predecessors


def test_ratios_pair_each_round_with_its_own_floor(bench):
    floor = [1.0, 2.0, 1.0, 3.0, 1.0]            # the VM slowed down in rounds 2 and 4
    method = [1.1, 2.2, 1.1, 3.3, 0.9]           # 1.1x in every round but one lucky last round
    assert bench.paired_ratio(method, floor) == pytest.approx(1.1)  # min/min would say 0.9
    with pytest.raises(ValueError):
        bench.paired_ratio([1.0], [1.0, 2.0])


def test_cuda_table_shows_gpu_time_and_the_launched_call(bench):
    """On a GPU the ratio columns are GPU (CUDA-graph) times and one column shows ``ours auto`` as launched from
    Python against the copy launched the same way, so host overhead is visible next to the kernel's bandwidth."""
    row = _row("forward", 1.3, 5.0, 1.0, 5.0) | {"shape": "3D", "dtype": "bfloat16", "angle_err_ours": 1e-7,
                                                  "copy_ms": 1.0, "clone_ms": 1.2,
                                                  "angle_err_naive_fp32": 1e-4}
    row["methods"]["transformers"]["x_copy"] = 5.0
    row["launched_ms"] = {"copy": 1.0, "clone": 1.2, "ours auto": 1.6, "transformers": 5.0}
    result = {"date": "d", "machine": "m", "threads": 1, "device": "cuda", "thp": "-", "note": "n", "rows": [row]}
    table = bench.markdown(result).splitlines()
    header, cells = table[2].split(" | "), table[4].split(" | ")
    assert header[-4].startswith("ours auto launched from Python")
    assert cells[-4] == "1.60 (1.6 ms)" and cells[-1].rstrip(" |") == "yes"
