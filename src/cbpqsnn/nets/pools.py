"""Pooling of spike maps (``P<k>`` / ``M<k>`` in a model spec): PyTorch's ``k x k`` average / max
pool, run by a compiled kernel under ``neuron_kernels=compiled`` (:func:`cbpqsnn.neurons.kernels.pool_kernel`;
switched with the neurons by :func:`~cbpqsnn.neurons.kernels.set_kernels`). Subclasses of
``nn.AvgPool2d`` / ``nn.MaxPool2d``, so everything that reads a network (deployment, export) sees
the same pools."""

from __future__ import annotations

from torch import Tensor, nn

from cbpqsnn.nets.layout import is_channels_innermost
from cbpqsnn.neurons.kernels import pool_kernel


class _SwitchablePool:
    """The pool's forward through the compiled kernel of its ``kind`` under ``kernels="compiled"``
    (set by :func:`~cbpqsnn.neurons.kernels.set_kernels`), else PyTorch's own.

    Except a max pool of channels-last maps (``memory_format=channels_last``): PyTorch's own there,
    vectorized over the channels, was measured faster than the compiled one (the compiled average
    pool stays ahead; docs/performance.md, "Pools"). Both are bitwise the same pool."""

    kind: str
    kernels = "eager"

    def forward(self, x: Tensor) -> Tensor:
        native = self.kind == "max" and is_channels_innermost(x)
        if self.kernels == "compiled" and not native:
            return pool_kernel(self.kind, self.kernel_size)(x)
        return super().forward(x)


class SpikeAvgPool2d(_SwitchablePool, nn.AvgPool2d):
    """``nn.AvgPool2d(k)`` (stride ``k``, no padding) with a compiled kernel on request."""

    kind = "avg"


class SpikeMaxPool2d(_SwitchablePool, nn.MaxPool2d):
    """``nn.MaxPool2d(k)`` (stride ``k``, no padding) with a compiled kernel on request (the
    gradient goes to the first maximum of each window, as PyTorch's)."""

    kind = "max"
