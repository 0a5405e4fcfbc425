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

            if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # launched as a background job: SIGINT ignored
                signal.signal(signal.SIGINT, signal.default_int_handler)
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


class RecordSampleHashes(L.Callback):
    """Writes ``<out_dir>/samples_rank<r>.txt``: one line per training sample this rank read, its step and a hash
    of its tokens (the DDP test checks that ranks read disjoint shards)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import hashlib
        from pathlib import Path

        rows = (batch["tokens"] if "tokens" in batch else batch["images"]) if isinstance(batch, dict) else batch[0]
        path = Path(self.out_dir) / f"samples_rank{trainer.global_rank}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            for row in rows:
                digest = hashlib.sha1(row.detach().cpu().numpy().tobytes()).hexdigest()
                f.write(f"{trainer.global_step} {digest}\n")
