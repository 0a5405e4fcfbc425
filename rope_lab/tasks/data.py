"""What every task's data side shares: the once-only setup of a DataModule and the rank-sharded, resumable training
loader (every task's training samples are a deterministic function of (seed, sample index), so a loader that
remembers how many samples were consumed resumes exactly, per rank, under DDP)."""

from __future__ import annotations

from abc import abstractmethod

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class TaskDataModule(L.LightningDataModule):
    """A DataModule whose data are read once, by :meth:`load`, however often Lightning (and rope_lab's evaluation
    and analysis code) calls ``setup``. ``source`` says where the data came from (None until loaded)."""

    def __init__(self, seed: int = 0, total_steps: int | None = None) -> None:
        super().__init__()
        self.seed, self.total_steps = seed, total_steps
        self.source: str | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.source is None:
            self.source = self.load()

    @abstractmethod
    def load(self) -> str:
        """Read the data; return a description of where they came from (logged and stored with the results)."""


def distributed_rank_and_world() -> tuple[int, int]:
    """(global rank, world size) of this process: torch.distributed's when initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def train_samples(datamodule: L.LightningDataModule, batch_size: int) -> int:
    """How many training samples a step-sized datamodule builds: ``datamodule.total_steps`` micro-batches
    (max_steps x accumulate_grad_batches, see rope_lab.run.build) of ``batch_size`` for every rank, so that each
    rank's shard of a :class:`ResumableLoader` still covers the whole run. Every task's train loader uses this."""
    trainer = getattr(datamodule, "trainer", None)
    world = int(trainer.world_size) if trainer is not None else distributed_rank_and_world()[1]
    return int(datamodule.total_steps) * int(batch_size) * world


class ResumableSampler(DistributedSampler):
    """Sequential indices from the global position ``start``, sharded by rank: rank r of W takes start + r,
    start + r + W, ... (single process: start, start + 1, ...). The k-th batches of all ranks together are the
    indices a single process with a W times larger batch would read, so every step's global batch is a fixed
    function of (seed, step). A DistributedSampler subclass, so Lightning never replaces it under DDP/FSDP.

    ``rank``/``world_size`` default to torch.distributed's (0 and 1 when it is not initialised)."""

    def __init__(self, size: int, rank: int | None = None, world_size: int | None = None) -> None:
        dist_rank, dist_world = distributed_rank_and_world()
        world = dist_world if world_size is None else int(world_size)
        rank = dist_rank if rank is None else int(rank)
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world size {world}")
        # no DistributedSampler.__init__ (it needs a dataset and shuffles); set the attributes it documents
        self.size, self.start = size, 0
        self.num_replicas, self.rank = world, rank
        self.shuffle, self.drop_last, self.seed, self.epoch = False, True, 0, 0
        self.num_samples = size // world  # equal shards: the few samples past the last full round are never read
        self.total_size = self.num_samples * world

    def __iter__(self):
        return iter(range(self.start + self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        # this rank's whole epoch, also when resumed mid-way: Lightning counts a resumed epoch's batches from its
        # start, and a shorter length made it end the epoch early and replay the resumed batches
        return self.num_samples


class ResumableLoader(DataLoader):
    """A DataLoader with ``state_dict``/``load_state_dict``; Lightning saves it in checkpoints (fit loop).

    The state is the global number of samples consumed (all ranks together, equal shards), the same on every rank:
    Lightning saves rank 0's and every rank loads it, so each rank resumes at its own exact position."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int = 0, rank: int | None = None,
                 world_size: int | None = None, collate_fn=None) -> None:
        self.resumable_sampler = ResumableSampler(len(dataset), rank, world_size)
        super().__init__(dataset, batch_size=batch_size, sampler=self.resumable_sampler, num_workers=num_workers,
                         drop_last=True, collate_fn=collate_fn)
        self.consumed = 0

    def __iter__(self):
        self.consumed = self.resumable_sampler.start
        for batch in super().__iter__():
            self.consumed += self.batch_size * self.resumable_sampler.num_replicas
            yield batch
        self.resumable_sampler.start = 0  # the next epoch starts from the beginning

    def state_dict(self) -> dict:
        return {"consumed": self.consumed, "world_size": self.resumable_sampler.num_replicas}

    def load_state_dict(self, state: dict) -> None:
        world = self.resumable_sampler.num_replicas
        saved = int(state.get("world_size", 1))
        if saved != world:
            raise ValueError(f"the checkpoint's training loader ran on {saved} process(es), this run on {world}; "
                             f"resume with the same trainer.devices x trainer.num_nodes")
        self.resumable_sampler.start = int(state["consumed"])
