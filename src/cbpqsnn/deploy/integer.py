"""Integer deployment artifact of a baked binary / ternary spiking network (``model_int.npz``),
run by the pure-NumPy :mod:`cbpqsnn.deploy.numpy_reference` (its docstring: the semantics).

Each quantized layer's weights are ``W = a_l C`` with integer codes ``C`` (binary {-1, 1},
ternary {-1, 0, 1}); its inputs are spikes or, after ``k x k`` average pools, spike counts times
``1 / k^2``. So its current is ``s acc + b`` with the integer accumulation ``acc = C x`` and the
unit ``s = a_l / k^2``, and the next LIF runs on ``u / s``: bias ``b / s``, threshold
``V_th / s``, the same decay -- the same spikes, with no multiplication in the quantized layers.
The first layer and the classifier stay FP32 (``cbp.md`` section 1), as float weights.

Bits (:func:`bit_widths`): an accumulator holds at most ``sum |C| x_max`` over a neuron's fan-in
(``x_max`` = 1 for spikes, ``k^2`` after a sum pool): ``ceil(log2(bound + 1)) + 1`` signed bits; the
membrane ``u / s`` is bounded by ``(bound + |b / s|) / (1 - decay)`` (integer part; the NumPy
reference keeps it in float64 because ``b / s`` and ``V_th / s`` are not integers).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cbpqsnn.nets.feedforward import SpikingNet
from cbpqsnn.neurons import STBPLIF

INTEGER_FACTORS = ((-1.0, 1.0), (-1.0, 0.0, 1.0))  # binary, ternary: codes are the factors


def _codes(weight: Tensor, levels: Tensor) -> tuple[np.ndarray, float]:
    """Integer codes and the scale ``a`` of a layer on ``a * F`` (F binary or ternary)."""
    scale = float(levels.abs().max())
    factors = tuple(float(f) for f in (levels / scale).tolist())
    if factors not in INTEGER_FACTORS:
        raise ValueError(f"the integer artifact is for binary / ternary levels, got factors {factors}")
    codes = torch.round(weight.detach().double() / scale)
    if not torch.equal((codes * scale).to(weight.dtype), weight.detach()):
        raise ValueError("weights are not on their levels a * F: bake the model first")
    return codes.to(torch.int8).numpy(), scale


def build(net: SpikingNet, levels: dict[str, Tensor], T: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Manifest and arrays of ``net`` (a baked :class:`SpikingNet` of STBP LIF neurons);
    ``levels`` = the quantized layers (``layers.<i>``, names inside ``net``) and their levels."""
    ops: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    pool = 1.0  # product of the 1 / k^2 of the sum pools since the last neuron
    unit, bias = 1.0, None  # the pending affine layer's unit s and bias (folded into the neuron)
    for index, layer in enumerate(net.layers):
        name = f"layers.{index}"
        if isinstance(layer, nn.Dropout):
            continue
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            op: dict[str, Any] = {"op": "conv" if isinstance(layer, nn.Conv2d) else "linear", "name": name,
                                  "integer": name in levels}
            if isinstance(layer, nn.Conv2d):
                if layer.stride[0] != layer.stride[1] or layer.padding[0] != layer.padding[1] \
                        or layer.dilation != (1, 1) or layer.groups != 1:
                    raise NotImplementedError(f"{name}: square stride / padding, no dilation or groups")
                op.update(stride=layer.stride[0], padding=layer.padding[0])
            b = layer.bias.detach().double().numpy() if layer.bias is not None else None
            if op["integer"]:
                arrays[f"{name}.codes"], scale = _codes(layer.weight, levels[name])
                unit, bias = scale * pool, b
            else:  # FP32 layer: float weights with the pools' factor, bias applied here
                arrays[f"{name}.weight"] = layer.weight.detach().double().numpy() * pool
                arrays[f"{name}.bias"] = b if b is not None else np.zeros(layer.weight.shape[0])
                unit, bias = 1.0, None
            ops.append(op)
        elif isinstance(layer, nn.AvgPool2d):
            k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
            if layer.stride not in (k, (k, k)) or layer.padding not in (0, (0, 0)):
                raise NotImplementedError(f"{name}: average pool with stride = kernel, no padding")
            ops.append({"op": "sumpool", "name": name, "kernel": k})
            pool /= k * k
        elif isinstance(layer, nn.Flatten):
            ops.append({"op": "flatten", "name": name})
        elif isinstance(layer, STBPLIF):
            arrays[f"{name}.threshold"] = np.array(layer.v_threshold / unit)
            if bias is not None:
                shape = (-1, 1, 1) if ops[-1]["op"] == "conv" else (-1,)
                arrays[f"{name}.bias"] = (bias / unit).reshape(shape)
            ops.append({"op": "lif", "name": name, "decay": layer.decay, "bias": bias is not None,
                        "unit": unit})
            pool, unit, bias = 1.0, 1.0, None
        else:
            raise NotImplementedError(f"no integer mapping for layer {index} ({type(layer).__name__})")
    return {"T": int(T), "in_shape": list(net.in_shape), "ops": ops}, arrays


def bit_widths(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Per integer layer: signed bits of the accumulator and of the membrane's integer part."""
    widths: dict[str, dict[str, int]] = {}
    x_max = 1
    for i, op in enumerate(manifest["ops"]):
        if op["op"] == "sumpool":
            x_max *= op["kernel"] ** 2
        elif op["op"] == "lif":
            x_max = 1
        elif op.get("integer"):
            codes = arrays[f"{op['name']}.codes"].astype(np.int64)
            fan_in = np.abs(codes).reshape(codes.shape[0], -1).sum(axis=1)
            bound = int(fan_in.max()) * x_max
            neuron = manifest["ops"][i + 1]
            bias = float(np.abs(arrays.get(f"{neuron['name']}.bias", np.zeros(1))).max())
            membrane = (bound + bias) / (1 - neuron["decay"])
            widths[op["name"]] = {"accumulator_bits": math.ceil(math.log2(bound + 1)) + 1,
                                  "membrane_integer_bits": math.ceil(math.log2(membrane + 1)) + 1}
    return widths


def save(path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """``model_int.npz``: the arrays and the manifest (a JSON string), written atomically."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, manifest=np.array(json.dumps(manifest)), **arrays)
    tmp.replace(path)
