"""The deployed view of a spiking network: the chain of stages the export targets (NIR, the integer
artifact) walk, in the order the network runs them.

- :class:`Synapse`: a conv / linear layer with the batch-norm that follows it (inference BN is a
  per-channel affine map, folded: ``y = s (W x) + b``);
- :class:`Neuron`, :class:`Pool`, :class:`Flatten`: one layer each; :class:`Trace`: TSSL-BP's PSP
  filter of the input;
- :class:`Branch` / :class:`Merge`: a SEW block's residual (ADD connect): the block's input is kept
  at ``Branch`` and added to the branch's output at ``Merge``.

Dropout is skipped (identity at inference). The networks are the project's
:class:`~cbpqsnn.nets.feedforward.SpikingNet` (STBP, surrogate gradient, TSSL-BP) and the
conversion's ``ConvertibleNet`` (spiking mode): both keep their layers in ``net.layers``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cbpqsnn.conversion.network import AvgPoolConv
from cbpqsnn.nets.sew import SEWBlock
from cbpqsnn.nets.tssl_layers import PSPInput, ScaledSumPool, TimeSharedDropout
from cbpqsnn.neurons import MultiStepNeuron, TSSLNeuron


@dataclass(frozen=True)
class Synapse:
    name: str
    layer: nn.Conv2d | nn.Linear
    norm: nn.BatchNorm2d | None = None

    def folded(self) -> tuple[Tensor, Tensor]:
        """Per output channel ``(s, b)`` (float64) with ``layer -> norm`` = ``s (W x) + b``."""
        out = self.layer.weight.shape[0]
        bias = self.layer.bias
        b = bias.detach().double() if bias is not None else torch.zeros(out, dtype=torch.float64)
        if self.norm is None:
            return torch.ones(out, dtype=torch.float64), b
        norm = self.norm
        if norm.running_mean is None or norm.running_var is None:
            raise NotImplementedError(f"{self.name}: batch-norm without running statistics")
        ones, zeros = torch.ones(out, dtype=torch.float64), torch.zeros(out, dtype=torch.float64)
        gamma = norm.weight.detach().double() if norm.weight is not None else ones
        beta = norm.bias.detach().double() if norm.bias is not None else zeros
        s = gamma / torch.sqrt(norm.running_var.double() + norm.eps)
        return s, beta + s * (b - norm.running_mean.double())


@dataclass(frozen=True)
class Neuron:
    name: str
    module: MultiStepNeuron


@dataclass(frozen=True)
class Pool:
    name: str
    module: nn.Module


@dataclass(frozen=True)
class Flatten:
    name: str
    module: nn.Flatten


@dataclass(frozen=True)
class Trace:
    """TSSL-BP's PSP filter of the network input, ``a[t] = (1 - 1/tau_s) a[t-1] + x[t] / tau_s``."""

    name: str
    tau_s: float


@dataclass(frozen=True)
class Branch:
    name: str


@dataclass(frozen=True)
class Merge:
    name: str


Stage = Synapse | Neuron | Pool | Flatten | Trace | Branch | Merge


def _sequence(modules: list[tuple[str, nn.Module]]) -> list[Stage]:
    out: list[Stage] = []
    i = 0
    while i < len(modules):
        name, module = modules[i]
        following = modules[i + 1][1] if i + 1 < len(modules) else None
        if isinstance(module, nn.Dropout | TimeSharedDropout):
            pass
        elif isinstance(module, PSPInput):
            out.append(Trace(name, module.tau_s))
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            if isinstance(following, nn.BatchNorm2d):
                out.append(Synapse(name, module, following))
                i += 1
            else:
                out.append(Synapse(name, module))
        elif isinstance(module, SEWBlock):
            inner = [(f"{name}.{sub}", m) for sub, m in module.named_children()]
            expanded = []
            for sub, m in inner:  # conv1 / conv2 are Sequential(conv[, BN])
                expanded += ([(f"{sub}.{k}", layer) for k, layer in m.named_children()]
                             if isinstance(m, nn.Sequential) else [(sub, m)])
            out += [Branch(name), *_sequence(expanded), Merge(name)]
        elif isinstance(module, MultiStepNeuron):
            out.append(Neuron(name, module))
        elif isinstance(module, (nn.AvgPool2d, nn.MaxPool2d, AvgPoolConv, ScaledSumPool)):
            out.append(Pool(name, module))
        elif isinstance(module, nn.Flatten):
            out.append(Flatten(name, module))
        else:
            raise NotImplementedError(f"no deployment mapping for layer {name} ({type(module).__name__}); "
                                      "mapped: Conv2d / Linear [+ BatchNorm2d], AvgPool2d, MaxPool2d, "
                                      "AvgPoolConv, ScaledSumPool, PSPInput, Flatten, Dropout, SEW blocks, "
                                      "spiking neurons")
        i += 1
    return out


def psp_carrier(stage: Stage) -> float | None:
    """The PSP time constant of what ``stage`` outputs (TSSL-BP's input filter and neurons)."""
    if isinstance(stage, Trace):
        return stage.tau_s
    if isinstance(stage, Neuron) and isinstance(stage.module, TSSLNeuron):
        return stage.module.constants.tau_s
    return None


def _check_psp(chain: list[Stage]) -> None:
    """A PSP filter moves onto the next neuron's current only past bias-free layers, into a
    TSSL-BP neuron (the targets rely on it)."""
    psp = None
    for stage in chain:
        if psp is not None and isinstance(stage, Synapse) and bool(stage.folded()[1].abs().sum()):
            raise NotImplementedError(f"{stage.name}: a bias after a PSP filter (it does not commute)")
        if psp is not None and isinstance(stage, Neuron) and not isinstance(stage.module, TSSLNeuron):
            raise NotImplementedError(f"{stage.name}: a PSP-filtered current into a "
                                      f"{type(stage.module).__name__}")
        if isinstance(stage, Neuron | Trace):
            psp = psp_carrier(stage)


def stages(net: nn.Module) -> list[Stage]:
    """The stages of ``net`` (its ``layers``, named ``layers.<i>[.<sub>]`` as in the network)."""
    chain = _sequence([(f"layers.{i}", m) for i, m in enumerate(net.layers)])
    _check_psp(chain)
    return chain
