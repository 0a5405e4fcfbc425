"""LightningModule of the long-context LM task: next-byte loss, val/ppl@L per length, passkey accuracy."""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from rope_lab.optim import OptimConfig
from rope_lab.tasks.base import TaskModule
from rope_lab.tasks.lm.metrics import passkey_exact_match, perplexity, token_nll, window_nll
from rope_lab.tasks.lm.positions import lm_positions


class LMModule(TaskModule):
    def __init__(self, model, optim: OptimConfig, total_steps: int, val_names: list[str],
                 position_offset: int = 0, train_length: int | None = None, answer_weight: float = 1.0) -> None:
        super().__init__(model, optim, total_steps)
        self.answer_weight = answer_weight
        self.val_names, self.position_offset = val_names, position_offset
        #: the loader whose perplexity is ``val/ppl`` (checkpoint selection, sweep headline): the training length
        ppl_names = [n for n in val_names if n.startswith("ppl@")]
        self.headline = f"ppl@{train_length}" if train_length is not None else (ppl_names or [None])[0]
        if ppl_names and self.headline not in ppl_names:
            raise ValueError(f"val/ppl is read at the training length {train_length}, which no loader evaluates "
                             f"({ppl_names})")
        self.nll = torch.nn.ModuleList(MeanMetric() for _ in val_names)
        self.acc = torch.nn.ModuleList(MeanMetric() for _ in val_names)

    def _nll(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = batch["tokens"]
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        segment = batch.get("segment")
        segment = None if segment is None else segment[:, :-1]
        logits = self.model(inputs, lm_positions(inputs, self.position_offset, segment))
        return token_nll(logits, targets), logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        nll, _ = self._nll(batch)
        mask = batch["loss_mask"].float()
        if "answer" in batch and self.answer_weight != 1.0:  # key digits of training passkey samples
            mask = mask * (1.0 + (self.answer_weight - 1.0) * batch["answer"].float())
        loss = (nll * mask).sum() / mask.sum()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", loss.detach().exp())
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        nll, logits = self._nll(batch)
        if "answer_mask" in batch:  # passkey: exact match of every key digit
            correct = passkey_exact_match(logits, batch["tokens"][:, 1:], batch["answer_mask"])
            self.acc[dataloader_idx].update(correct.float())
        else:
            self.nll[dataloader_idx].update(window_nll(nll))

    def on_validation_epoch_end(self) -> None:
        headline, pk_means, by_length = None, [], {}
        for i, name in enumerate(self.val_names):
            if name.startswith("ppl@"):
                value = self.nll[i].compute()
                self.log(f"val/{name}", perplexity(value), sync_dist=True)
                self.log(f"val/loss@{name[4:]}", value, sync_dist=True)
                headline = value if name == self.headline else headline
                self.nll[i].reset()
            else:
                value = self.acc[i].compute()
                self.log(f"val/{name}", value, sync_dist=True)
                pk_means.append(value)
                by_length.setdefault(name.split("/depth=")[0], []).append(value)
                self.acc[i].reset()
        if headline is not None:  # the training-length ppl is the checkpoint-selection metric
            self.log("val/ppl", perplexity(headline), prog_bar=True, sync_dist=True)
        if pk_means:
            self.log("val/passkey_acc", torch.stack(pk_means).mean(), sync_dist=True)
        for name, values in by_length.items():  # every depth has passkey_samples samples: the mean is the rate
            self.log(f"val/{name}", torch.stack(values).mean(), sync_dist=True)

    @staticmethod
    def perplexity(mean_nll: float) -> float:
        return perplexity(mean_nll)
