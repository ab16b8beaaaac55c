"""Integer deployment artifact of a baked binary / ternary spiking network (``model_int.npz``),
run by the pure-NumPy :mod:`cbpqsnn.deploy.numpy_reference` (its docstring: the semantics).

Each quantized layer's weights are ``W = a_l C`` with integer codes ``C`` (binary {-1, 1},
ternary {-1, 0, 1}). Its inputs are ``f X`` with integer ``X``: spikes (``f = 1``, or the IF
neuron's amplitude ``V_th``), sums of spikes after a residual ADD, maxima of them after a max pool,
or spike counts after a ``k x k`` average pool (``f`` times ``1 / k^2``). With a batch-norm after the
layer (per output channel ``c``: ``s_c (W x) + b_c``, folded, :class:`~cbpqsnn.deploy.stages.Synapse`)
its current is ``u_c acc + b_c`` with the integer accumulation ``acc = C X`` and the per-channel
unit ``u_c = a_l f s_c``. The next neuron runs on ``v / u_c``: bias ``b_c / u_c``, threshold
``V_th / u_c``, initial potential ``v_0 / u_c``, the same decay -- the same spikes, with no
multiplication in the quantized layers. A channel with ``s_c < 0`` has its codes negated (so
``u_c > 0`` and the threshold test keeps its direction); one with ``s_c = 0`` gets zero codes.
TSSL-BP's PSP filters (of the input and of every neuron's spikes) commute with the bias-free
layers between two neurons: each moves onto the next neuron's accumulated current (a synaptic
filter, ``synapse_tau_s``), so the quantized layers still accumulate spikes; the ``1.1`` of its
scaled sum pools joins ``f``. The first layer and the classifier stay FP32 (docs/algorithm.md
section 1), as float weights (the BN and ``f`` folded in); the conversion's fixed pooling conv is a sum
pool with a per-channel unit.

Bits (:func:`bit_widths`): an accumulator holds at most ``sum |C| x_max`` over a neuron's fan-in
(``x_max`` = 1 for spikes, ``k^2`` after a sum pool, the sum of both branches' after an ADD):
``ceil(log2(bound + 1)) + 1`` signed bits; the membrane ``v / u`` is bounded by ``bound + |b / u|``
(PLIF: a convex combination), that over ``1 - decay`` (STBP's LIF), or that plus the threshold (IF,
reset by subtraction) -- its integer part; the NumPy reference keeps it in float64 because
``b / u`` and ``V_th / u`` are not integers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cbpqsnn.conversion.network import AvgPoolConv
from cbpqsnn.deploy.nir_export import input_shift
from cbpqsnn.deploy.stages import Branch, Flatten, Merge, Neuron, Pool, Synapse, Trace, psp_carrier, stages
from cbpqsnn.nets.tssl_layers import ScaledSumPool
from cbpqsnn.neurons import STBPLIF, IFNeuron, MultiStepNeuron, ParametricLIF, TSSLNeuron

INTEGER_FACTORS = ((-1.0, 1.0), (-1.0, 0.0, 1.0))  # binary, ternary: codes are the factors


def _codes(weight: Tensor, levels: Tensor) -> tuple[np.ndarray, float]:
    """Integer codes and the scale ``a`` of a layer on ``a * F`` (F binary or ternary)."""
    scale = float(levels.abs().max())
    factors = tuple(float(f) for f in (levels / scale).tolist())
    if factors not in INTEGER_FACTORS:
        shown = str(factors) if len(factors) <= 5 else \
            f"{len(factors)} factors from {factors[0]:g} to {factors[-1]:g}"  # int8: not 255 numbers
        raise ValueError(f"the integer artifact is for binary / ternary levels, got {shown}")
    codes = torch.round(weight.detach().double() / scale)
    if not torch.equal((codes * scale).to(weight.dtype), weight.detach()):
        raise ValueError("weights are not on their levels a * F: bake the model first")
    return codes.to(torch.int8).numpy(), scale


def _neuron_op(neuron: MultiStepNeuron, name: str) -> tuple[dict[str, Any], float, float]:
    """The neuron's operation (without its arrays), its threshold and its spike amplitude."""
    if isinstance(neuron, TSSLNeuron):  # its input PSP filter is added by build (synapse_tau_s)
        c = neuron.constants
        return {"op": "neuron", "name": name, "model": "lif", "decay": 1 - 1 / c.tau_m}, c.v_threshold, 1.0
    if isinstance(neuron, STBPLIF):
        return {"op": "neuron", "name": name, "model": "lif", "decay": neuron.decay}, neuron.v_threshold, 1.0
    if isinstance(neuron, ParametricLIF):
        if neuron.v_reset != 0.0:
            raise NotImplementedError(f"{name}: PLIF with v_reset != 0")
        k = float(torch.sigmoid(neuron.w.detach().double()))
        return {"op": "neuron", "name": name, "model": "plif", "k": k}, neuron.v_threshold, 1.0
    if isinstance(neuron, IFNeuron):
        threshold = float(neuron.threshold)
        return {"op": "neuron", "name": name, "model": "if"}, threshold, threshold
    raise NotImplementedError(f"no integer mapping for the neuron {type(neuron).__name__}; "
                              "mapped: STBPLIF, ParametricLIF, IFNeuron, TSSLNeuron")


