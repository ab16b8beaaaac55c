"""Sinabs 3.1 reading ``model.nir``: ``sinabs.nir._import_sinabs_module`` (what ``sinabs.from_nir``
uses) for the nodes it reads as NIR defines them (``Affine``, ``Conv2d``, ``SumPool2d``,
``Flatten``), Sinabs' own neuron layers for the rest, wired by nirtorch and run the Sinabs way: a
batch's whole ``T``-step sequence at once, ``[B*T, ...]`` (the ``*Squeeze`` layers loop over time
inside). Where Sinabs' reader departs from NIR, the neurons are built here instead (documented in
docs/deploying.md):

- ``nir.LIF``: the reader passes NIR's ``tau`` (seconds) as Sinabs' ``tau_mem`` (steps), drops
  ``r`` and ``v_reset``, resets by subtraction, emits several spikes per step (``MultiSpike``) and
  fails on a multi-dimensional ``v_leak`` (``any`` over an array). Built here: ``LIFSqueeze`` with
  ``alpha_mem`` = NIR's Euler leak ``1 - dt/tau``, fed ``(dt/tau) (r I + v_leak)``, one spike per
  step (``SingleSpike``) at ``v > v_threshold`` (Sinabs tests ``>=``: the threshold is moved up by
  one float32 ulp), ``MembraneReset`` to ``v_reset``.
- ``nir.CubaLIF``: no reader mapping. ``LIFSqueeze`` with a synaptic state: Sinabs integrates
  ``i = alpha_syn (i + x)`` and adds ``i`` to ``v`` unscaled, so ``x`` is NIR's input times
  ``(dt/tau_syn) w_in (dt/tau_mem) r / alpha_syn``.
- ``nir.IF``: the reader builds a subtractive-reset, multi-spike ``IAF`` clipped at ``-v_threshold``
  (not NIR's IF). Built here: ``IAFSqueeze``, ``SingleSpike``, no clipping; reset to ``v_reset``,
  start at 0 (NIR), or -- with the node's metadata (:func:`cbpqsnn.deploy.nir_export.if_metadata`,
  ``use_metadata``) -- ``MembraneSubtract``, ``>=``, starting at the calibrated ``v_init``: the
  converted network exactly.
- ``nir.Threshold`` and ``nir.AvgPool2d``: no reader mapping (``common``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cbpqsnn.deploy.simulators.common import (
    Euler,
    Heaviside,
    NotExpressible,
    avg_pool,
    cuba_membrane_step,
    if_extension,
    lif_step,
    readout,
    sequence,
    synapse_step,
)

NAME = "sinabs"


def _tensor(a: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, np.float32))


def _strictly_above(threshold: Any) -> torch.Tensor:
    """The float32 threshold ``th'`` with ``v >= th'`` exactly when ``v > threshold``."""
    th = np.asarray(threshold, np.float32)
    return _tensor(np.nextafter(th, np.float32(np.inf)))


def _scalar(a: Any, what: str) -> float:
    values = np.unique(np.asarray(a, np.float32))
    if values.size != 1:
        raise NotExpressible(f"Sinabs takes one {what} per layer; the node has {values.size}")
    return float(values[0])


class _InputMap(torch.nn.Module):
    """``x -> gain x + drift``: the part of NIR's Euler step a Sinabs neuron does not do."""

    def __init__(self, gain: np.ndarray, drift: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("gain", _tensor(gain))
        self.register_buffer("drift", _tensor(drift))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * x + self.drift


def _fed(step: Euler, neuron: torch.nn.Module) -> torch.nn.Module:
    if np.allclose(step.gain, 1.0, rtol=0, atol=1e-6) and not np.any(step.drift):  # r dt / tau = 1
        return neuron
    return torch.nn.Sequential(_InputMap(step.gain, step.drift), neuron)


def _layers(T: int, fresh: bool) -> tuple[type, type]:
    """Sinabs' ``LIFSqueeze`` / ``IAFSqueeze``; ``fresh``: each call starts from rest (0 or the
    layer's ``v_init``) instead of the state the previous call left."""
    import sinabs.layers as sl

    if not fresh:
        return sl.LIFSqueeze, sl.IAFSqueeze

    class FromRest:
        v_init: torch.Tensor | None = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.init_state_with_shape((x.shape[0] // T, *x.shape[1:]))
            if self.v_init is not None:
                self.v_mem = self.v_init.expand_as(self.v_mem).clone()
            return super().forward(x)

    return (type("LIFSqueeze", (FromRest, sl.LIFSqueeze), {}),
            type("IAFSqueeze", (FromRest, sl.IAFSqueeze), {}))


def _reset(v_reset: Any) -> Any:
    from sinabs.activation import MembraneReset

    if np.any(np.asarray(v_reset)):  # MembraneReset adds reset_value to every neuron, spiking or not
        raise NotExpressible("Sinabs' MembraneReset is exact only for v_reset = 0")
    return MembraneReset()


def node_map(graph: Any, T: int, use_metadata: bool = True, fresh: bool = True) -> dict[Any, Any]:
    """The node conversions (``nirtorch.nir_to_torch``'s ``node_map``) for ``graph`` run ``T`` steps."""
    import nir
    from sinabs.activation import MembraneSubtract, SingleSpike
    from sinabs.nir import _import_sinabs_module

    dt = float(graph.metadata["dt"])
    lif_layer, iaf_layer = _layers(T, fresh)

    def lif(node: Any) -> torch.nn.Module:
        step = lif_step(node, dt)
        neuron = lif_layer(tau_mem=1.0, train_alphas=True, spike_threshold=_strictly_above(node.v_threshold),
                           spike_fn=SingleSpike, reset_fn=_reset(node.v_reset), norm_input=False,
                           num_timesteps=T)
        neuron.alpha_mem.data = _tensor(step.leak)
        return _fed(step, neuron)

    def cuba(node: Any) -> torch.nn.Module:
        synapse, membrane = synapse_step(node, dt), cuba_membrane_step(node, dt)
        if np.any(membrane.drift) or not np.all(synapse.leak > 0):
            raise NotExpressible("Sinabs' synaptic LIF has no v_leak and needs tau_syn > dt")
        neuron = lif_layer(tau_mem=1.0, tau_syn=1.0, train_alphas=True,
                           spike_threshold=_strictly_above(node.v_threshold), spike_fn=SingleSpike,
                           reset_fn=_reset(node.v_reset), norm_input=False, num_timesteps=T)
        neuron.alpha_mem.data, neuron.alpha_syn.data = _tensor(membrane.leak), _tensor(synapse.leak)
        gain = synapse.gain * membrane.gain / synapse.leak
        return _fed(Euler(membrane.leak, gain, np.zeros_like(gain)), neuron)

    def integrate_fire(node: Any) -> torch.nn.Module:
        ext = if_extension(node, use_metadata)
        threshold = _scalar(node.v_threshold, "threshold")
        neuron = iaf_layer(spike_threshold=torch.tensor(threshold) if ext.subtract
                           else _strictly_above(threshold),
                           spike_fn=SingleSpike, reset_fn=MembraneSubtract() if ext.subtract
                           else _reset(node.v_reset), min_v_mem=None, num_timesteps=T)
        if ext.v_init is not None and fresh:
            neuron.v_init = _tensor(ext.v_init)
        r = np.asarray(node.r, np.float64)
        return _fed(Euler(np.ones_like(r), r, np.zeros_like(r)), neuron)

    read = lambda n: _import_sinabs_module(n, batch_size=None, num_timesteps=T)  # noqa: E731
    return {nir.Affine: read, nir.Conv2d: read, nir.SumPool2d: read, nir.Flatten: read,
            nir.LIF: lif, nir.CubaLIF: cuba, nir.IF: integrate_fire,
            nir.Threshold: lambda n: Heaviside(n.threshold), nir.AvgPool2d: avg_pool}


def network(graph: Any, T: int, use_metadata: bool = True) -> torch.nn.Module:
    import nirtorch

    return nirtorch.nir_to_torch(graph, node_map(graph, T, use_metadata))


@torch.no_grad()
def outputs(graph: Any, inputs: torch.Tensor, T: int, use_metadata: bool = True,
            batch: int = 128) -> np.ndarray:
    """The output of ``graph`` run by Sinabs, summed over ``T`` steps (``common.readout``);
    ``use_metadata``: the converted network's IF as its metadata says (else NIR's IF)."""
    net = network(graph, T, use_metadata)
    runs = []
    for x in inputs.split(batch):
        seq = sequence(graph, x, T)
        out = net(seq.reshape(-1, *seq.shape[2:]))
        out = out[0] if isinstance(out, tuple) else out
        runs.append(out.reshape(len(x), T, -1).double().numpy())
    return readout(graph, np.concatenate(runs))
