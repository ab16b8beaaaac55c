"""Calibration of a converted SNN against its ANN (Li et al. 2021) and rescaling to unit thresholds.

Both corrections run layer by layer in order on one batch, each layer seeing the SNN input that the
already corrected layers before it produce:

- bias correction ("light"): ``b_c += mean_ann_c - mean_snn_c`` per output channel ``c``, the means
  over batch, positions and (SNN) time steps of the layer's output;
- potential correction ("advanced", after the bias correction):
  ``v_init += T * (mean_ann - mean_snn)`` per neuron (means over batch and time).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cbpqsnn.conversion.network import ConvertibleNet
from cbpqsnn.neurons import IFNeuron


@torch.no_grad()
def analog_means(net: ConvertibleNet, x: Tensor) -> list[Tensor]:
    """Per-neuron mean over the batch of every ReLU output of the ANN on ``x`` (``[C, H, W]`` or
    ``[F]`` per layer)."""
    activations: list[Tensor] = []
    net.analog_forward(x, activations)
    return [a.mean(0) for a in activations]


def channel_mean(neuron_mean: Tensor) -> Tensor:
    """Per-channel mean of a per-neuron map ``[C, H, W] -> [C]`` (``[F]`` unchanged)."""
    return neuron_mean.flatten(1).mean(1) if neuron_mean.dim() > 1 else neuron_mean


def spiking_means(net: ConvertibleNet, x: Tensor) -> list[Tensor]:
    """Per-neuron mean over time and batch of every IF neuron's output of the SNN on ``x``."""
    means: list[Tensor] = []

    def record(k: int, neuron: IFNeuron, current: Tensor) -> Tensor:
        means.append(neuron(current).mean((0, 1)))
        return current

    with torch.no_grad():
        net.spiking_forward(x, record)
    return means


@torch.no_grad()
def bias_correction(net: ConvertibleNet, x: Tensor, ann_means: list[Tensor]) -> None:
    """Light calibration: shift the bias of each neuron's conv / linear by the per-channel mean
    error, layer by layer."""
    synapses = net.synapses

    def correct(k: int, neuron: IFNeuron, current: Tensor) -> Tensor:
        error = channel_mean(ann_means[k]) - channel_mean(neuron(current).mean((0, 1)))
        bias = synapses[k].bias
        if bias is None:
            raise ValueError(f"bias correction needs a bias on layer {k}")
        bias.add_(error)
        return current + error.view(-1, *([1] * (current.dim() - 3)))

    net.spiking_forward(x, correct)


@torch.no_grad()
def potential_correction(net: ConvertibleNet, x: Tensor, ann_means: list[Tensor]) -> None:
    """Advanced calibration: initial membrane potential ``T * (mean_ann - mean_snn)`` per neuron,
    added to the current one, layer by layer."""

    def correct(k: int, neuron: IFNeuron, current: Tensor) -> Tensor:
        error = ann_means[k] - neuron(current).mean((0, 1))
        neuron.v_init.add_(current.shape[0] * error)
        return current

    net.spiking_forward(x, correct)


@torch.no_grad()
def rescale_to_unit_thresholds(net: ConvertibleNet) -> list[float]:
    """Make every threshold 1 without changing a spike: layer ``l`` with threshold ``V_l`` fed by
    spikes of amplitude ``V_{l-1}`` (the input: 1) gets ``W_l <- W_l V_{l-1} / V_l``,
    ``b_l <- b_l / V_l``, ``v_init_l <- v_init_l / V_l``; the classifier ``W <- W V_last``.
    Returns the thresholds it divided out."""
    previous = torch.ones(())
    thresholds = []
    for neuron, synapse in zip(net.neurons, net.synapses, strict=True):
        threshold = neuron.threshold.clone()
        synapse.weight.mul_(previous.to(threshold) / threshold)
        if synapse.bias is not None:
            synapse.bias.div_(threshold)
        neuron.v_init.div_(threshold)
        neuron.threshold.fill_(1.0)
        thresholds.append(float(threshold))
        previous = threshold
    net.classifier.weight.mul_(previous)
    return thresholds


@torch.no_grad()
def set_simulation_length(net: ConvertibleNet, T: int) -> None:
    """Run the converted SNN for ``T`` steps from now on; the initial potentials, a charge of
    ``T * (mean_ann - mean_snn)`` for the calibration length, scale with it."""
    for neuron in net.neurons:
        neuron.v_init.mul_(T / net.T)
    net.T = T
