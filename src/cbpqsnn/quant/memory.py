"""Weight memory of a quantized model (docs/algorithm.md section 8).

``bits = sum_l n_l * bits(F) + 32 * (#quantized layers, one scale each)
         + 32 * (every other parameter: first/last layer, biases, BN, neuron params)``.
The FP32 reference stores every parameter in 32 bits. Buffers (BN running statistics) are not
weights and are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class WeightMemory:
    quantized_weights: int  # number of weights stored as level indices
    fp32_values: int  # other trainable values stored in FP32 (scales not included)
    num_scales: int
    bits_per_weight: int

    @property
    def bits(self) -> int:
        return self.quantized_weights * self.bits_per_weight + 32 * (self.fp32_values + self.num_scales)

    @property
    def bytes(self) -> int:
        return math.ceil(self.bits / 8)

    @property
    def fp32_bytes(self) -> int:
        return 4 * (self.quantized_weights + self.fp32_values)

    @property
    def ratio(self) -> float:
        return self.bytes / self.fp32_bytes


def weight_memory(model: nn.Module, quantized_layers: Iterable[str], bits: int) -> WeightMemory:
    """Count the memory of ``model`` where the weights of ``quantized_layers`` use ``bits`` each.

    Works on a plain module and on one with CBP parametrizations registered (the latent weight
    is counted once, as the layer's weight).
    """
    names = set(quantized_layers)
    modules = dict(model.named_modules())
    missing = names - modules.keys()
    if missing:
        raise ValueError(f"quantized layers not found in the model: {sorted(missing)}")
    quantized = sum(modules[n].weight.numel() for n in names)
    quantized_params = {id(_latent_weight(modules[n])) for n in names}
    other = sum(p.numel() for p in model.parameters() if id(p) not in quantized_params)
    return WeightMemory(quantized, other, len(names), bits)


def _latent_weight(module: nn.Module) -> nn.Parameter:
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        return parametrizations["weight"].original
    return module.weight
