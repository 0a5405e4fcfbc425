"""How the x86 kernel (rope_lab/pe/kernels/cpu_rope.py) is chosen and built, without compiling anything: the
instruction sets come from the CPU's flags and a cap, fp32 on an AVX2-only CPU never builds the extension, the
build directory is keyed by content (not by checkout), a killed build's lock file does not block later ones, and
the one-time build says so on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from filelock import FileLock, Timeout

from rope_lab.pe.kernels import cpu_rope

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def avx512_cpu(monkeypatch):
    """A CPU with both instruction sets, whatever this one has."""
    monkeypatch.setattr(cpu_rope, "_detected_isas", lambda: ("avx512", "avx2"))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")


def test_cap_by_environment_variable(monkeypatch, avx512_cpu):
    assert cpu_rope.isas() == ["avx512", "avx2"]
    monkeypatch.setenv(cpu_rope.ISA_ENV, "avx2")
    assert cpu_rope.isas() == ["avx2"]
    assert cpu_rope.best_isa(torch.float32, "half") is None
    assert cpu_rope.best_isa(torch.bfloat16, "interleaved") == "avx2"
    monkeypatch.setenv(cpu_rope.ISA_ENV, "none")
    assert cpu_rope.isas() == []


def test_torch_capability_caps_the_kernel_too(monkeypatch, avx512_cpu):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert cpu_rope.isas() == ["avx2"]
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert cpu_rope.isas() == []
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setenv(cpu_rope.ISA_ENV, "avx512")  # asking for more than the CPU has gives what it has
    monkeypatch.setattr(cpu_rope, "_detected_isas", lambda: ("avx2",))
    assert cpu_rope.isas() == ["avx2"]


def test_a_bad_cap_names_the_value_and_the_choices(monkeypatch):
    monkeypatch.setenv(cpu_rope.ISA_ENV, "sse9")
    with pytest.raises(ValueError, match=r"'sse9'.*\['avx512', 'avx2', 'none'\]"):
        cpu_rope.isas()


@pytest.mark.skipif("avx2" not in cpu_rope._detected_isas(), reason="needs an x86 CPU with AVX2")
def test_aten_cpu_capability_runs_this_machine_as_avx2_only():
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    env.pop(cpu_rope.ISA_ENV, None)
    out = subprocess.run([sys.executable, "-c", "from rope_lab.pe.kernels import cpu_rope; print(cpu_rope.isas())"],
                         env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "['avx2']"


def test_fp32_on_an_avx2_only_cpu_never_builds_the_extension(monkeypatch):
    monkeypatch.setattr(cpu_rope, "_detected_isas", lambda: ("avx2",))
    built = []
    monkeypatch.setattr(cpu_rope, "extension", lambda: built.append(1))
    q = torch.randn(2, 4, 600, 64)  # large enough for auto to pick the compiled backend
    cos, sin = torch.randn(1, 1, 600, 32), torch.randn(1, 1, 600, 32)
    for layout in ("half", "interleaved"):
        assert not cpu_rope.applies(q, q, (cos, sin), layout)
    assert not cpu_rope.applies(q.bfloat16(), q.bfloat16(), (cos, sin), "half")
    assert built == []
    cpu_rope.applies(q.bfloat16(), q.bfloat16(), (cos, sin), "interleaved")  # covered: now it is built
    assert built == [1]


def test_rotating_with_no_covering_isa_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cpu_rope, "_detected_isas", lambda: ("avx2",))
    x = torch.randn(1, 1, 2, 8)
    with pytest.raises(ValueError, match="no allowed instruction set.*float32 half"):
        cpu_rope.rotate(x, torch.ones(1, 1, 2, 4), torch.zeros(1, 1, 2, 4), "half")


def test_build_dir_is_keyed_by_content_not_by_checkout(monkeypatch, tmp_path):
    here = cpu_rope.build_dir()
    other_checkout = tmp_path / "clone" / "cpu_rope.cpp"
    other_checkout.parent.mkdir()
    other_checkout.write_bytes(cpu_rope.SOURCE.read_bytes())
    monkeypatch.setattr(cpu_rope, "SOURCE", other_checkout)
    assert cpu_rope.build_dir() == here
    other_checkout.write_bytes(cpu_rope.SOURCE.read_bytes() + b"\n// edited\n")
    assert cpu_rope.build_dir() != here


def test_build_takes_a_lock_clears_a_killed_builds_lock_and_says_so(monkeypatch, tmp_path, capsys):
    where = tmp_path / "rope_lab_cpu_rope_test"
    where.mkdir()
    (where / "lock").write_text("")  # torch's baton left by a build that was killed
    seen = {}

    def fake_load(name, sources, build_directory, **kwargs):
        seen["stale lock gone"] = not (Path(build_directory) / "lock").exists()
        seen["source copied"] = Path(sources[0]).read_bytes() == cpu_rope.SOURCE.read_bytes()
        seen["source in build dir"] = Path(sources[0]).parent == where
        result = {}
        other = threading.Thread(target=lambda: result.setdefault("held", _is_held(str(where) + ".lock")))
        other.start()
        other.join()
        seen["lock held while building"] = result["held"]
        return "module"

    monkeypatch.setattr("torch.utils.cpp_extension.load", fake_load)
    assert cpu_rope._load_locked(where) == "module"
    assert all(seen.values()), seen
    assert "compiling the CPU rotary kernel" in capsys.readouterr().err
    (where / "built.so").write_bytes(b"")
    cpu_rope._load_locked(where)  # already built: silent
    assert capsys.readouterr().err == ""


def _is_held(path: str) -> bool:
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False
