"""Multi-agent scenes cut from real aircraft tracks (rope_lab.data.aircraft), split by time.

A scene is anchored at grid step t (the "current" step): it holds every aircraft with a valid point at t, its
past ``past_steps`` points (t-P+1..t, current included) and its future ``future_steps`` points (t+1..t+F).
- Prediction targets: agents whose whole future is valid and whose past has >= ``min_past_steps`` valid points.
  Other agents are context only (they attend and are attended to, but never enter the loss or the metrics).
  An agent whose track ends before the horizon is counted as ``horizon_beyond_track``.
- Scenes with fewer than ``min_agents`` agents (``too_few_agents``) or with no target (``no_targets``) are
  skipped and counted; missing (NaN) points are masked and counted (``nan_points``), never zero-filled into
  the loss. Scenes with more than ``max_agents`` keep the agents nearest to the centroid (``agents_dropped``).
- Split by time per collection: the first ``split[0]`` of the timeline trains, the next ``split[1]``
  validates, the rest tests; a window (past + future) crossing a boundary is dropped, so no point is shared.
- Coordinates: the collection's metric frame shifted to the centroid of the scene's current positions.
Training draws scenes with a generator seeded by (seed, sample index): resumable like the LM task.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rope_lab.data.aircraft import load_tracks
from rope_lab.tasks.data import ResumableLoader, TaskDataModule, train_samples

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass
class TrajectoryConfig:
    collections: list[str] = field(default_factory=lambda: ["quickstart", "switzerland"])
    data_dir: str = "${paths.data_dir}"
    data_path: str | None = None  # a folder holding <collection>.json.gz (checked against the pinned sha256)
    interval_s: float = 10.0
    past_steps: int = 6
    future_steps: int = 12
    max_gap_s: float = 60.0
    min_agents: int = 2
    min_past_steps: int = 2
    max_agents: int = 64
    num_modes: int = 6
    miss_threshold_m: float = 2000.0
    horizons_s: list[float] = field(default_factory=lambda: [30.0, 60.0, 120.0])
    scale_m: float = 1000.0  # metres per model unit for per-agent inputs and regression targets
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    train_stride: int = 1
    eval_stride: int = 3
    max_eval_scenes: int = 400  # per split, evenly spaced (0: all)
    batch_size: int = 32
    num_workers: int = 0


def check_config(c: TrajectoryConfig) -> None:
    """Clear errors for settings that cannot work."""
    for key in ("past_steps", "future_steps", "num_modes", "min_agents", "min_past_steps", "max_agents",
                "batch_size", "train_stride", "eval_stride"):
        if getattr(c, key) <= 0:
            raise ValueError(f"task.{key} must be > 0, got {getattr(c, key)}")
    if c.min_past_steps > c.past_steps:
        raise ValueError(f"min_past_steps={c.min_past_steps} exceeds past_steps={c.past_steps}")
    if c.max_agents < c.min_agents:
        raise ValueError(f"max_agents={c.max_agents} is below min_agents={c.min_agents}")
    if len(c.split) != 3 or min(c.split) <= 0 or abs(sum(c.split) - 1) > 1e-6:
        raise ValueError(f"split must be three positive fractions (train, val, test) summing to 1, got {c.split}")
    horizon = c.future_steps * c.interval_s
    bad = [h for h in c.horizons_s if not 0 < h <= horizon or abs(h / c.interval_s - round(h / c.interval_s)) > 1e-6]
    if bad:
        raise ValueError(f"horizons_s {bad} must be multiples of interval_s={c.interval_s} in (0, {horizon}] "
                         f"(future_steps x interval_s)")


def cut_scenes(xyh: np.ndarray, c: TrajectoryConfig, stats: Counter) -> dict[str, list[dict]]:
    """(M, T, 3) tracks with NaN -> scenes per split (see the module docstring for every rule)."""
    p, f = c.past_steps, c.future_steps
    valid = np.isfinite(xyh).all(-1)
    total = xyh.shape[1]
    b1, b2 = int(total * c.split[0]), int(total * (c.split[0] + c.split[1]))
    bounds = {"train": (0, b1), "val": (b1, b2), "test": (b2, total)}
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for split, (lo, hi) in bounds.items():
        stride = c.train_stride if split == "train" else c.eval_stride
        for t in range(lo + p - 1, hi - f, stride):
            scene = _scene(xyh, valid, t, c, stats)
            if scene is not None:
                out[split].append(scene)
    return out


def _scene(xyh: np.ndarray, valid: np.ndarray, t: int, c: TrajectoryConfig, stats: Counter) -> dict | None:
    p, f = c.past_steps, c.future_steps
    agents = np.flatnonzero(valid[:, t])
    if len(agents) < c.min_agents:
        stats["too_few_agents"] += 1
        return None
    centroid = xyh[agents, t, :2].mean(0)
    if len(agents) > c.max_agents:
        dist = np.linalg.norm(xyh[agents, t, :2] - centroid, axis=-1)
        stats["agents_dropped"] += len(agents) - c.max_agents
        agents = agents[np.sort(np.argsort(dist)[: c.max_agents])]
        centroid = xyh[agents, t, :2].mean(0)
    past, past_ok = xyh[agents, t - p + 1 : t + 1], valid[agents, t - p + 1 : t + 1]
    future, future_ok = xyh[agents, t + 1 : t + f + 1, :2], valid[agents, t + 1 : t + f + 1]
    target = future_ok.all(1) & (past_ok.sum(1) >= c.min_past_steps)
    stats["nan_points"] += int((~past_ok).sum() + (~future_ok).sum())
    stats["horizon_beyond_track"] += int((~future_ok[:, -1]).sum())
    if not target.any():
        stats["no_targets"] += 1
        return None
    shift = np.array([centroid[0], centroid[1], 0.0])
    return {"past": np.where(past_ok[..., None], past - shift, 0.0).astype(np.float32), "past_mask": past_ok,
            "future": np.where(future_ok[..., None], future - shift[:2], 0.0).astype(np.float32),
            "future_mask": future_ok, "target": target}


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Pad agents to the largest scene of the batch; ``agent_mask`` marks real agents."""
    n = max(len(it["target"]) for it in items)
    out = {}
    for key in ("past", "past_mask", "future", "future_mask", "target"):
        arrs = [it[key] for it in items]
        pad = [np.zeros((n - len(a),) + a.shape[1:], dtype=a.dtype) for a in arrs]
        out[key] = torch.from_numpy(np.stack([np.concatenate((a, z)) for a, z in zip(arrs, pad)]))
    out["agent_mask"] = torch.from_numpy(np.stack([np.arange(n) < len(it["target"]) for it in items]))
    out["current"] = out["past"][:, :, -1]
    return out


