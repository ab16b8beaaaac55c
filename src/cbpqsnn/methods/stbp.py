"""STBP backbone (Wu et al. 2018/2019): iterative LIF with the reset folded into the decay,
rectangular surrogate, firing-rate readout of a spiking output layer, MSE loss on one-hot labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cbpqsnn.methods.base import SpikingClassifier
from cbpqsnn.nets.feedforward import build_spiking_net
from cbpqsnn.neurons import STBPLIF, Rectangular

# Weight inits of the STBP networks. ``torch``: PyTorch's default (uniform, variance 1/(3 fan_in)),
# what yoees/CBP-QSNN CBP-QSNN-STBP/model.py uses (no init code). In a deep net without
# normalization that init loses activity with depth: with spikes of rate r in, a layer's current has
# variance about r/3, and 7Conv3FC's ten neuron layers fire at 0.25, 0.05, 0.001, then 0
# (benchmarks/row_smoke.py). ``kaiming_normal``: variance 2/fan_in, i.e. about 2r, six times more,
# so every layer keeps firing; biases 0.
INITS = ("torch", "kaiming_normal")


class STBPClassifier(SpikingClassifier):
    """STBP: ``rate = mean_t o_out[t]``; ``loss = mean((rate - onehot(y))^2)``.

    Method args: ``v_threshold`` (0.5), ``decay`` (0.25 CIFAR-10 / 0.8 CIFAR-100),
    ``surrogate_width`` ``a`` of ``do/du = (1/a) 1[|u - V_th| < a/2]`` (1.0).

    Model option ``init``: ``torch`` (PyTorch's default, as the authors' code) or
    ``kaiming_normal`` (weights ``N(0, 2 / fan_in)``, biases 0; see :data:`INITS`).
    """

    MODEL_OPTIONS: ClassVar[dict[str, Any]] = {"bias": True, "dropout": 0.0, "init": "torch"}

    def __init__(self, model: Mapping[str, Any], in_shape: Sequence[int], num_classes: int, T: int,
                 *, v_threshold: float = 0.5, decay: float = 0.25, surrogate_width: float = 1.0,
                 **base: Any) -> None:
        super().__init__(model, in_shape, num_classes, T, **base)

    def build_net(self, model: dict[str, Any], in_shape: tuple[int, ...], num_classes: int,
                  T: int) -> nn.Module:
        hp = self.hparams
        neuron = partial(STBPLIF, v_threshold=hp.v_threshold, decay=hp.decay,
                         surrogate=Rectangular(hp.surrogate_width))
        if model["init"] not in INITS:
            raise ValueError(f"unknown model.init {model['init']!r}; valid choices: {list(INITS)}")
        net = build_spiking_net(model["spec"], in_shape, num_classes, neuron, T,
                                bias=model["bias"], dropout=model["dropout"], spiking_output=True)
        if model["init"] == "kaiming_normal":
            with torch.no_grad():
                for layer in net.modules():
                    if isinstance(layer, (nn.Conv2d, nn.Linear)):
                        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                        if layer.bias is not None:
                            layer.bias.zero_()
        return net

    def readout(self, out: Tensor) -> Tensor:
        return out.mean(0)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        rate = self.readout(out)
        return F.mse_loss(rate, F.one_hot(target, self.num_classes).to(rate.dtype))
