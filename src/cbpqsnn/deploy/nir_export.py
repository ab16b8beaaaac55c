"""A baked spiking network as a NIR graph (``nir`` on PyPI, the neuromorphic exchange format read
by snnTorch, Norse, Sinabs, Rockpool, Lava-DL, SpiNNaker2, ...).

Discrete-time semantics. NIR nodes are continuous-time; a simulator steps them with a time step
``dt``: a LIF node ``tau dv/dt = (v_leak - v) + r I`` becomes ``v[t] = (1 - dt/tau) v[t-1] +
(dt/tau) r I[t]`` (forward Euler), spiking when ``v > v_threshold`` and then resetting ``v`` to
``v_reset``. This module writes every node for ``dt = DT = 1e-4`` (the step snnTorch's importer
assumes), stored in the graph's metadata, so that one simulator step is one time step of the
project's network:

- STBP's iterative LIF ``u[t] = decay u[t-1] (1 - o[t-1]) + I[t]``, ``o = 1[u > V_th]``: the reset
  folded into the decay is a hard reset to 0 after a spike, so ``nir.LIF`` with
  ``tau = dt / (1 - decay)``, ``r = tau / dt`` (input gain ``dt r / tau = 1``), ``v_leak = 0``,
  ``v_threshold = V_th``, ``v_reset = 0``. Exact.
- ``nn.Conv2d`` -> ``nir.Conv2d`` (a missing bias as zeros), ``nn.Linear`` -> ``nir.Affine``,
  ``nn.AvgPool2d`` -> ``nir.AvgPool2d``, ``nn.Flatten`` -> ``nir.Flatten`` (dimensions without the
  batch, as NIR counts them), dropout dropped (inference).
- A static image is the input current at every step (direct encoding): the simulator is fed the
  same image ``T`` times; the class is the output layer's spike count (STBP's firing-rate readout).

A layer or neuron without a mapping here is a ``NotImplementedError`` naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from cbpqsnn.nets.feedforward import SpikingNet
from cbpqsnn.neurons import STBPLIF

DT = 1e-4  # the simulator time step every node is written for (snnTorch's importer assumes it)


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float64).numpy().astype(np.float32)


def _full(shape: tuple[int, ...], value: float) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def _conv(layer: nn.Conv2d, shape: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    import nir

    bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_channels)
    node = nir.Conv2d(input_shape=np.array(shape[1:]), weight=_array(layer.weight),
                      stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                      groups=layer.groups, bias=_array(bias))
    out = layer(torch.zeros(1, *shape, dtype=layer.weight.dtype)).shape[1:]
    return node, tuple(out)


def _linear(layer: nn.Linear, shape: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    import nir

    bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
    return nir.Affine(weight=_array(layer.weight), bias=_array(bias)), (layer.out_features,)


def _avgpool(layer: nn.AvgPool2d, shape: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    import nir

    pair = nn.modules.utils._pair
    node = nir.AvgPool2d(kernel_size=np.array(pair(layer.kernel_size)),
                         stride=np.array(pair(layer.stride)), padding=np.array(pair(layer.padding)))
    return node, tuple(layer(torch.zeros(1, *shape)).shape[1:])


def _flatten(layer: nn.Flatten, shape: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    import nir

    if layer.start_dim != 1 or layer.end_dim != -1:
        raise NotImplementedError("only Flatten(start_dim=1) (flatten every non-batch dimension)")
    node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
    return node, (int(np.prod(shape)),)


def _stbp_lif(neuron: STBPLIF, shape: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    import nir

    tau = DT / (1.0 - neuron.decay)
    node = nir.LIF(tau=_full(shape, tau), r=_full(shape, tau / DT), v_leak=_full(shape, 0.0),
                   v_threshold=_full(shape, neuron.v_threshold), v_reset=_full(shape, 0.0))
    return node, shape


NODES: dict[type, Callable[[Any, tuple[int, ...]], tuple[Any, tuple[int, ...]]]] = {
    nn.Conv2d: _conv,
    nn.Linear: _linear,
    nn.AvgPool2d: _avgpool,
    nn.Flatten: _flatten,
    STBPLIF: _stbp_lif,
}
SKIPPED = (nn.Dropout,)  # identity at inference


@torch.no_grad()
def to_nir(net: SpikingNet, T: int) -> Any:
    """The NIR graph of ``net`` (a :class:`SpikingNet` on static inputs), nodes named as the
    network's layers (``layers.<i>``), a chain ``input -> ... -> output``."""
    import nir

    shape = tuple(net.in_shape)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(shape)})}
    edges, previous = [], "input"
    for index, layer in enumerate(net.layers):
        if isinstance(layer, SKIPPED):
            continue
        convert = NODES.get(type(layer))
        if convert is None:
            raise NotImplementedError(f"no NIR mapping for layer {index} ({type(layer).__name__}); "
                                      f"mapped: {', '.join(t.__name__ for t in NODES)}")
        name = f"layers.{index}"
        nodes[name], shape = convert(layer, shape)
        edges.append((previous, name))
        previous = name
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((previous, "output"))
    metadata = {"dt": DT, "time_steps": int(T), "encoding": "direct: the input repeated every step",
                "readout": "spike count of the output layer", "source": "cbpqsnn"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
