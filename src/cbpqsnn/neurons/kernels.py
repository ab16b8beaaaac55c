"""Compiled time loops of the fused neurons: ``neuron_kernels=compiled`` (opt-in).

The fused neurons (:mod:`cbpqsnn.neurons.lif`) run their forward and backward time loops as a
few PyTorch operations per step ("eager" kernels): every operation is one pass over a step's
tensor. Here the same loops are written as pure functions and handed to ``torch.compile``, which
fuses each loop into one generated kernel (C++ on a CPU, Triton on a GPU) that reads each input
once and writes each output once. Same equations, same rounding: the tests hold the compiled
kernels to the eager ones (bitwise where the eager kernel is bitwise its step loop). The kernels
see every tensor as ``[T, N]`` (:func:`flat`) with ``N`` dynamic, so a network compiles each
kernel once per T and constants, again under ``torch.inference_mode`` (inference tensors): about
a minute on a CPU, worth it for runs of many steps, not for a short one.

Which neurons have compiled kernels: STBP's LIF and SpikingJelly's LIF / PLIF, the neurons with a
``kernels`` attribute (``"eager"`` by default; :func:`set_kernels` switches a whole network). The
pools that follow them (:mod:`cbpqsnn.nets.pools`) switch with them: PyTorch's CPU pooling is a
large part of a small spiking network's step, and the compiled pools are faster and bitwise equal
on spikes and on sums of spikes (the tests check forward and gradient; the timings:
docs/performance.md, "Pools").
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

from cbpqsnn.neurons.base import HALF_DTYPES
from cbpqsnn.neurons.surrogates import Surrogate

KERNELS = ("eager", "compiled")


# Inductor options for the time loops on a CPU. By default Inductor fuses a whole unrolled loop of
# T steps into one kernel that walks all 3T rows of [T, N] (inputs, spikes, membranes) side by side;
# capping a fused kernel at 8 nodes splits the loop into kernels of a few steps each, with fewer
# rows in flight, which runs faster on a CPU at every shape measured (docs/performance.md,
# "Compiled time loops"). Same operations, same rounding (bitwise equal,
# tests/test_neuron_kernels.py). Other devices keep the defaults.
TIME_LOOP_OPTIONS = {"cpu": {"max_fusion_size": 8}}


def _compiled(fn: Callable[..., Any], options: dict[str, dict[str, Any]] | None = None
              ) -> Callable[..., Any]:
    """``fn`` compiled on its first call on each device type (so importing this module compiles
    nothing), with that device type's Inductor ``options``. Under a dispatch mode (e.g.
    ``FlopCounterMode``, which compiled code bypasses) ``fn`` runs as written."""
    cache: dict[str, Callable[..., Any]] = {}

    def call(*args: Any) -> Any:
        if _get_current_dispatch_mode_stack():
            return fn(*args)
        device = args[0].device.type
        if device not in cache:
            # variants beside the shapes: T, grad mode vs inference tensors, dtype, constants
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
            cache[device] = torch.compile(fn, fullgraph=True, dynamic=True,
                                          options=(options or {}).get(device))
        return cache[device](*args)
    call.__doc__ = fn.__doc__
    call.options = options  # type: ignore[attr-defined]
    return call


def memory_order(x: Tensor) -> tuple[int, ...]:
    """The dims of ``x [T, ...]``: time first, then the others in the order they lie in memory
    (largest stride first; ties keep their order). ``x.permute(order)`` of a dense tensor is
    contiguous, so :func:`flat` views a channels-last feature map without a copy."""
    return (0, *sorted(range(1, x.dim()), key=lambda d: -x.stride(d)))


def flat(x: Tensor, order: tuple[int, ...]) -> Tensor:
    """``[T, ...]`` as a contiguous ``[T, N]``, ``N`` in ``order`` (:func:`memory_order`: no copy
    for a dense tensor in any layout). The kernels are elementwise across everything but time, so
    every layer (conv or FC, any batch, an input expanded over T) meets one compiled kernel instead
    of one per rank, shape, stride, view base and ``requires_grad`` (detached: the kernels run
    inside an autograd function, which records nothing). A backward flattens its gradient in the
    forward's ``order``, whatever the gradient's own layout."""
    return x.permute(order).reshape(x.shape[0], -1).contiguous().detach()


def unflat(y: Tensor, shape: torch.Size, order: tuple[int, ...]) -> Tensor:
    """The inverse of :func:`flat`: ``[T, N]`` back to ``shape``, laid out as the flattened input."""
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return y.view([shape[d] for d in order]).permute(inverse)


def _full(x: Tensor) -> Tensor:
    """A half-precision tensor as float32 (inside a compiled kernel the cast fuses into the loop:
    mixed precision costs no pass of its own); float32 / float64 unchanged."""
    return x.float() if x.dtype in HALF_DTYPES else x


def _stbp_lif_forward(x: Tensor, v_threshold: float, decay: float) -> tuple[Tensor, Tensor]:
    """Spikes and membranes ``u`` of :class:`cbpqsnn.neurons.STBPLIF` over ``[T, ...]``:
    ``u[t] = x[t] + (decay u[t-1]) q[t-1]``, ``q = 1[u <= V_th]``, ``o[t] = 1[u[t] > V_th]``.
    The membranes are float32 (or float64) for any current; spikes come in the current's dtype."""
    spikes, membranes = [], []
    u = _full(x[0])
    quiet = u
    for t in range(x.shape[0]):
        if t:
            u = torch.addcmul(_full(x[t]), u, quiet, value=decay)
        spikes.append((u > v_threshold).to(x.dtype))
        quiet = (u <= v_threshold).to(u.dtype)
        membranes.append(u)
    return torch.stack(spikes), torch.stack(membranes)


