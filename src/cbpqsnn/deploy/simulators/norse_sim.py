"""Norse 1.1 reading ``model.nir``: ``norse.torch.utils.import_nir._import_norse_module`` (what
``norse.torch.from_nir`` uses) for every node it reads as NIR defines it, wired by nirtorch, run
step by step on a batch. Adapters where Norse's reader departs from NIR (documented in
docs/deploying.md):

- ``nir.LIF``: the reader drops ``r`` and ``v_reset`` (it warns about ``r``); the adapter is
  Norse's own ``LIFBoxCell`` with ``v_reset`` set, fed ``r I`` (as the reader's own ``CubaLIF``
  feeds ``r i``): ``v = v + (dt/tau) (v_leak - v + r I)``, spike at ``v > v_threshold``.
- ``nir.Threshold`` and ``nir.AvgPool2d``: no mapping in the reader (``common``).
- ``nir.Flatten``: the reader flattens from NIR's dimension 0, which a batched run has as the
  batch (``common.BatchFlatten``).

``nir.IF`` is Norse's ``IAFCell``: ``v = v + I``, reset to 0, start at 0 -- NIR's IF. Norse has no
IF that resets by subtraction or starts from a given potential, so the converted network's IF
metadata cannot be honoured: the result is what NIR's IF semantics give."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cbpqsnn.deploy.simulators.common import (
    BatchFlatten,
    Heaviside,
    NotExpressible,
    avg_pool,
    has_if_metadata,
    readout,
    step_input,
)

NAME = "norse"


class _ScaledInput(torch.nn.Module):
    """A Norse cell fed ``r * I``."""

    def __init__(self, r: np.ndarray, cell: torch.nn.Module) -> None:
        super().__init__()
        self.register_buffer("r", torch.as_tensor(np.asarray(r), dtype=torch.float32))
        self.cell = cell

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        return self.cell(self.r * x, state)


def _lif(node: Any, dt: float) -> torch.nn.Module:
    from norse.torch.module.lif_box import LIFBoxCell, LIFBoxParameters

    def tensor(a: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=torch.float32)

    params = LIFBoxParameters(tau_mem_inv=1 / tensor(node.tau), v_th=tensor(node.v_threshold),
                              v_leak=tensor(node.v_leak), v_reset=tensor(node.v_reset))
    return _ScaledInput(node.r, LIFBoxCell(params, dt=dt))


def network(graph: Any) -> torch.nn.Module:
    import nir
    import nirtorch
    from norse.torch.utils.import_nir import _import_norse_module

    dt = float(graph.metadata["dt"])
    kinds = (nir.Affine, nir.Conv2d, nir.Linear, nir.IF, nir.CubaLIF, nir.SumPool2d)
    node_map: dict[Any, Any] = {kind: lambda n: _import_norse_module(n, ignore_warnings=True, dt=dt)
                                for kind in kinds}
    node_map.update({nir.LIF: lambda n: _lif(n, dt), nir.Threshold: lambda n: Heaviside(n.threshold),
                     nir.AvgPool2d: avg_pool, nir.Flatten: BatchFlatten})
    return nirtorch.nir_to_torch(graph, node_map)


@torch.no_grad()
def outputs(graph: Any, inputs: torch.Tensor, T: int, use_metadata: bool = True,
            batch: int = 256) -> np.ndarray:
    """The output of ``graph`` run by Norse, summed over ``T`` steps (``common.readout``)."""
    if use_metadata and has_if_metadata(graph):
        raise NotExpressible("Norse's IAFCell resets to v_reset and starts at 0: the graph's IF metadata "
                             "(reset by subtraction, calibrated v_init) cannot be honoured; what Norse "
                             "computes with NIR's IF is the _nir_if_semantics entry")
    runs = []
    for x in inputs.split(batch):
        net = network(graph)  # nirtorch keeps the last batch's state as the next one's default
        state, steps = None, []
        for t in range(T):
            out, state = net(step_input(graph, x, t), state)
            steps.append(out.double().numpy())
        runs.append(np.stack(steps, 1))
    return readout(graph, np.concatenate(runs))
