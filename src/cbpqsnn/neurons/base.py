"""The one base of every spiking neuron: time-first ``[T, B, ...]`` in, ``[T, B, ...]`` out."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from cbpqsnn.neurons.surrogates import Surrogate


class TemporalModule(nn.Module):
    """A module that consumes and produces time-first tensors ``[T, B, ...]`` itself (neurons,
    residual blocks containing neurons). Every other layer is applied time-merged."""


def seq_apply(layer: nn.Module, x: Tensor) -> Tensor:
    """Apply a stateless ``layer`` to ``[T, B, ...]`` by merging T into the batch dimension."""
    steps, batch = x.shape[:2]
    y = layer(x.flatten(0, 1))
    return y.view(steps, batch, *y.shape[1:])


HALF_DTYPES = (torch.float16, torch.bfloat16)


def float32_time_loop(forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """A neuron's ``forward`` for mixed precision: under autocast (``trainer.precision=bf16-mixed``
    or ``16-mixed``) a conv / linear layer hands the neuron a half-precision current; the time loop
    then runs in float32 (the membrane sums T steps of currents: bf16's 8-bit mantissa would round
    it at every step and move spikes near the threshold) and the output returns in the current's
    dtype -- exact for spikes, and the dtype autocast would give the next conv / linear anyway.
    The gradient flows back through both casts. Float32 / float64 inputs pass unchanged. Compiled
    kernels (``kernels == "compiled"``, :mod:`cbpqsnn.neurons.kernels`) take the half-precision
    current as it is and cast inside the kernel, where the casts cost no pass of their own.
    A deliberate deviation from the SEW rows' references: SpikingJelly's CuPy neurons keep the
    half-precision dtype of their input under AMP; a float32 membrane is the more exact function
    and costs only the casts."""

    @functools.wraps(forward)
    def wrapped(self: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if x.dtype in HALF_DTYPES and getattr(self, "kernels", "eager") != "compiled":
            return forward(self, x.float(), *args, **kwargs).to(x.dtype)
        return forward(self, x, *args, **kwargs)

    wrapped.float32_time_loop = True
    return wrapped


class MultiStepNeuron(TemporalModule):
    """Base of every spiking neuron: ``[T, B, ...]`` input current -> ``[T, B, ...]`` output.

    A neuron is defined by its single step, ``step(x_t, state) -> (out_t, state)`` (``state`` is
    ``None`` at t = 0); :meth:`step_loop` runs it over T and is the default ``forward``. A neuron
    with a fused multi-step kernel (the whole time loop in one autograd function) overrides
    ``forward`` with it; ``step_loop`` stays its definition, and the tests check that the two
    give the same outputs (and, where the kernel claims it, the same gradients). Every neuron's
    ``forward`` (this one and any subclass's) runs its time loop in float32 on half-precision
    currents (:func:`float32_time_loop`, applied by ``__init_subclass__``).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        if forward is not None and not getattr(forward, "float32_time_loop", False):
            cls.forward = float32_time_loop(forward)

    def __init__(self, surrogate: Surrogate) -> None:
        super().__init__()
        self.surrogate = surrogate

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:  # pragma: no cover
        raise NotImplementedError

    def step_loop(self, x: Tensor) -> Tensor:
        """The neuron run one step at a time (autograd records every step)."""
        state = None
        outputs = []
        for x_t in x.unbind(0):
            out_t, state = self.step(x_t, state)
            outputs.append(out_t)
        return torch.stack(outputs)

    @float32_time_loop
    def forward(self, x: Tensor) -> Tensor:
        return self.step_loop(x)

    def spike_train(self, out: Tensor) -> Tensor:
        """The 0/1 spikes (float32) behind an output of :meth:`forward`: a neuron whose output is
        not its spikes (the IF neuron's are scaled by the threshold, TSSL-BP's is a PSP trace)
        recovers them here, so spike counts and firing rates mean the same for every neuron."""
        return (out != 0).float()

    def extra_repr(self) -> str:
        return f"surrogate={self.surrogate}"
