"""Pure-NumPy reference inference of an integer deployment artifact (no torch): what a C or FPGA
implementation follows. The artifact (``model_int.npz``, written by :mod:`cbpqsnn.deploy.integer`)
is a chain of operations, run once per time step on the same static input (or on that step's event
frame):

- ``conv`` / ``linear`` with ``codes`` (int8 level codes, binary {-1, 1} / ternary {-1, 0, 1}):
  ``acc = codes * x`` with integer inputs (spikes, their sums and maxima, spike counts after a sum
  pool) accumulated in int64 -- exact; the layer's scale is folded into the next neuron;
- ``conv`` / ``linear`` with ``weight`` (the FP32 first layer and classifier): float64;
- ``sumpool`` (``k x k`` sums: an average pool's ``1 / k^2`` is folded into the next unit),
  ``maxpool``, ``flatten``;
- ``trace``: the PSP filter of the output spikes (TSSL-BP's readout);
- ``keep`` / ``add``: a residual block's input is kept and added to the block's output;
- ``neuron``, on the current ``x = acc + bias`` in the unit of the accumulation (bias, threshold
  and initial potential are divided by it), ``o`` the spikes:

  - ``lif`` (STBP): ``v[t] = decay v[t-1] (1 - o[t-1]) + x[t]``, ``o[t] = 1[v[t] > threshold]``;
  - ``plif`` (surrogate gradient): ``h[t] = v[t-1] + k (x[t] - v[t-1])``, ``o[t] = 1[h[t] >=
    threshold]``, ``v[t] = h[t] (1 - o[t])``, ``v[-1] = 0``;
  - with ``synapse_tau_s`` (TSSL-BP), ``x`` first passes the PSP filter ``i[t] = (1 - 1/tau_s)
    i[t-1] + x[t] / tau_s`` (the previous layer's trace, moved past the linear layers);
  - ``if`` (converted network): ``h[t] = v[t-1] + x[t]``, ``o[t] = 1[h[t] >= threshold]``,
    ``v[t] = h[t] - threshold o[t]`` (reset by subtraction; ``reset: "zero"``: ``v[t] = h[t] (1 -
    o[t])``, NIR's IF), ``v[-1] = v_init``.

The prediction is the argmax of the output summed over ``T`` steps (the output layer's spike
count, or the FP32 classifier's summed outputs).

    python -m cbpqsnn.deploy.numpy_reference model_int.npz inputs.npy   # prints the predictions
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np


def load(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The artifact's manifest (JSON) and its arrays."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "manifest"}
        manifest = json.loads(str(data["manifest"]))
    return manifest, arrays


def _conv2d(x: np.ndarray, weight: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """``[B, C, H, W] * [O, C, k, k] -> [B, O, H', W']`` (cross-correlation, as torch)."""
    k = weight.shape[-1]
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("bchwij,ocij->bohw", windows, weight, optimize=True)


def _sumpool(x: np.ndarray, k: int) -> np.ndarray:
    b, c, h, w = x.shape
    return x[:, :, : h // k * k, : w // k * k].reshape(b, c, h // k, k, w // k, k).sum(axis=(3, 5))


def _maxpool(x: np.ndarray, k: int) -> np.ndarray:
    b, c, h, w = x.shape
    return x[:, :, : h // k * k, : w // k * k].reshape(b, c, h // k, k, w // k, k).max(axis=(3, 5))


def _affine(op: dict[str, Any], arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    key = op["name"]
    if op["integer"]:
        weight, x = arrays[f"{key}.codes"].astype(np.int64), x.astype(np.int64)
    else:
        weight, x = arrays[f"{key}.weight"].astype(np.float64), x.astype(np.float64)
    if op["op"] == "conv":
        out = _conv2d(x, weight, op["stride"], op["padding"])
        return out if op["integer"] else out + arrays[f"{key}.bias"][None, :, None, None]
    out = x @ weight.T
    return out if op["integer"] else out + arrays[f"{key}.bias"][None]


def _trace(key: str, tau_s: float, x: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
    """``a[t] = (1 - 1/tau_s) a[t-1] + x[t] / tau_s``, ``a[-1] = 0``."""
    a = x / tau_s if key not in state else (1 - 1 / tau_s) * state[key] + x / tau_s
    state[key] = a
    return a


def _neuron(op: dict[str, Any], arrays: dict[str, np.ndarray], x: np.ndarray,
            state: dict[str, np.ndarray]) -> np.ndarray:
    name, model = op["name"], op["model"]
    current = x + arrays[f"{name}.bias"] if op["bias"] else x.astype(np.float64)
    if op.get("synapse_tau_s"):  # TSSL-BP: the PSP-filtered current
        current = _trace(f"{name}.synapse", op["synapse_tau_s"], current, state)
    threshold = arrays[f"{name}.threshold"]
    v = state.get(name)
    if model == "lif":
        v = current if v is None else op["decay"] * v + current  # v: the membrane after the reset
        spikes = v > threshold
        state[name] = np.where(spikes, 0.0, v)
    elif model == "plif":
        v = np.zeros_like(current) if v is None else v
        h = v + op["k"] * (current - v)
        spikes = h >= threshold
        state[name] = np.where(spikes, 0.0, h)
    elif model == "if":
        if v is None:
            v = arrays[f"{name}.v_init"] if op["v_init"] else 0.0
        h = v + current
        spikes = h >= threshold
        subtract = op.get("reset", "subtract") == "subtract"
        state[name] = h - threshold * spikes if subtract else np.where(spikes, 0.0, h)
    else:
        raise ValueError(f"unknown neuron model {model!r} in the artifact")
    return spikes.astype(np.int64)


def run(manifest: dict[str, Any], arrays: dict[str, np.ndarray], inputs: np.ndarray) -> np.ndarray:
    """The output summed over the ``T`` steps, ``[B, classes]`` (int64 spike counts, or float64 for
    an FP32 classifier without a neuron), for static ``inputs`` ``[B, *in_shape]`` or event frames
    ``[B, T, *in_shape]``."""
    frames = inputs.ndim == len(manifest["in_shape"]) + 2
    state: dict[str, np.ndarray] = {}
    total = None
    for t in range(manifest["T"]):
        x: np.ndarray = inputs[:, t] if frames else inputs
        kept: dict[str, np.ndarray] = {}
        for op in manifest["ops"]:
            kind = op["op"]
            if kind in ("conv", "linear"):
                x = _affine(op, arrays, x)
            elif kind == "sumpool":
                x = _sumpool(x, op["kernel"])
            elif kind == "maxpool":
                x = _maxpool(x, op["kernel"])
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)
            elif kind == "keep":
                kept[op["name"]] = x
            elif kind == "add":
                x = x + kept.pop(op["name"])
            elif kind == "neuron":
                x = _neuron(op, arrays, x, state)
            elif kind == "trace":
                x = _trace(op["name"], op["tau_s"], x.astype(np.float64), state)
            else:
                raise ValueError(f"unknown operation {kind!r} in the artifact")
        total = x if total is None else total + x
    return total


def predict(path: str, inputs: np.ndarray) -> np.ndarray:
    manifest, arrays = load(path)
    return run(manifest, arrays, inputs).argmax(axis=1)


if __name__ == "__main__":
    print(predict(sys.argv[1], np.load(sys.argv[2])).tolist())
