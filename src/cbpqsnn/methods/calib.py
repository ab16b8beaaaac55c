"""SNN-Calibration backbone (Li et al., ICML 2021): an ANN (conv + ReLU, average pooling, analog
classifier) trained with cross-entropy, converted at the end of the FP32 stage into an SNN of
integrate-and-fire neurons (reset by subtraction, input shift ``V_th / 2T``), calibrated
(none / light / advanced), rescaled to unit thresholds and then fine-tuned as an SNN with BPTT
(IF soft reset, ATan surrogate), cross-entropy on the output summed over T."""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cbpqsnn.conversion import (
    ConversionSettings,
    ConvertibleNet,
    IFNeuron,
    ThresholdGrid,
    build_convertible_net,
    convert,
    set_simulation_length,
)
from cbpqsnn.methods.base import SpikingClassifier
from cbpqsnn.neurons import make_surrogate


class CalibClassifier(SpikingClassifier):
    """``scores = sum_t out[t]`` (ANN mode: the logits, T = 1); ``loss = cross_entropy(scores, y)``.

    Method args: ``T`` (simulation length of the conversion, the calibration and the level
    accuracies; 32), ``finetune_T`` (simulation length of the FP32 SNN evaluation and of CBP
    fine-tuning; null: ``T``), ``calibration`` (``none`` | ``light`` | ``advanced``: the level
    fine-tuned), ``report_levels`` (levels whose accuracy goes to the summary),
    ``threshold_batches`` (training batches of the threshold search), ``threshold_momentum`` (0.9),
    ``threshold_grid_steps`` / ``threshold_grid_step`` (95 / 0.01: ``V = max_act (1 - step i)``),
    ``dead_threshold`` (threshold of a layer that never activates), ``calibration_batch_size``
    (training batch size of the search and calibration), ``eval_batches`` (test batches of the
    ANN / level accuracies; null: all), ``conversion_device`` (``auto``: CUDA if available),
    ``surrogate`` / ``surrogate_args`` (ATan, alpha 2), ``input_shift`` (true), ``detach_reset``
    (false).
    """

    def build_net(self, model: dict[str, Any], in_shape: tuple[int, ...], num_classes: int,
                  T: int) -> nn.Module:
        hp = self.hparams
        surrogate = make_surrogate(hp.get("surrogate", "atan"), **dict(hp.get("surrogate_args") or {}))
        neuron = partial(IFNeuron, surrogate=surrogate, input_shift=hp.get("input_shift", True),
                         detach_reset=hp.get("detach_reset", False))
        self.settings = ConversionSettings(
            calibration=hp.get("calibration", "light"),
            report_levels=tuple(hp.get("report_levels") or ()),
            grid=ThresholdGrid(int(hp.get("threshold_grid_steps", 95)),
                               float(hp.get("threshold_grid_step", 0.01))),
            momentum=float(hp.get("threshold_momentum", 0.9)),
            dead_threshold=float(hp.get("dead_threshold", 1.0)),
        )
        return build_convertible_net(model["spec"], in_shape, num_classes, T,
                                     batch_norm=model.get("batch_norm", False),
                                     conv_dropout=model.get("conv_dropout", 0.0),
                                     dropout=model.get("dropout", 0.0), neuron=neuron,
                                     spiking_pool=model.get("spiking_pool", False),
                                     init=model.get("init", "torch"))

    def readout(self, out: Tensor) -> Tensor:
        return out.sum(0)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(self.readout(out), target)

    # -- conversion at the end of the FP32 (ANN) stage -------------------------------------
    def on_pretraining_end(self, datamodule: L.LightningDataModule) -> dict[str, Any]:
        """Convert + calibrate the trained ANN into the SNN the CBP stage fine-tunes; returns the
        ANN accuracy, the converted SNN's accuracy per calibration level (percent, test set), the
        level kept, T and the thresholds found. A network loaded already converted is kept."""
        net: ConvertibleNet = self.net  # type: ignore[assignment]
        if net.is_spiking:
            return {"calibration": "loaded converted", "T": net.T}
        hp = self.hparams
        net.T = int(hp["T"])  # the configured T, not the one an ANN checkpoint was built with
        datamodule.setup("fit")
        self.to(_conversion_device(hp.get("conversion_device", "auto")))
        was_training = self.training
        self.eval()
        eval_batches = hp.get("eval_batches")
        ann_acc = self._test_accuracy(datamodule, eval_batches)
        batches = self._training_inputs(datamodule, int(hp.get("threshold_batches", 5)),
                                        hp.get("calibration_batch_size"))
        result = convert(net, batches, self.settings,
                         evaluate=lambda: self._test_accuracy(datamodule, eval_batches))
        conversion_T = net.T
        set_simulation_length(net, int(hp.get("finetune_T") or conversion_T))
        self.train(was_training)
        return {"ann_acc": ann_acc, "snn_acc": result.accuracy,
                "calibration": self.settings.calibration, "T": conversion_T,
                "T_finetune": net.T, "thresholds": result.thresholds}

    @torch.no_grad()
    def _test_accuracy(self, datamodule: L.LightningDataModule, batches: int | None) -> float:
        """Test accuracy (percent) of the module as it stands, on ``batches`` test batches."""
        correct, total = 0, 0
        for x, y in itertools.islice(datamodule.test_dataloader(), batches):
            x, y = x.to(self.device), y.to(self.device)
            correct += int((self(x).argmax(1) == y).sum())
            total += y.numel()
        return 100.0 * correct / max(total, 1)

    def _training_inputs(self, datamodule: L.LightningDataModule, count: int,
                         batch_size: int | None) -> list[Tensor]:
        """The first ``count`` training input batches (of ``batch_size`` if given)."""
        if count < 1:
            raise ValueError(f"threshold_batches must be >= 1, got {count}")
        saved = getattr(datamodule, "batch_size", None)
        if batch_size:
            datamodule.batch_size = int(batch_size)
        try:
            loader = datamodule.train_dataloader()
            return [x.to(self.device) for x, _ in itertools.islice(loader, count)]
        finally:
            if batch_size:
                datamodule.batch_size = saved


def _conversion_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
