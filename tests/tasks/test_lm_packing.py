"""End-to-end through train.py: packed documents with AnchorAttention's shared anchor (experiment=bf16/anchor's
training path: task.packing=true, task.anchor_token=0, pe=anchor, bf16 autocast) trains and writes results.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ["backbone.dim=32", "backbone.depth=1", "backbone.n_heads=2", "backbone.n_kv_heads=2", "backbone.mlp_hidden=64",
        "task.train_length=32", "task.batch_size=4", "task.eval_lengths=[32]", "task.eval_windows=2",
        "task.passkey_lengths=[128]", "task.passkey_depths=[0.5]", "task.passkey_samples=2",
        "trainer.enable_progress_bar=false"]


def test_packing_with_anchor_trains_end_to_end(tmp_path):
    cmd = [sys.executable, "train.py", "experiment=bf16/anchor", "debug=fast", "task.position_offset=64",
           f"paths.output_dir={tmp_path}/out", *TINY]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (path,) = list((tmp_path / "out").rglob("results.json"))
    out = json.loads(path.read_text())
    assert out["pe"] == "anchor" and out["task"] == "lm_longctx"
    assert all(v == v for v in out["metrics"].values()) and "val/ppl@32" in out["metrics"]
