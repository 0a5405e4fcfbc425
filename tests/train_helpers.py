"""Callbacks used by the end-to-end tests through Hydra overrides (``+callbacks.stop._target_=...``)."""

import lightning as L


class InterruptAtStep(L.Callback):
    """Simulates a killed job: a KeyboardInterrupt after ``step`` optimizer steps (Lightning exits with 1)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


class SigintAtStep(L.Callback):
    """A real Ctrl+C: the process sends itself SIGINT after ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGINT)


class KillDuringSaveAtStep(L.Callback):
    """kill -9 in the middle of writing a checkpoint: from ``step`` on, the next save writes a few bytes and the
    process kills itself."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            import os
            import signal

            import torch

            def half_then_die(obj, f, *args, **kwargs):
                f.write(b"\0" * 4096)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)

            torch.save = half_then_die


class PoisonWeightsAtStep(L.Callback):
    """Diverges on purpose: every weight becomes NaN after ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            import torch

            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))
