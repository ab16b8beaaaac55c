"""STBP backbone (Wu et al. 2018/2019): iterative LIF with the reset folded into the decay,
rectangular surrogate, firing-rate readout of a spiking output layer, MSE loss on one-hot labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from cbpqsnn.methods.base import SpikingClassifier
from cbpqsnn.nets.feedforward import build_spiking_net
from cbpqsnn.neurons import STBPLIF, Rectangular


class STBPClassifier(SpikingClassifier):
    """STBP: ``rate = mean_t o_out[t]``; ``loss = mean((rate - onehot(y))^2)``.

    Method args: ``v_threshold`` (0.5), ``decay`` (0.25 CIFAR-10 / 0.8 CIFAR-100),
    ``surrogate_width`` ``a`` of ``do/du = (1/a) 1[|u - V_th| < a/2]`` (1.0).
    """

    MODEL_OPTIONS: ClassVar[dict[str, Any]] = {"bias": True, "dropout": 0.0}

    def __init__(self, model: Mapping[str, Any], in_shape: Sequence[int], num_classes: int, T: int,
                 *, v_threshold: float = 0.5, decay: float = 0.25, surrogate_width: float = 1.0,
                 **base: Any) -> None:
        super().__init__(model, in_shape, num_classes, T, **base)

    def build_net(self, model: dict[str, Any], in_shape: tuple[int, ...], num_classes: int,
                  T: int) -> nn.Module:
        hp = self.hparams
        neuron = partial(STBPLIF, v_threshold=hp.v_threshold, decay=hp.decay,
                         surrogate=Rectangular(hp.surrogate_width))
        return build_spiking_net(model["spec"], in_shape, num_classes, neuron, T,
                                 bias=model["bias"], dropout=model["dropout"], spiking_output=True)

    def readout(self, out: Tensor) -> Tensor:
        return out.mean(0)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        rate = self.readout(out)
        return F.mse_loss(rate, F.one_hot(target, self.num_classes).to(rate.dtype))
