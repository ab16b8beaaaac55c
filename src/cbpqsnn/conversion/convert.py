"""ANN -> SNN conversion with calibration (Li et al. 2021), as one procedure:

1. fold batch-norm into the convs;
2. per-layer thresholds over a few training batches (momentum): the maximum activation for the
   ``none`` level, the clip-floor grid search for ``light`` / ``advanced`` (``THRESHOLD_RULE``, as
   the reference ``main_calibration_quantize_cbp.py`` does: ``mse = False if calib == 'none'``);
3. switch to the spiking mode and calibrate on one batch: ``none`` -> ``light`` (bias correction)
   -> ``advanced`` (also potential correction), evaluating each level asked for;
4. keep the chosen level and rescale every threshold to 1 (the SNN that CBP fine-tunes).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from cbpqsnn.conversion.calibrate import (
    analog_means,
    bias_correction,
    potential_correction,
    rescale_to_unit_thresholds,
)
from cbpqsnn.conversion.fold import fold_batch_norms
from cbpqsnn.conversion.network import ConvertibleNet
from cbpqsnn.conversion.threshold import ThresholdGrid, ThresholdTracker

LEVELS = ("none", "light", "advanced")
THRESHOLD_RULE = {"none": "max", "light": "mse", "advanced": "mse"}  # per calibration level


@dataclass(frozen=True)
class ConversionSettings:
    """What :func:`convert` does: ``calibration`` is the level kept for fine-tuning; every level
    in ``report_levels`` is evaluated on the way (levels build on each other)."""

    calibration: str = "light"
    report_levels: Sequence[str] = LEVELS
    grid: ThresholdGrid = field(default_factory=ThresholdGrid)
    momentum: float = 0.9
    dead_threshold: float = 1.0

    def __post_init__(self) -> None:
        for level in (self.calibration, *self.report_levels):
            if level not in LEVELS:
                raise ValueError(f"unknown calibration level {level!r}; valid choices: {list(LEVELS)}")

    @property
    def levels_to_run(self) -> tuple[str, ...]:
        last = max(LEVELS.index(level) for level in (self.calibration, *self.report_levels))
        return LEVELS[: last + 1]


@dataclass
class ConversionResult:
    thresholds: list[float]  # per IF layer, before the rescaling to 1
    accuracy: dict[str, float]  # per evaluated calibration level
    batchnorms_folded: int


@torch.no_grad()
def set_thresholds(net: ConvertibleNet, batches: Sequence[Tensor],
                   settings: ConversionSettings, rule: str = "mse") -> list[float]:
    """Threshold of every IF neuron from the ANN's ReLU outputs on ``batches`` (at ``net.T``) by
    ``rule`` (``mse`` | ``max``)."""
    trackers = [ThresholdTracker(net.T, settings.grid, settings.momentum, settings.dead_threshold, rule)
                for _ in net.neurons]
    for x in batches:
        activations: list[Tensor] = []
        net.analog_forward(x, activations)
        for tracker, activation in zip(trackers, activations, strict=True):
            tracker.update(activation)
    for neuron, tracker in zip(net.neurons, trackers, strict=True):
        neuron.threshold.copy_(tracker.threshold)
    return [float(n.threshold) for n in net.neurons]


CALIBRATIONS: dict[str, Callable[[ConvertibleNet, Tensor, list[Tensor]], None]] = {
    "light": bias_correction,
    "advanced": potential_correction,
}


@torch.no_grad()
def convert(net: ConvertibleNet, batches: Sequence[Tensor], settings: ConversionSettings,
            evaluate: Callable[[], float] | None = None) -> ConversionResult:
    """Convert the ANN ``net`` in place into the calibrated SNN with unit thresholds.

    ``batches``: training inputs on the net's device (all for the thresholds, the first for the
    calibration); ``evaluate()``: the accuracy of ``net`` as it stands (called in the spiking
    mode for each level of ``settings.report_levels``).
    """
    if net.is_spiking:
        raise ValueError("the network is already converted")
    if not batches:
        raise ValueError("conversion needs at least one training batch")
    was_training = net.training
    net.eval()
    folded = fold_batch_norms(net)
    ann_means = analog_means(net, batches[0])
    net.set_spiking(True)
    accuracy: dict[str, float] = {}
    kept: dict[str, Tensor] | None = None
    rule = None
    for level in settings.levels_to_run:
        if THRESHOLD_RULE[level] != rule:  # levels before hold no correction yet: thresholds only
            rule = THRESHOLD_RULE[level]
            set_thresholds(net, batches, settings, rule)
        if level == settings.calibration:
            thresholds = [float(n.threshold) for n in net.neurons]
        if level in CALIBRATIONS:
            CALIBRATIONS[level](net, batches[0], ann_means)
        if evaluate is not None and level in settings.report_levels:
            accuracy[level] = float(evaluate())
        if level == settings.calibration:
            kept = copy.deepcopy(net.state_dict())
    assert kept is not None
    net.load_state_dict(kept)
    rescale_to_unit_thresholds(net)
    net.train(was_training)
    return ConversionResult(thresholds=thresholds, accuracy=accuracy, batchnorms_folded=folded)
