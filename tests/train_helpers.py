"""Callbacks used by the end-to-end tests through Hydra overrides (``+callbacks.stop._target_=...``)."""

import lightning as L


class InterruptAtStep(L.Callback):
    """Simulates a killed job: a KeyboardInterrupt after ``step`` optimizer steps (Lightning exits with 1)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt
