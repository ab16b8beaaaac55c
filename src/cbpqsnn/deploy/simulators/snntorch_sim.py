"""snnTorch reading ``model.nir`` (``snntorch.import_nir.import_from_nir``); a graph with
``nir.Threshold`` nodes (the max pools over spikes) goes through the same node conversions of
snnTorch plus :class:`~cbpqsnn.deploy.simulators.common.Heaviside`, wired by nirtorch as
``import_from_nir`` wires them. Run one sample at a time (NIR shapes carry no batch dimension)."""

from __future__ import annotations

import contextlib
import io
from functools import partial
from typing import Any

import numpy as np
import torch

from cbpqsnn.deploy.simulators.common import Heaviside, NotExpressible, readout, step_input

NAME = "snntorch"


def network(graph: Any) -> torch.nn.Module:
    import nir
    from snntorch.import_nir import _nir_to_snntorch_module, import_from_nir

    if any(isinstance(node, nir.IF) for node in graph.nodes.values()):
        raise NotExpressible(
            "snnTorch 1.0 reads nir.IF as a leaky neuron (Leaky, beta 0.9) that returns (spikes, "
            "membrane) and cannot feed the next layer: neither NIR's IF nor the converted network's "
            "reset by subtraction")
    if not any(isinstance(node, nir.Threshold) for node in graph.nodes.values()):
        return import_from_nir(graph)
    import nirtorch

    kinds = (nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.AvgPool2d, nir.LIF, nir.CubaLIF)
    node_map: dict[Any, Any] = {kind: partial(_nir_to_snntorch_module, init_hidden=True) for kind in kinds}
    node_map[nir.Threshold] = lambda n: Heaviside(n.threshold)
    return nirtorch.nir_to_torch(graph, node_map)


@torch.no_grad()
def outputs(graph: Any, inputs: torch.Tensor, T: int, use_metadata: bool = True) -> np.ndarray:
    """The output of ``graph`` run by snnTorch, summed over ``T`` steps (``common.readout``)."""
    import snntorch.utils

    with contextlib.redirect_stdout(io.StringIO()):  # snnTorch prints every rescaled threshold array
        net = network(graph)
    runs = []
    for x in inputs:
        snntorch.utils.reset(net)
        steps = []
        for t in range(T):
            out = net(step_input(graph, x.unsqueeze(0), t)[0])
            steps.append((out[0] if isinstance(out, tuple) else out).double().numpy())
        runs.append(np.stack(steps))
    return readout(graph, np.stack(runs))
