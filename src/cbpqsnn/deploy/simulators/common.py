"""What every simulator of ``model.nir`` shares: NIR's discrete-time reading of a node (forward Euler
with the graph's ``dt``, as :mod:`cbpqsnn.deploy.nir_export` writes it), the two nodes no reader
maps (``Threshold``, ``AvgPool2d``), the converted network's IF metadata, the input feeding and the
readout (the output summed over the ``T`` steps, after the PSP filter of
``metadata["readout_psp_tau_s"]`` if the graph has one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


class NotExpressible(NotImplementedError):
    """The simulator cannot compute a node of the graph as NIR (or its metadata) defines it."""


class Heaviside(torch.nn.Module):
    """``nir.Threshold``: ``1[x > threshold]`` (no reader here maps the node)."""

    def __init__(self, threshold: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.as_tensor(np.asarray(threshold), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


class BatchFlatten(torch.nn.Flatten):
    """``nir.Flatten``: its dimensions exclude the batch, which a batched run has in front."""

    def __init__(self, node: Any) -> None:
        start, end = int(node.start_dim), int(node.end_dim)
        super().__init__(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)


def avg_pool(node: Any) -> torch.nn.AvgPool2d:
    """``nir.AvgPool2d`` (nirtorch's own mapping; neither Sinabs' nor Norse's reader has one)."""
    return torch.nn.AvgPool2d(tuple(int(k) for k in node.kernel_size),
                              tuple(int(s) for s in node.stride), tuple(int(p) for p in node.padding))


@dataclass(frozen=True)
class Euler:
    """One Euler step of a leaky node as a discrete update ``v <- leak v + gain I + drift``."""

    leak: np.ndarray
    gain: np.ndarray
    drift: np.ndarray


def lif_step(node: Any, dt: float) -> Euler:
    """``nir.LIF``: ``tau dv/dt = (v_leak - v) + r I`` -> ``v = (1 - dt/tau) v + (dt/tau) (v_leak + r I)``."""
    k = dt / np.asarray(node.tau, np.float64)
    return Euler(1.0 - k, k * np.asarray(node.r, np.float64), k * np.asarray(node.v_leak, np.float64))


def synapse_step(node: Any, dt: float) -> Euler:
    """``nir.CubaLIF``'s current: ``i = (1 - dt/tau_syn) i + (dt/tau_syn) w_in I``."""
    k = dt / np.asarray(node.tau_syn, np.float64)
    return Euler(1.0 - k, k * np.asarray(node.w_in, np.float64), np.zeros_like(k))


def cuba_membrane_step(node: Any, dt: float) -> Euler:
    """``nir.CubaLIF``'s membrane, fed by the current ``i``: ``v = (1 - dt/tau_mem) v +
    (dt/tau_mem) (v_leak + r i)``."""
    k = dt / np.asarray(node.tau_mem, np.float64)
    return Euler(1.0 - k, k * np.asarray(node.r, np.float64), k * np.asarray(node.v_leak, np.float64))


@dataclass(frozen=True)
class IFExtension:
    """The converted network's IF beyond NIR 1.0 (:func:`cbpqsnn.deploy.nir_export.if_metadata`)."""

    subtract: bool
    v_init: np.ndarray | None


def if_extension(node: Any, use_metadata: bool) -> IFExtension:
    """The reset and initial potential of a ``nir.IF``: from its metadata if ``use_metadata`` and the
    node has it, else NIR's own (reset to ``v_reset``, start at 0)."""
    meta = getattr(node, "metadata", None) or {}
    if not use_metadata or meta.get("reset") is None:
        return IFExtension(False, None)
    reset = meta["reset"].decode() if isinstance(meta["reset"], bytes) else str(meta["reset"])
    v_init = meta.get("v_init")
    return IFExtension(reset == "subtract", None if v_init is None else np.asarray(v_init, np.float32))


def has_if_metadata(graph: Any) -> bool:
    import nir

    return any(isinstance(node, nir.IF) and (node.metadata or {}).get("reset") is not None
               for node in graph.nodes.values())


def in_shape(graph: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in graph.nodes["input"].input_type["input"])


def frames(graph: Any, inputs: torch.Tensor) -> bool:
    """Event frames ``[B, T, *in_shape]`` (one per step), else a static ``[B, *in_shape]``."""
    return inputs.dim() == len(in_shape(graph)) + 2


def step_input(graph: Any, inputs: torch.Tensor, t: int) -> torch.Tensor:
    """The input at step ``t``: frame ``t``, or the static input (direct encoding)."""
    return inputs[:, t] if frames(graph, inputs) else inputs


def sequence(graph: Any, inputs: torch.Tensor, T: int) -> torch.Tensor:
    """All ``T`` steps' inputs, ``[B, T, *in_shape]``."""
    if frames(graph, inputs):
        return inputs[:, :T]
    return inputs.unsqueeze(1).expand(-1, T, *inputs.shape[1:])


def readout(graph: Any, steps: np.ndarray) -> np.ndarray:
    """``steps`` ``[B, T, classes]`` summed over time, after the readout PSP filter
    ``a = (1 - 1/tau_s) a + s / tau_s`` if the graph's metadata asks for it."""
    steps = np.asarray(steps, np.float64)
    tau_s = graph.metadata.get("readout_psp_tau_s")
    if tau_s is not None:
        filtered = np.empty_like(steps)
        for t in range(steps.shape[1]):
            filtered[:, t] = steps[:, t] / tau_s + ((1 - 1 / tau_s) * filtered[:, t - 1] if t else 0.0)
        steps = filtered
    return steps.sum(1)
