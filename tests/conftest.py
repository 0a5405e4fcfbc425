"""Shared test helpers: small geometries, every registered variant, and a temporary data cache."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")

import rope_lab  # noqa: F401, I001 -- first: importing rope_lab sets OMP_WAIT_POLICY before torch loads OpenMP
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_rope_run(tmp_path_factory):
    """The run dir of a tiny pe=rope language-model run (2 optimizer steps), trained once per test session and
    shared by the eval.py tests (evaluations write their own folders under <run>/eval)."""
    from tests.test_train import train

    tmp = tmp_path_factory.mktemp("tiny_rope_run")
    train(tmp, "trainer.max_steps=2", "trainer.val_check_interval=2")
    (run_dir,) = (tmp / "outputs" / "lm_longctx" / "rope").glob("*/*")
    return run_dir
