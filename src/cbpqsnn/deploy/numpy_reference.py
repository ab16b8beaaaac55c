"""Pure-NumPy reference inference of an integer deployment artifact (no torch): what a C or FPGA
implementation follows. The artifact (``model_int.npz``, written by :mod:`cbpqsnn.deploy.integer`)
is a chain of operations, run once per time step on the same static input:

- ``conv`` / ``linear`` with ``codes`` (int8 level codes, binary {-1, 1} / ternary {-1, 0, 1}):
  ``acc = codes * x`` with integer inputs (spikes, or spike counts after a sum pool) accumulated in
  int64 -- exact; the layer's scale is folded into the next neuron (see ``lif``);
- ``conv`` / ``linear`` with ``weight`` (the FP32 first layer and classifier): float64;
- ``sumpool``: ``k x k`` sums of spikes (an average pool whose ``1 / k^2`` is folded into the next
  layer's unit);
- ``flatten``;
- ``lif``: ``v[t] = decay v[t-1] (1 - o[t-1]) + acc[t] + bias``, ``o[t] = 1[v[t] > threshold]``
  (STBP's LIF), with ``bias`` and ``threshold`` divided by the unit ``s`` of the accumulation
  (``s = a_l / k^2``: the layer's level scale times the preceding pools' factors), so the membrane
  is ``u / s`` and the spikes are exactly the network's.

The prediction is the argmax of the output layer's spike count over ``T`` steps.

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


def run(manifest: dict[str, Any], arrays: dict[str, np.ndarray], inputs: np.ndarray) -> np.ndarray:
    """Spike counts of the output layer, ``[B, classes]`` (int64), for static ``inputs`` ``[B, ...]``."""
    state: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    counts = None
    for _ in range(manifest["T"]):
        x: np.ndarray = inputs
        for op in manifest["ops"]:
            kind = op["op"]
            if kind in ("conv", "linear"):
                x = _affine(op, arrays, x)
            elif kind == "sumpool":
                x = _sumpool(x, op["kernel"])
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)
            elif kind == "lif":
                current = x + arrays[f"{op['name']}.bias"] if op["bias"] else x.astype(np.float64)
                if op["name"] in state:
                    v, o = state[op["name"]]
                    v = op["decay"] * v * (1 - o) + current
                else:
                    v = np.asarray(current, dtype=np.float64)
                o = (v > arrays[f"{op['name']}.threshold"]).astype(np.int64)
                state[op["name"]] = (v, o)
                x = o
            else:
                raise ValueError(f"unknown operation {kind!r} in the artifact")
        counts = x if counts is None else counts + x
    return counts


def predict(path: str, inputs: np.ndarray) -> np.ndarray:
    manifest, arrays = load(path)
    return run(manifest, arrays, inputs).argmax(axis=1)


if __name__ == "__main__":
    print(predict(sys.argv[1], np.load(sys.argv[2])).tolist())
