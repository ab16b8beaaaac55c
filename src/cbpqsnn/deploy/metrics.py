"""Hardware metrics of a spiking network on test inputs: spike rate per neuron layer, synaptic
operations (SynOps) per inference, weight memory per layer and an energy estimate.

- **Spike rate** of a neuron layer: spikes / (neurons x T), averaged over the inputs (the spikes
  behind the neuron's output: ``MultiStepNeuron.spike_train``; a converted IF neuron outputs spikes
  scaled by its threshold, a TSSL-BP neuron its PSP trace).
- **SynOps** of a conv / linear layer whose input is a spike train (event driven: every nonzero
  input value triggers one accumulate per outgoing synapse): ``sum_t sum_i 1[x_i[t] != 0]
  fan_out_i``, counted exactly (the layer's connectivity with all-ones weights applied to the
  nonzero pattern, so border effects and strides are included). A layer whose input is not a
  spike train (the first layer on the image: direct encoding) does dense **MACs**:
  ``inputs x fan-out``, once per inference (the network computes it once and repeats it over T).
  Event frames are event driven from the first layer on. TSSL-BP's layers take PSP traces,
  nonzero at every step after a neuron's first spike: counted as they are, an upper bound on the
  events of its spikes.
- **Energy** per inference, from a table of energies per operation (``energy_pj``: the config's
  ``hardware.energy_pj``; default 45 nm values of Horowitz, ISSCC 2014): MACs x ``fp32_mac``;
  SynOps of an FP32 layer x ``fp32_add``; SynOps of a layer with 1-2 bit weights (binary,
  ternary) x ``int_add`` (integer additions, the scale folded into the neuron:
  :mod:`cbpqsnn.deploy.integer`); with more bits (shift and intN sets) x ``int_mac`` (an integer
  multiply-accumulate; an overestimate for the shift sets, whose products are shifts). Memory
  accesses and neuron updates are not counted: a lower bound on the arithmetic, as in the SNN
  literature.
- **Weight memory** per layer: FP32 layers 32 bits per weight, quantized layers ``bits(F)`` per
  weight plus one 32-bit scale (:mod:`cbpqsnn.quant.memory`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cbpqsnn.neurons import MultiStepNeuron

ENERGY_KEYS = ("fp32_mac", "fp32_add", "int_add", "int_mac")  # the operations the energy table prices (pJ)


def _fan_out_count(layer: nn.Module, active: Tensor) -> float:
    """``sum_i active_i fan_out_i`` over a batch of inputs of ``layer`` (``active``: 0/1)."""
    active = active.float()  # counts in float32 (exact per element) whatever the network's dtype
    if isinstance(layer, nn.Linear):
        return float(active.double().sum()) * layer.out_features
    ones = torch.ones(layer.out_channels, layer.in_channels // layer.groups, *layer.kernel_size,
                      device=active.device)
    out = F.conv2d(active, ones, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return float(out.double().sum())


@torch.no_grad()
def hardware_metrics(net: nn.Module, batches: Iterable[Tensor], energy_pj: Mapping[str, float],
                     quantized: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Metrics of ``net`` (time-first outputs) over the input ``batches``; ``energy_pj``: pJ per
    operation (``ENERGY_KEYS``); ``quantized`` maps a layer name (inside ``net``) to its bits per
    weight. Counts are per inference (one input)."""
    missing = [k for k in ENERGY_KEYS if k not in energy_pj]
    if missing:
        raise ValueError(f"the energy table lacks {missing}; it needs {list(ENERGY_KEYS)} (pJ)")
    energy_pj = {k: float(energy_pj[k]) for k in ENERGY_KEYS}
    quantized = dict(quantized or {})
    spikes: dict[str, float] = defaultdict(float)
    neurons: dict[str, int] = {}
    synops: dict[str, float] = defaultdict(float)
    macs: dict[str, float] = defaultdict(float)
    samples = 0
    hooks = []

    def neuron_hook(name: str):
        def hook(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            spikes[name] += float(module.spike_train(out).double().sum())
            neurons[name] = out[0, 0].numel()
        return hook

    network_input: list[Tensor] = []

    def layer_hook(name: str, layer: nn.Module):
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0]
            if network_input and x is network_input[0]:  # a static image: dense, once
                macs[name] += _fan_out_count(layer, torch.ones_like(x))
            else:  # spikes, pooled spikes or event frames: one accumulate per event and synapse
                synops[name] += _fan_out_count(layer, x != 0)
        return hook

    layers = {}
    for name, module in net.named_modules():
        if isinstance(module, MultiStepNeuron):
            hooks.append(module.register_forward_hook(neuron_hook(name)))
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            layers[name] = module
            hooks.append(module.register_forward_pre_hook(layer_hook(name, module)))
    T = None
    training = net.training
    parameter = next(net.parameters())  # inputs in the network's device and dtype (bf16-true runs)
    net.eval()
    try:
        for x in batches:
            network_input[:] = [x.to(parameter.device, parameter.dtype if x.is_floating_point() else x.dtype)]
            out = net(network_input[0])
            T = out.shape[0]
            samples += out.shape[1]
    finally:
        net.train(training)
        for hook in hooks:
            hook.remove()
    if not samples:
        raise ValueError("no inputs to measure the hardware metrics on")
    per_layer = {}
    energy = 0.0
    for name, layer in layers.items():
        bits = quantized.get(name)
        ops, dense = synops[name] / samples, macs[name] / samples
        op = "fp32_add" if not bits else "int_add" if bits <= 2 else "int_mac"
        cost = dense * energy_pj["fp32_mac"] + ops * energy_pj[op]
        energy += cost
        memory_bits = layer.weight.numel() * (bits or 32) + (32 if bits else 0)
        per_layer[name] = {"synops": ops, "macs": dense, "energy_pj": cost,
                           "weight_bits": bits or 32, "weight_memory_bytes": memory_bits / 8}
    rates = {name: spikes[name] / (neurons[name] * T * samples) for name in neurons}
    return {"samples": samples, "T": T, "spike_rate": rates, "layers": per_layer,
            "synops": sum(v["synops"] for v in per_layer.values()),
            "macs": sum(v["macs"] for v in per_layer.values()),
            "energy_uj": energy * 1e-6, "energy_table_pj": energy_pj}


def first_test_inputs(datamodule: Any, samples: int) -> list[Tensor]:
    """The first ``samples`` test inputs of ``datamodule``, as its test loader batches them."""
    datamodule.setup("test")
    batches, taken = [], 0
    for x, _ in datamodule.test_dataloader():
        batches.append(x[: samples - taken])
        taken += len(batches[-1])
        if taken >= samples:
            break
    return batches