def _stbp_lif_backward(grad_spikes: Tensor, u: Tensor, v_threshold: float, decay: float,
                       surrogate: Surrogate, detach_reset: bool) -> Tensor:
    """``dL/dx`` of :func:`_stbp_lif_forward` (the equations of ``_STBPLIFFunction``), in the
    dtype of ``grad_spikes`` (the current's)."""
    steps = u.shape[0]
    gu = surrogate.derivative(u[-1] - v_threshold) * _full(grad_spikes[-1])
    grads = [gu]
    for t in range(steps - 2, -1, -1):
        spike_grad = _full(grad_spikes[t])
        if not detach_reset:
            spike_grad = spike_grad - gu * (u[t] * decay)
        direct = surrogate.derivative(u[t] - v_threshold) * spike_grad
        gu = torch.addcmul(direct, gu, (u[t] <= v_threshold).to(u.dtype), value=decay)
        grads.append(gu)
    return torch.stack(grads[::-1]).to(grad_spikes.dtype)


def _plif_forward(x: Tensor, k: Tensor, v_threshold: float, v_reset: float
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Spikes, ``H`` and ``d = X - (V - V_r)`` of :class:`cbpqsnn.neurons.ParametricLIF`
    (``k`` a 0-d tensor: a learnable constant must not be baked into the compiled kernel).
    ``H`` and ``d`` are float32 (or float64) for any current; spikes in the current's dtype."""
    spikes, hs, ds = [], [], []
    v = torch.full_like(x[0], v_reset, dtype=k.dtype)
    for t in range(x.shape[0]):
        d = _full(x[t]) - (v - v_reset if v_reset else v)
        h = d * k + v
        s = (h >= v_threshold).to(h.dtype)
        v = h * (h < v_threshold).to(h.dtype)
        if v_reset:
            v = v + s * v_reset
        spikes.append(s.to(x.dtype))
        hs.append(h)
        ds.append(d)
    return torch.stack(spikes), torch.stack(hs), torch.stack(ds)


def _plif_backward(grad_spikes: Tensor, h: Tensor, d: Tensor, k: Tensor, v_threshold: float,
                   v_reset: float, surrogate: Surrogate, detach_reset: bool) -> tuple[Tensor, Tensor]:
    """``dL/dX`` (in the dtype of ``grad_spikes``) and ``dL/dk`` of :func:`_plif_forward` (the
    equations of ``_PLIFFunction``)."""
    grads = []
    grad_k = torch.zeros((), dtype=h.dtype, device=h.device)
    gv = None
    for t in range(h.shape[0] - 1, -1, -1):
        spike_grad = _full(grad_spikes[t])
        if gv is not None and not detach_reset:
            spike_grad = spike_grad + gv * (v_reset - h[t])
        gh = surrogate.derivative(h[t] - v_threshold) * spike_grad
        if gv is not None:
            gh = torch.addcmul(gh, gv, (h[t] < v_threshold).to(h.dtype))
        grads.append(gh * k)
        grad_k = grad_k + (gh * d[t]).sum()
        gv = gh - gh * k
    return torch.stack(grads[::-1]).to(grad_spikes.dtype), grad_k


stbp_lif_forward = _compiled(_stbp_lif_forward, TIME_LOOP_OPTIONS)
stbp_lif_backward = _compiled(_stbp_lif_backward, TIME_LOOP_OPTIONS)
plif_forward = _compiled(_plif_forward, TIME_LOOP_OPTIONS)
plif_backward = _compiled(_plif_backward, TIME_LOOP_OPTIONS)

POOLS = {"avg": F.avg_pool2d, "max": F.max_pool2d}
_pool_kernels: dict[tuple[str, int], Callable[[Tensor], Tensor]] = {}


def pool_kernel(kind: str, kernel_size: int) -> Callable[[Tensor], Tensor]:
    """The compiled ``k x k`` pool (stride ``k``) of kind ``avg`` or ``max``, forward and backward
    (autograd records it as one node; the shapes are dynamic: one compile serves every layer)."""
    key = (kind, int(kernel_size))
    if key not in _pool_kernels:
        _pool_kernels[key] = _compiled(partial(POOLS[kind], kernel_size=key[1]))
    return _pool_kernels[key]


def set_kernels(net: nn.Module, kernels: str) -> None:
    """Run every neuron of ``net`` that has compiled kernels (a ``kernels`` attribute), and the
    pools between them, with ``kernels``; ``compiled`` on a network without such a neuron is an
    error (it would change little, silently)."""
    if kernels not in KERNELS:
        raise ValueError(f"unknown neuron_kernels {kernels!r}; valid choices: {list(KERNELS)}")
    switched = [m for m in net.modules() if hasattr(m, "kernels")]
    if kernels == "compiled" and not any(hasattr(m, "step") for m in switched):
        kinds = sorted({type(m).__name__ for m in net.modules() if hasattr(m, "step")})
        raise ValueError(f"neuron_kernels='compiled': none of this network's neurons "
                         f"({', '.join(kinds) or 'none'}) has compiled kernels; they exist for "
                         f"STBPLIF and ParametricLIF (methods stbp, sg). Use neuron_kernels=eager")
    for module in switched:
        module.kernels = kernels
