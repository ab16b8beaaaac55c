"""Small Lightning callbacks shared by every stage."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss becomes NaN or infinite."""


class FiniteLossGuard(L.Callback):
    """Stops the run at the first non-finite training loss, naming the stage, epoch and batch."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not bool(torch.isfinite(loss).all()):
            raise NonFiniteLossError(
                f"{self.stage} stage, epoch {trainer.current_epoch}, batch {batch_idx}: the training "
                f"loss is {loss.item()}. Lower the learning rate or check the input data; no "
                "result was written for this run."
            )
