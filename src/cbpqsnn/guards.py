"""Small Lightning callbacks shared by every stage."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from cbpqsnn.neurons import MultiStepNeuron


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


class FiringRateMonitor(L.Callback):
    """The firing rate of every spiking neuron layer during training, and a warning when a layer
    stays silent.

    On every ``trainer.log_every_n_steps``-th training batch (from the first; a forward hook on
    that batch only) it measures each neuron layer's rate, spikes / (neurons x T) on the batch
    (``MultiStepNeuron.spike_train``), and logs the epoch's mean of those measurements as
    ``rate/<layer>`` (CSV, W&B). When a layer has fired no spike on any of the first ``patience``
    measured batches it warns once per stage, naming the layers: a layer whose input is silent
    gets no weight gradient, so nothing above a silent layer learns (the STBP paper rows at the
    authors' init start silent from their fourth layer: docs/paper-rows.md)."""

    def __init__(self, stage: str, patience: int = 10) -> None:
        self.stage = stage
        self.patience = patience
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._rates: dict[str, torch.Tensor] = {}
        self._fired: dict[str, torch.Tensor] = {}
        self._measured = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx % max(1, trainer.log_every_n_steps):
            return
        for name, module in pl_module.named_modules():
            if isinstance(module, MultiStepNeuron):
                self._hooks.append(module.register_forward_hook(self._record(name)))

    def _record(self, name: str):
        def hook(module: MultiStepNeuron, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            self._rates[name] = module.spike_train(out.detach()).mean()
        return hook

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if not self._rates:
            return
        for name, rate in self._rates.items():
            pl_module.log(f"rate/{name}", rate, on_step=False, on_epoch=True)
            fired = rate > 0
            self._fired[name] = self._fired[name] | fired if name in self._fired else fired
        self._rates.clear()
        self._measured += 1
        if self._measured == self.patience:
            silent = [name for name, fired in self._fired.items() if not bool(fired)]
            if silent:
                every = max(1, trainer.log_every_n_steps)
                rank_zero_warn(
                    f"{self.stage} stage: neuron layer(s) {', '.join(silent)} fired no spike on "
                    f"any of the first {self.patience} measured training batches (one in every "
                    f"{every}). The layers above a silent layer get no weight gradient and do not "
                    "learn. The logged firing rates (rate/<layer>) show whether it wakes up; if "
                    "it does not, the init is too small for the threshold (e.g. "
                    "model.init=kaiming_normal for STBP) or the learning rate drove the membranes "
                    "out of the surrogate's window.")
