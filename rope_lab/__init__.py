"""rope_lab: a research framework for Rotary Position Embedding and its descendants."""

import os

# OpenMP threads that spin while waiting make a 2-core machine ~15x slower as soon as a second process
# (a sweep job, a data worker, a test) competes for a core; passive waiting costs little when the machine is idle.
# Must be set before torch initialises OpenMP, so rope_lab sets it on import unless the user chose a policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