def build(net: nn.Module, levels: dict[str, Tensor], T: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Manifest and arrays of the baked ``net`` (:func:`~cbpqsnn.deploy.stages.stages`);
    ``levels`` = the quantized layers (``layers.<i>...``, names inside ``net``) and their levels."""
    ops: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    factor = 1.0  # the next layer's input is factor x an integer tensor
    unit: np.ndarray | None = None  # pending per-channel unit and bias, folded into the next neuron
    bias: np.ndarray | None = None
    kept: dict[str, float] = {}
    psp: float | None = None  # TSSL-BP: the PSP filter the next neuron's current carries
    chain = stages(net)
    for index, stage in enumerate(chain):
        name = stage.name
        if isinstance(stage, Synapse):
            layer = stage.layer
            op: dict[str, Any] = {"op": "conv" if isinstance(layer, nn.Conv2d) else "linear", "name": name,
                                  "integer": name in levels}
            if isinstance(layer, nn.Conv2d):
                if layer.stride[0] != layer.stride[1] or layer.padding[0] != layer.padding[1] \
                        or layer.dilation != (1, 1) or layer.groups != 1:
                    raise NotImplementedError(f"{name}: square stride / padding, no dilation or groups")
                op.update(stride=layer.stride[0], padding=layer.padding[0])
            s, b = (t.numpy() for t in stage.folded())
            b = b + input_shift(chain, index, T)
            if op["integer"]:
                codes, scale = _codes(layer.weight, levels[name])
                sign = np.sign(s).reshape(-1, *[1] * (codes.ndim - 1)).astype(np.int8)
                arrays[f"{name}.codes"] = codes * sign
                unit = np.where(s == 0, 1.0, np.abs(s) * scale * factor)
                bias = b
            else:  # FP32 layer: float weights (BN and input factor folded), bias applied here
                weight = layer.weight.detach().double().numpy() * factor
                arrays[f"{name}.weight"] = weight * s.reshape(-1, *[1] * (weight.ndim - 1))
                arrays[f"{name}.bias"] = b
                unit, bias = None, None
            ops.append(op)
        elif isinstance(stage, Pool):
            pool = stage.module
            k = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
            if isinstance(pool, nn.AvgPool2d | nn.MaxPool2d) and (
                    pool.stride not in (k, (k, k)) or pool.padding not in (0, (0, 0))):
                raise NotImplementedError(f"{name}: pools with stride = kernel and no padding")
            if isinstance(pool, nn.MaxPool2d):  # max(f X) = f max(X) for f > 0
                ops.append({"op": "maxpool", "name": name, "kernel": k})
                continue
            ops.append({"op": "sumpool", "name": name, "kernel": k})
            if isinstance(pool, AvgPoolConv):  # a fixed pooling conv feeding its own neuron
                weight = pool.weight.detach().double().reshape(pool.weight.shape[0], -1).numpy()
                if not np.all(weight == weight[:, :1]):
                    raise NotImplementedError(f"{name}: a pooling conv with unequal weights in a channel")
                unit = weight[:, 0] * factor
                bias = pool.bias.detach().double().numpy() + input_shift(chain, index, T)
            elif isinstance(pool, ScaledSumPool):
                factor *= pool.scale
            else:
                factor /= k * k
        elif isinstance(stage, Trace):
            psp = psp_carrier(stage)
        elif isinstance(stage, Flatten):
            ops.append({"op": "flatten", "name": name})
        elif isinstance(stage, Neuron):
            op, threshold, amplitude = _neuron_op(stage.module, name)
            channels = (-1, 1, 1) if ops[-1]["op"] in ("conv", "sumpool") else (-1,)
            scale = (unit if unit is not None else np.ones(1)).reshape(channels)
            arrays[f"{name}.threshold"] = threshold / scale
            if bias is not None:
                arrays[f"{name}.bias"] = bias.reshape(channels) / scale
            if isinstance(stage.module, IFNeuron) and bool(stage.module.v_init.abs().sum()):
                arrays[f"{name}.v_init"] = stage.module.v_init.detach().double().numpy() / scale
            op.update(bias=bias is not None, v_init=f"{name}.v_init" in arrays)
            if psp is not None:
                op["synapse_tau_s"] = psp
            ops.append(op)
            psp = psp_carrier(stage)
            factor, unit, bias = amplitude, None, None
        elif isinstance(stage, Branch):
            kept[name] = factor
            ops.append({"op": "keep", "name": name})
        elif isinstance(stage, Merge):
            if kept.pop(name) != factor:
                raise NotImplementedError(f"{name}: residual branches of different spike amplitudes")
            ops.append({"op": "add", "name": name})
    if psp is not None:  # TSSL-BP's readout: the output spikes' PSP traces
        ops.append({"op": "trace", "name": "readout", "tau_s": psp})
    return {"T": int(T), "in_shape": list(net.in_shape), "ops": ops}, arrays


def bit_widths(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Per integer layer: signed bits of the accumulator and of the membrane's integer part."""
    widths: dict[str, dict[str, int]] = {}
    x_max, kept = 1, {}
    pending: tuple[str, int] | None = None  # the integer layer waiting for its neuron, its bound
    for op in manifest["ops"]:
        kind = op["op"]
        if kind == "sumpool":
            x_max *= op["kernel"] ** 2
        elif kind == "keep":
            kept[op["name"]] = x_max
        elif kind == "add":
            x_max += kept.pop(op["name"])
        elif kind == "neuron":
            if pending is not None:
                layer, bound = pending
                name = op["name"]
                bias = float(np.abs(arrays.get(f"{name}.bias", np.zeros(1))).max())
                membrane = bound + bias
                if op["model"] == "lif":
                    membrane /= 1 - op["decay"]
                elif op["model"] == "if":
                    membrane += float(np.max(arrays[f"{name}.threshold"]))
                widths[layer] = {"accumulator_bits": math.ceil(math.log2(bound + 1)) + 1,
                                 "membrane_integer_bits": math.ceil(math.log2(membrane + 1)) + 1}
            x_max, pending = 1, None
        elif op.get("integer"):
            codes = arrays[f"{op['name']}.codes"].astype(np.int64)
            fan_in = np.abs(codes).reshape(codes.shape[0], -1).sum(axis=1)
            pending = (op["name"], int(fan_in.max()) * x_max)
    return widths


def save(path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """``model_int.npz``: the arrays and the manifest (a JSON string), written atomically."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, manifest=np.array(json.dumps(manifest)), **arrays)
    tmp.replace(path)
