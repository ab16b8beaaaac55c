"""Surrogate-gradient backbone (Fang et al. 2021): PLIF neurons (learnable time constant per
layer, hard reset with the reset spike detached), ATan surrogate by default, SEW-ResNets with
batch-norm, a non-spiking classifier; cross-entropy on the output averaged over T."""

from __future__ import annotations

from functools import partial
from typing import Any

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

    def build_net(self, model: dict[str, Any], in_shape: tuple[int, ...], num_classes: int,
                  T: int) -> nn.Module:
        hp = self.hparams
        surrogate = make_surrogate(hp.get("surrogate", "atan"), **dict(hp.get("surrogate_args") or {}))
        neuron = partial(ParametricLIF, tau0=hp.get("tau0", 2.0),
                         learnable=hp.get("learnable_tau", True),
                         v_threshold=hp.get("v_threshold", 1.0), v_reset=hp.get("v_reset", 0.0),
                         surrogate=surrogate)
        net = build_spiking_net(model["spec"], in_shape, num_classes, neuron, T,
                                bias=model.get("bias", False), dropout=model.get("dropout", 0.0),
                                spiking_output=False, batch_norm=model.get("batch_norm", True),
                                classifier_bias=model.get("classifier_bias", True))
        if model.get("zero_init_residual", False) and zero_init_residuals(net) == 0:
            raise ValueError(f"model.zero_init_residual needs SEW blocks in the spec {model['spec']}")
        return net

    def readout(self, out: Tensor) -> Tensor:
        return out.mean(0)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(self.readout(out), target)
