"""A baked spiking network as a NIR graph (``nir`` on PyPI, the neuromorphic exchange format read
by snnTorch, Norse, Sinabs, Rockpool, Lava-DL, SpiNNaker2, ...).

Discrete-time semantics. NIR nodes are continuous-time; a simulator steps them with a time step
``dt``: a LIF node ``tau dv/dt = (v_leak - v) + r I`` becomes ``v[t] = (1 - dt/tau) v[t-1] +
(dt/tau) (v_leak + r I[t])`` (forward Euler), spiking when ``v > v_threshold`` and then resetting
``v`` to ``v_reset``. This module writes every node for ``dt = DT = 1e-4`` (the step snnTorch's
importer assumes), stored in the graph's metadata, so that one simulator step is one time step of
the project's network:

- STBP's iterative LIF ``u[t] = decay u[t-1] (1 - o[t-1]) + I[t]``, ``o = 1[u > V_th]``: the reset
  folded into the decay is a hard reset to 0 after a spike, so ``nir.LIF`` with
  ``tau = dt / (1 - decay)``, ``r = tau / dt`` (input gain ``dt r / tau = 1``), ``v_leak = 0``,
  ``v_threshold = V_th``, ``v_reset = 0``. Exact.
- PLIF / LIF of the surrogate-gradient backbone, ``H[t] = V[t-1] + k (X[t] - V[t-1] + V_r)`` with the
  learned ``k = 1/tau``: ``nir.LIF`` with ``tau = dt / k``, ``r = 1`` (gain ``k``), ``v_leak = v_reset
  = V_r``. Not exact at a tie: PLIF fires at ``H >= V_th``, NIR at ``v > V_th`` (docs/deploying.md).
- The IF neuron of the converted network (reset by subtraction, spike amplitude ``V_th``, input shift
  ``V_th / 2T``): ``nir.IF`` with ``r = 1``, the threshold, ``v_reset = 0``; the shift is folded into
  the preceding layer's bias and the amplitude into the next layer's weights. **Not exact**: NIR's IF
  resets to ``v_reset`` (hard reset), and a node has no initial potential; snnTorch 1.0 cannot run
  ``nir.IF`` inside a network at all (:mod:`cbpqsnn.deploy.simulators.snntorch_sim` says why). The
  node's ``metadata`` (:func:`if_metadata`) says what NIR cannot: reset by subtraction, ``>=``, the
  calibrated ``v_init``; Sinabs' ``IAF`` built with it (:mod:`cbpqsnn.deploy.simulators.sinabs_sim`)
  is exact, as is the integer artifact.
- ``nn.Conv2d`` -> ``nir.Conv2d`` and ``nn.Linear`` -> ``nir.Affine`` (a missing bias as zeros), a
  following ``BatchNorm2d`` folded into them (``W s``, ``s (b - mu) + beta``, ``s = gamma / sqrt(var
  + eps)``: the weights of a quantized layer become per-channel multiples of its codes);
  ``nn.AvgPool2d`` -> ``nir.AvgPool2d``; the conversion's fixed pooling conv -> a ``nir.Conv2d``
  (depthwise written as a diagonal channel mix: NIR's shape inference ignores ``groups``);
  ``nn.MaxPool2d`` over spikes or sums of spikes (integers ``0 .. m``, ``m`` growing by one per SEW
  ADD) -> for each ``j = 1 .. m`` ``nir.Threshold(j - 0.5)``, ``nir.SumPool2d``, ``nir.Threshold(0.5)``,
  summed by the next node: ``max = sum_j 1[some value in the window >= j]`` (exact; refused on
  inputs that are not integers); ``nn.Flatten`` -> ``nir.Flatten`` (dimensions without the batch);
  dropout dropped.
- TSSL-BP's neuron (LIF with reset to 0, ``1 - 1/tau_m`` leak, output = the PSP trace of its spikes,
  ``a[t] = (1 - 1/tau_s) a[t-1] + s[t] / tau_s``; the input is PSP-filtered too): the layers between
  two neurons are linear and bias-free, so the PSP filter moves past them onto the next neuron's
  current -- a ``nir.CubaLIF`` (``tau_syn = dt tau_s``, ``w_in = 1``: gain ``1/tau_s``; ``tau_mem =
  dt tau_m``, ``r = tau_m``: gain 1) fed by spikes. The output neuron's trace is the readout: the
  graph outputs spikes and ``metadata["readout_psp_tau_s"]`` says to filter them before summing.
  ``ScaledSumPool`` -> ``nir.SumPool2d`` with its 1.1 folded into the next weights. Exact in
  arithmetic (the filter commutes with linear maps); float rounding differs.
- A SEW block's ADD connect is two edges into the next node (NIR sums a node's inputs).
- A static image is the input current at every step (direct encoding): the simulator is fed the
  same image ``T`` times; event frames are fed one per step. The class is the argmax of the output
  node summed over the ``T`` steps (a spike count, or the analog classifier's summed outputs).

A layer or neuron without a mapping here is a ``NotImplementedError`` naming it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.utils import _pair

from cbpqsnn.deploy.stages import Branch, Flatten, Neuron, Pool, Stage, Synapse, Trace, psp_carrier, stages
from cbpqsnn.nets.tssl_layers import ScaledSumPool
from cbpqsnn.neurons import STBPLIF, IFNeuron, MultiStepNeuron, ParametricLIF, TSSLNeuron

DT = 1e-4  # the simulator time step every node is written for (snnTorch's importer assumes it)


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float64).numpy().astype(np.float32)


def _full(shape: tuple[int, ...], value: float) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def _neuron(neuron: MultiStepNeuron, shape: tuple[int, ...], psp: float | None) -> tuple[Any, float]:
    """The NIR node of ``neuron`` and its spike amplitude (what the next layer's weights absorb);
    ``psp``: the PSP time constant of the current it receives (TSSL-BP), else None."""
    import nir

    if isinstance(neuron, TSSLNeuron):
        c = neuron.constants
        # the PSP of the previous layer's spikes, moved past the (bias-free) synapse: the current
        return nir.CubaLIF(tau_syn=_full(shape, DT * psp), tau_mem=_full(shape, DT * c.tau_m),
                           r=_full(shape, c.tau_m), v_leak=_full(shape, 0.0),
                           v_threshold=_full(shape, c.v_threshold), v_reset=_full(shape, 0.0),
                           w_in=_full(shape, 1.0)), 1.0

    def lif(tau: float, r: float, v_threshold: float, v_rest: float) -> Any:
        return nir.LIF(tau=_full(shape, tau), r=_full(shape, r), v_leak=_full(shape, v_rest),
                       v_threshold=_full(shape, v_threshold), v_reset=_full(shape, v_rest))

    if isinstance(neuron, STBPLIF):
        tau = DT / (1.0 - neuron.decay)
        return lif(tau, tau / DT, neuron.v_threshold, 0.0), 1.0
    if isinstance(neuron, ParametricLIF):
        k = float(torch.sigmoid(neuron.w.detach().double()))
        return lif(DT / k, 1.0, neuron.v_threshold, neuron.v_reset), 1.0
    if isinstance(neuron, IFNeuron):
        threshold = float(neuron.threshold)
        v_init = np.broadcast_to(_array(neuron.v_init), shape).astype(np.float32)
        return nir.IF(r=_full(shape, 1.0), v_threshold=_full(shape, threshold),
                      v_reset=_full(shape, 0.0), metadata=if_metadata(v_init)), threshold
    raise NotImplementedError(f"no NIR mapping for the neuron {type(neuron).__name__}; "
                              "mapped: STBPLIF, ParametricLIF, IFNeuron, TSSLNeuron")


def if_metadata(v_init: np.ndarray) -> dict[str, Any]:
    """What NIR 1.0's ``IF`` cannot say about the converted network's neuron, in the node's
    metadata (a reader that ignores it runs NIR's IF): reset by subtraction, spike at ``v >=
    v_threshold``, the calibrated initial potential ``v_init``."""
    return {"reset": "subtract", "fires_at": ">=", "v_init": v_init}


def _max_pool(name: str, k: tuple[int, int], shape: tuple[int, ...], out_shape: tuple[int, ...],
              top: int, inputs: list[str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Nodes and edges of a max pool over integers ``0 .. top``: ``max = sum_j 1[some value in the
    window >= j]``, ``j = 1 .. top``, one Threshold-SumPool-Threshold branch per ``j`` (the next
    node sums the branches' ``.any`` outputs)."""
    import nir

    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    for j in range(1, top + 1):
        level = f"{name}.ge{j}"
        nodes[level] = nir.Threshold(threshold=_full(shape, j - 0.5))
        nodes[level + ".sum"] = nir.SumPool2d(kernel_size=np.array(k), stride=np.array(k),
                                              padding=np.array([0, 0]))
        nodes[level + ".any"] = nir.Threshold(threshold=_full(out_shape, 0.5))
        edges += [*((source, level) for source in inputs), (level, level + ".sum"),
                  (level + ".sum", level + ".any")]
    return nodes, edges


def input_shift(chain: list[Stage], index: int, T: int) -> float:
    """The ``V_th / 2T`` input shift of stage ``index + 1`` if that is an IF neuron that adds it."""
    following = chain[index + 1] if index + 1 < len(chain) else None
    if isinstance(following, Neuron) and isinstance(following.module, IFNeuron) \
            and following.module.input_shift:
        return float(following.module.threshold) / (2 * T)
    return 0.0


@torch.no_grad()
def to_nir(net: nn.Module, T: int) -> Any:
    """The NIR graph of ``net`` (its :func:`~cbpqsnn.deploy.stages.stages`), nodes named as the
    network's layers (``layers.<i>``, ``layers.<i>.conv1.0`` inside a SEW block)."""
    import nir

    shape = tuple(net.in_shape)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(shape)})}
    edges: list[tuple[str, str]] = []
    # what feeds the next node (summed); its amplitude; the largest integer its values reach in
    # units of the amplitude (1: spikes; a SEW sum of spikes reaches 2), None if not integers
    sources, gain, top = ["input"], 1.0, None
    psp: float | None = None  # TSSL-BP: the PSP filter the next neuron's current carries
    kept: dict[str, tuple[list[str], float, int | None]] = {}

    def add(name: str, node: Any) -> None:
        nodes[name] = node
        edges.extend((source, name) for source in sources)
        sources[:] = [name]

    chain = stages(net)
    for index, stage in enumerate(chain):
        if isinstance(stage, Synapse):
            s, b = stage.folded()
            layer = stage.layer
            weight = layer.weight.detach().double() * gain
            weight = weight * s.view(-1, *[1] * (weight.dim() - 1))
            bias = b + input_shift(chain, index, T)
            if isinstance(layer, nn.Conv2d):
                add(stage.name, nir.Conv2d(input_shape=np.array(shape[1:]), weight=_array(weight),
                                           stride=layer.stride, padding=layer.padding,
                                           dilation=layer.dilation, groups=layer.groups, bias=_array(bias)))
                shape = tuple(layer(torch.zeros(1, *shape, dtype=layer.weight.dtype)).shape[1:])
            else:
                add(stage.name, nir.Affine(weight=_array(weight), bias=_array(bias)))
                shape = (layer.out_features,)
            gain, top = 1.0, None
        elif isinstance(stage, Neuron):
            node, gain = _neuron(stage.module, shape, psp)
            add(stage.name, node)
            top, psp = 1, psp_carrier(stage)
        elif isinstance(stage, Trace):
            psp = psp_carrier(stage)
        elif isinstance(stage, Pool):
            pool = stage.module
            k = _pair(pool.kernel_size)
            out_shape = (shape[0], shape[1] // k[0], shape[2] // k[1])
            if isinstance(pool, nn.AvgPool2d):
                add(stage.name, nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(_pair(pool.stride)),
                                              padding=np.array(_pair(pool.padding))))
            elif isinstance(pool, ScaledSumPool):  # TSSL-BP: scale x window sum, the scale folded
                add(stage.name, nir.SumPool2d(kernel_size=np.array(k), stride=np.array(k),
                                              padding=np.array([0, 0])))
                gain *= pool.scale
            elif isinstance(pool, nn.MaxPool2d):
                if top is None or _pair(pool.stride) != k or _pair(pool.padding) != (0, 0):
                    raise NotImplementedError(f"{stage.name}: a max pool maps to NIR only on spikes or "
                                              "sums of spikes, stride = kernel, no padding")
                pooled, pool_edges = _max_pool(stage.name, k, shape, out_shape, top, sources)
                nodes.update(pooled)
                edges.extend(pool_edges)
                sources[:] = [name for name in pooled if name.endswith(".any")]
            else:  # the conversion's fixed pooling conv (depthwise) as a conv with a diagonal
                # channel mix: NIR's type inference ignores groups
                bias = pool.bias.detach().double() + input_shift(chain, index, T)
                depthwise = pool.weight.detach().double()[:, 0] * gain  # [C, k, k]
                weight = torch.zeros(shape[0], *depthwise.shape, dtype=torch.float64)
                weight[range(shape[0]), range(shape[0])] = depthwise
                add(stage.name, nir.Conv2d(input_shape=np.array(shape[1:]), weight=_array(weight),
                                           stride=(pool.kernel_size,) * 2, padding=(0, 0), dilation=(1, 1),
                                           groups=1, bias=_array(bias)))
                gain = 1.0
            if not isinstance(pool, nn.MaxPool2d):
                top = None
            shape = out_shape
        elif isinstance(stage, Flatten):
            if stage.module.start_dim != 1 or stage.module.end_dim != -1:
                raise NotImplementedError("only Flatten(start_dim=1) (flatten every non-batch dimension)")
            add(stage.name, nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1))
            shape = (int(np.prod(shape)),)
        elif isinstance(stage, Branch):
            kept[stage.name] = (list(sources), gain, top)
        else:  # Merge: the block's input joins the branch's output (summed by the next node)
            kept_sources, kept_gain, kept_top = kept.pop(stage.name)
            if kept_gain != gain:
                raise NotImplementedError(f"{stage.name}: residual branches with different spike amplitudes")
            sources[:] = sources + kept_sources
            top = top + kept_top if top is not None and kept_top is not None else None
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.extend((source, "output") for source in sources)
    metadata = {"dt": DT, "time_steps": int(T), "encoding": "static input: repeated every step; "
                "event frames: one per step", "readout": "argmax of the output summed over the steps",
                "source": "cbpqsnn"}
    if psp is not None:  # TSSL-BP reads out the output spikes' PSP traces, summed
        metadata["readout_psp_tau_s"] = psp
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
