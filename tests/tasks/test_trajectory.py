"""task=trajectory: scene cutting and skip counts, time split, frames, metrics, WTA loss, a fast_dev_run."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from rope_lab.tasks.trajectory.datamodule import TrajectoryConfig, check_config, collate, cut_scenes
from rope_lab.tasks.trajectory.metrics import constant_velocity, min_ade_fde, wta_loss
from rope_lab.tasks.trajectory.positions import agent_features, to_global, to_local
from rope_lab.tasks.trajectory.task import TrajectoryTask

ROOT = Path(__file__).resolve().parents[2]


def _cfg(**kw):
    base = dict(past_steps=3, future_steps=4, horizons_s=[20.0, 40.0], interval_s=10.0, min_agents=2,
                min_past_steps=2, split=[0.5, 0.25, 0.25], eval_stride=1)
    return TrajectoryConfig(**{**base, **kw})


def _tracks(m=3, t=40):
    """Straight lines: agent a at (100 a + 50 t, 10 a), heading 0; agent 2 ends at step 15; one NaN."""
    steps = np.arange(t, dtype=float)
    xyh = np.stack([np.stack((100 * a + 50 * steps, np.full(t, 10.0 * a), np.zeros(t)), -1) for a in range(m)])
    xyh[2, 15:] = np.nan
    xyh[1, 5] = np.nan
    return xyh


def test_scenes_mask_nan_and_skip_short_tracks_with_counts():
    stats = Counter()
    scenes = cut_scenes(_tracks(), _cfg(), stats)
    train = scenes["train"]
    assert train and all(s["past"].shape[1:] == (3, 3) and s["future"].shape[1:] == (4, 2) for s in train)
    # agent 2's track ends at step 15: windows whose future crosses it keep it as context, never as a target
    ending = [s for s in train if len(s["target"]) == 3 and not s["target"][2]]
    assert ending and stats["horizon_beyond_track"] > 0
    assert stats["nan_points"] > 0
    for s in train:  # masked points are zeros in inputs only, and no target has a masked future point
        assert (s["future_mask"][s["target"]]).all()
        assert not np.isnan(s["past"]).any() and not np.isnan(s["future"]).any()


def test_scenes_with_too_few_agents_are_skipped_and_counted():
    stats = Counter()
    xyh = _tracks()
    xyh[1:, 25:] = np.nan  # only one agent left after step 25
    scenes = cut_scenes(xyh, _cfg(), stats)
    assert stats["too_few_agents"] > 0
    assert all(len(s["target"]) >= 2 for split in scenes.values() for s in split)


def test_time_split_has_no_shared_points():
    cfg = _cfg()
    xyh = _tracks()
    xyh[..., 2] = np.arange(xyh.shape[1])[None, :]  # encode the time step in the heading channel
    xyh[2, 20:] = np.nan
    xyh[1, 5] = np.nan
    scenes = cut_scenes(xyh, cfg, Counter())
    steps = {s: set() for s in scenes}
    for split, items in scenes.items():
        for it in items:
            steps[split] |= set(it["past"][..., 2][it["past_mask"]].astype(int).tolist())
    assert steps["train"] and steps["val"] and steps["test"]
    assert max(steps["train"]) < min(steps["val"]) and max(steps["val"]) < min(steps["test"])


def test_scenes_are_centred_not_rotated():
    scene = cut_scenes(_tracks(), _cfg(), Counter())["train"][0]
    current = scene["past"][:, -1]
    assert np.allclose(current[:, :2].mean(0), 0.0, atol=1e-3)
    assert np.allclose(current[:, 2], 0.0)  # headings untouched


@pytest.mark.parametrize("bad,match", [({"num_modes": 0}, "num_modes"), ({"future_steps": 0}, "future_steps"),
                                       ({"horizons_s": [50.0]}, "horizons_s"), ({"split": [0.5, 0.5]}, "split")])
def test_bad_config_is_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        check_config(_cfg(**bad))
    with pytest.raises(ValueError, match=match):
        TrajectoryTask(_cfg(**bad))


def test_local_frame_round_trip_and_features_are_frame_invariant():
    g = torch.Generator().manual_seed(0)
    current = torch.cat((torch.randn(2, 3, 2, generator=g) * 1000, torch.rand(2, 3, 1, generator=g) * 6), -1)
    pts = torch.randn(2, 3, 4, 2, generator=g) * 1000
    torch.testing.assert_close(to_global(to_local(pts, current), current), pts, rtol=1e-4, atol=1e-2)
    modes = torch.randn(2, 3, 5, 4, 2, generator=g)
    torch.testing.assert_close(to_global(modes, current)[:, :, 2], to_global(modes[:, :, 2], current))
    past = torch.cat((pts, torch.rand(2, 3, 4, 1, generator=g)), -1)
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    a = 0.8
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])

    def turn(x):
        return torch.cat((x[..., :2] @ rot.T + 500.0, x[..., 2:] + a), -1)

    torch.testing.assert_close(agent_features(turn(past), mask, turn(current), 1000.0),
                               agent_features(past, mask, current, 1000.0), rtol=1e-4, atol=1e-4)


def test_min_ade_fde_by_hand():
    gt = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]])  # (1, T=3, 2)
    pred = torch.stack((gt + torch.tensor([0.0, 1.0]), gt + torch.tensor([0.0, 3.0])), 1)  # modes off by 1 and 3
    pred[0, 1, 2] = gt[0, 2]  # mode 2 ends exactly on the truth
    ade, fde = min_ade_fde(pred, gt, 3)
    assert torch.allclose(ade, torch.tensor([1.0])) and torch.allclose(fde, torch.tensor([0.0]))
    ade2, fde2 = min_ade_fde(pred, gt, 2)
    assert torch.allclose(ade2, torch.tensor([1.0])) and torch.allclose(fde2, torch.tensor([1.0]))


def test_wta_regresses_only_the_winner_and_ignores_non_targets():
    gt = torch.zeros(1, 2, 3, 2)
    pred = torch.stack((torch.full((3, 2), 0.1), torch.full((3, 2), 5.0)))[None, None].repeat(1, 2, 1, 1, 1)
    pred[0, 1] = float("nan")  # a non-target agent must not reach the loss
    pred.requires_grad_(True)
    logits = torch.zeros(1, 2, 2, requires_grad=True)
    loss, reg, cls = wta_loss(pred, logits, gt, torch.tensor([[True, False]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.allclose(cls, torch.tensor(math.log(2)))
    assert pred.grad[0, 0, 1].abs().sum() == 0 and pred.grad[0, 0, 0].abs().sum() > 0


def test_constant_velocity_extrapolates_last_step():
    past = torch.tensor([[[[-2.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]]])
    cv = constant_velocity(past, torch.ones(1, 1, 3, dtype=torch.bool), 2)
    torch.testing.assert_close(cv, torch.tensor([[[[1.0, 0.0], [2.0, 0.0]]]]))


def test_collate_pads_with_agent_mask():
    scenes = cut_scenes(_tracks(), _cfg(), Counter())["train"]
    batch = collate([scenes[0], next(s for s in scenes if len(s["target"]) != len(scenes[0]["target"]))])
    assert batch["agent_mask"].sum(1).tolist() == [len(scenes[0]["target"]), batch["agent_mask"][1].sum().item()]
    assert not batch["target"][~batch["agent_mask"]].any()


@pytest.mark.slow
def test_train_fast_dev_run_on_real_tracks(tmp_path):
    """End to end through Hydra on the real quickstart tracks (skipped when the wheel cannot be fetched)."""
    from rope_lab.data.aircraft import collection_path
    from rope_lab.data.fetch import DataUnavailable

    try:
        collection_path("quickstart")
    except DataUnavailable as err:
        pytest.skip(f"aircraft data unavailable: {err}")
    cmd = [sys.executable, "train.py", "task=trajectory", "backbone=traj_transformer", "pe=drope_rope",
           "task.collections=[quickstart]", "trainer.fast_dev_run=true", "backbone.dim=32", "logger=default",
           f"hydra.run.dir={tmp_path}"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
