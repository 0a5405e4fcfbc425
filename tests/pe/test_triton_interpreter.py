"""The Triton kernel's arithmetic, checked without a GPU: Triton's interpreter runs it on CPU tensors (the CUDA
run of the same comparison is ``test_kernels.py``'s ``gpu`` tier)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")


def test_triton_kernel_in_interpreter_equals_eager_oracle():
    script = Path(__file__).with_name("triton_interpreter_check.py")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all cases match the eager oracle" in done.stdout
