"""Surrogate-gradient backbone (Fang et al. 2021): PLIF neurons (learnable time constant per
layer, hard reset with the reset spike detached), ATan surrogate by default, SEW-ResNets with
batch-norm, a non-spiking classifier; cross-entropy on the output averaged over T."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from cbpqsnn.methods.base import SpikingClassifier
from cbpqsnn.nets.feedforward import build_spiking_net
from cbpqsnn.nets.sew import zero_init_residuals
from cbpqsnn.neurons import ParametricLIF, make_surrogate


class SGClassifier(SpikingClassifier):
    """``scores = mean_t FC(x)[t]``; ``loss = cross_entropy(scores, y)``.

    Method args: ``tau0`` (2), ``learnable_tau`` (true: PLIF; false: plain LIF), ``v_threshold``
    (1), ``v_reset`` (0), ``surrogate`` (``atan``; also ``fast_sigmoid``, ``sigmoid``,
    ``rectangular``) and ``surrogate_args`` (e.g. ``{alpha: 2}``). Model option
    ``zero_init_residual`` (false): start every SEW block as the identity (its last BN weight 0).
    """

    MODEL_OPTIONS: ClassVar[dict[str, Any]] = {
        "bias": False, "dropout": 0.0, "batch_norm": True, "classifier_bias": True,
        "zero_init_residual": False}

    def __init__(self, model: Mapping[str, Any], in_shape: Sequence[int], num_classes: int, T: int,
                 *, tau0: float = 2.0, learnable_tau: bool = True, v_threshold: float = 1.0,
                 v_reset: float = 0.0, surrogate: str = "atan",
                 surrogate_args: Mapping[str, float] | None = None, **base: Any) -> None:
        super().__init__(model, in_shape, num_classes, T, **base)

    def build_net(self, model: dict[str, Any], in_shape: tuple[int, ...], num_classes: int,
                  T: int) -> nn.Module:
        hp = self.hparams
        surrogate = make_surrogate(hp.surrogate, **dict(hp.surrogate_args or {}))
        neuron = partial(ParametricLIF, tau0=hp.tau0, learnable=hp.learnable_tau,
                         v_threshold=hp.v_threshold, v_reset=hp.v_reset, surrogate=surrogate)
        net = build_spiking_net(model["spec"], in_shape, num_classes, neuron, T,
                                bias=model["bias"], dropout=model["dropout"], spiking_output=False,
                                batch_norm=model["batch_norm"], classifier_bias=model["classifier_bias"])
        if model["zero_init_residual"] and zero_init_residuals(net) == 0:
            raise ValueError(f"model.zero_init_residual needs SEW blocks in the spec {model['spec']}")
        return net

    def readout(self, out: Tensor) -> Tensor:
        return out.mean(0)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(self.readout(out), target)
