"""SNN-Calibration backbone (Li et al., ICML 2021): an ANN (conv + ReLU, average pooling, analog
classifier) trained with cross-entropy, converted at the end of the FP32 stage into an SNN of
integrate-and-fire neurons (reset by subtraction, input shift ``V_th / 2T``), calibrated
(none / light / advanced), rescaled to unit thresholds and then fine-tuned as an SNN with BPTT
(IF soft reset, ATan surrogate), cross-entropy on the output summed over T."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cbpqsnn.conversion import (
    ConversionSettings,
    ConvertibleNet,
    ThresholdGrid,
    build_convertible_net,
    convert,
    set_simulation_length,
)
from cbpqsnn.methods.base import SpikingClassifier, check_stage
from cbpqsnn.neurons import IFNeuron, make_surrogate


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

    MODEL_OPTIONS: ClassVar[dict[str, Any]] = {
        "batch_norm": False, "conv_dropout": 0.0, "dropout": 0.0, "spiking_pool": False,
        "init": "torch"}

    def __init__(self, model: Mapping[str, Any], in_shape: Sequence[int], num_classes: int, T: int,
                 *, finetune_T: int | None = None, calibration: str = "light",
                 report_levels: Sequence[str] = (), threshold_batches: int = 5,
                 threshold_momentum: float = 0.9, threshold_grid_steps: int = 95,
                 threshold_grid_step: float = 0.01, dead_threshold: float = 1.0,
                 calibration_batch_size: int | None = None, eval_batches: int | None = None,
                 conversion_device: str = "auto", surrogate: str = "atan",
                 surrogate_args: Mapping[str, float] | None = None, input_shift: bool = True,
                 detach_reset: bool = False, **base: Any) -> None:
        super().__init__(model, in_shape, num_classes, T, **base)

    def build_net(self, model: dict[str, Any], in_shape: tuple[int, ...], num_classes: int,
                  T: int) -> nn.Module:
        hp = self.hparams
        surrogate = make_surrogate(hp.surrogate, **dict(hp.surrogate_args or {}))
        neuron = partial(IFNeuron, surrogate=surrogate, input_shift=hp.input_shift,
                         detach_reset=hp.detach_reset)
        self.settings = ConversionSettings(
            calibration=hp.calibration,
            report_levels=tuple(hp.report_levels or ()),
            grid=ThresholdGrid(int(hp.threshold_grid_steps), float(hp.threshold_grid_step)),
            momentum=float(hp.threshold_momentum),
            dead_threshold=float(hp.dead_threshold),
        )
        return build_convertible_net(model["spec"], in_shape, num_classes, T,
                                     batch_norm=model["batch_norm"],
                                     conv_dropout=model["conv_dropout"],
                                     dropout=model["dropout"], neuron=neuron,
                                     spiking_pool=model["spiking_pool"], init=model["init"])

    def readout(self, out: Tensor) -> Tensor:
        return out.sum(0)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(self.readout(out), target)

    # -- conversion at the end of the FP32 (ANN) stage -------------------------------------
    def prepare_stage(self, stage: str,
                      datamodule: L.LightningDataModule | None = None) -> dict[str, Any]:
        """``"pretrain"``: the ANN. ``"cbp"``: convert + calibrate the trained ANN into the SNN
        the CBP stage fine-tunes, at ``finetune_T``; returns the ANN accuracy, the converted
        SNN's accuracy per calibration level (percent, test set), the level kept, T and the
        thresholds found. A network loaded already converted is kept. Without a ``datamodule``
        only the structure changes (spiking mode at ``finetune_T``, thresholds untouched): what a
        cost measurement needs, not a calibrated network."""
        check_stage(stage)
        net: ConvertibleNet = self.net  # type: ignore[assignment]
        hp = self.hparams
        if stage == "pretrain":
            net.set_spiking(False)
            return {}
        if net.is_spiking:
            return {"calibration": "loaded converted", "T": net.T}
        if datamodule is None:
            net.set_spiking(True)
            net.T = int(hp.finetune_T or hp.T)
            return {"calibration": "uncalibrated", "T_finetune": net.T}
        net.T = int(hp.T)  # the configured T, not the one an ANN checkpoint was built with
        datamodule.setup("fit")
        self.to(_conversion_device(hp.conversion_device))
        was_training = self.training
        self.eval()
        eval_batches = hp.eval_batches
        ann_acc = self._test_accuracy(datamodule, eval_batches)
        batches = self._training_inputs(datamodule, int(hp.threshold_batches),
                                        hp.calibration_batch_size)
        result = convert(net, batches, self.settings,
                         evaluate=lambda: self._test_accuracy(datamodule, eval_batches))
        conversion_T = net.T
        set_simulation_length(net, int(hp.finetune_T or conversion_T))
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
