"""rope_lab: a research framework for Rotary Position Embedding and its descendants."""

import os

# OpenMP threads that spin while waiting make a 2-core machine ~15x slower as soon as a second process
# (a sweep job, a data worker, a test) competes for a core; passive waiting costs little when the machine is idle.
# Must be set before torch initialises OpenMP, so rope_lab sets it on import unless the user chose a policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# TorchInductor's on-disk cache does not tell kernels compiled under a capped instruction set
# (ATEN_CPU_CAPABILITY=avx2 on an AVX-512 CPU) from uncapped ones: reusing them gave NaN logits (torch 2.14.1).
# A capped process gets a cache of its own unless the user chose one.
if os.environ.get("ATEN_CPU_CAPABILITY") and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    import getpass
    import tempfile

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(
        tempfile.gettempdir(), f"torchinductor_{getpass.getuser()}_{os.environ['ATEN_CPU_CAPABILITY'].lower()}")

__version__ = "0.1.0"
