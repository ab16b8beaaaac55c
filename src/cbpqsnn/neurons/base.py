"""The one base of every spiking neuron: time-first ``[T, B, ...]`` in, ``[T, B, ...]`` out."""

from __future__ import annotations

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


class MultiStepNeuron(TemporalModule):
    """Base of every spiking neuron: ``[T, B, ...]`` input current -> ``[T, B, ...]`` output.

    A neuron is defined by its single step, ``step(x_t, state) -> (out_t, state)`` (``state`` is
    ``None`` at t = 0); :meth:`step_loop` runs it over T and is the default ``forward``. A neuron
    with a fused multi-step kernel (the whole time loop in one autograd function) overrides
    ``forward`` with it; ``step_loop`` stays its definition, and the tests check that the two
    give the same outputs (and, where the kernel claims it, the same gradients).
    """

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

    def forward(self, x: Tensor) -> Tensor:
        return self.step_loop(x)

    def extra_repr(self) -> str:
        return f"surrogate={self.surrogate}"