class SceneList(Dataset):
    def __init__(self, scenes: list[dict]) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> dict:
        return self.scenes[i]


class TrainScenes(SceneList):
    """Item i: scene drawn by a generator seeded by (seed, i) -- the same stream on resume."""

    def __init__(self, scenes: list[dict], size: int, seed: int) -> None:
        super().__init__(scenes)
        self.size, self.seed = size, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        return self.scenes[int(np.random.default_rng([self.seed, i]).integers(len(self.scenes)))]


class TrajectoryDataModule(TaskDataModule):
    def __init__(self, cfg: TrajectoryConfig, seed: int, total_steps: int) -> None:
        super().__init__(seed, total_steps)
        check_config(cfg)
        self.cfg = cfg
        self.scenes: dict[str, list[dict]] | None = None
        self.stats: Counter = Counter()

    def load(self) -> str:
        c = self.cfg
        self.scenes = {s: [] for s in SPLITS}
        sources = []
        for name in c.collections:
            tracks, source = load_tracks(name, c.interval_s, c.max_gap_s, data_dir=c.data_dir, user_path=c.data_path)
            sources.append(f"{name}:{source}")
            for split, scenes in cut_scenes(tracks.xyh, c, self.stats).items():
                self.scenes[split] += scenes
        for split in ("val", "test"):
            self.scenes[split] = _evenly(self.scenes[split], c.max_eval_scenes)
        for split in SPLITS:
            if not self.scenes[split]:
                raise ValueError(f"no {split} scenes from {c.collections}: every window was skipped ({dict(self.stats)})")
        counts = {s: len(v) for s, v in self.scenes.items()}
        log.info("trajectory scenes %s; skipped/masked: %s", counts, dict(self.stats))
        return ", ".join(sources)

    def train_dataloader(self) -> DataLoader:
        ds = TrainScenes(self.scenes["train"], train_samples(self, self.cfg.batch_size), self.seed)
        return ResumableLoader(ds, self.cfg.batch_size, self.cfg.num_workers, collate_fn=collate)

    def val_names(self) -> list[str]:
        return ["val", "test"]

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(SceneList(self.scenes[s]), self.cfg.batch_size, collate_fn=collate) for s in ("val", "test")]


def _evenly(items: list, limit: int) -> list:
    if limit <= 0 or len(items) <= limit:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]
