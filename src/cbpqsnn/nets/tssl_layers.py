"""The TSSL-BP network's non-neuron layers (reference code ``stonezwr/TSSL-BP``): PSP-filtered
input, dropout with one mask for all T steps, and the 1.1 x sum-pooling of traces."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cbpqsnn.neurons import TemporalModule, psp_trace


class PSPInput(TemporalModule):
    """Filters the network input through the PSP trace: ``a[t] = (1 - 1/tau_s) a[t-1] + x[t]/tau_s``
    (a static image is the same current ``x`` at every step)."""

    def __init__(self, tau_s: float) -> None:
        super().__init__()
        self.tau_s = float(tau_s)

    def forward(self, x: Tensor) -> Tensor:
        return psp_trace(x, self.tau_s)

    def extra_repr(self) -> str:
        return f"tau_s={self.tau_s}"


class TimeSharedDropout(TemporalModule):
    """Dropout with one mask per forward pass, shared by all T steps (TSSL-BP reference code,
    ``layers/dropout.py``: ``dropout3d`` of the trace reshaped to ``[N, C*H, W, 1, 1, T]``)::

        y[t] = x[t] * m / (1 - p),   m ~ Bernoulli(1 - p), the same m at every t

    ``m`` has one entry per (sample, channel, row) of a feature map ``[T, B, C, H, W]`` (a whole
    row of W pixels drops at every step) and one per (sample, neuron) of ``[T, B, F]``. Identity in
    eval mode. (``nn.Dropout`` applied time-merged would draw a new mask per element and step.)
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    @staticmethod
    def mask_shape(x: Tensor) -> tuple[int, ...]:
        """``[B, C, H, 1]`` for a feature map ``[T, B, C, H, W]``, else ``x.shape[1:]``."""
        return (*x.shape[1:-1], 1) if x.dim() == 5 else tuple(x.shape[1:])

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty(self.mask_shape(x), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * keep.div_(1 - self.p)  # broadcast over T (and W)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ScaledSumPool(nn.Module):
    """Non-spiking pooling of traces: ``y = scale * sum over each k x k window`` (TSSL-BP: 1.1)."""

    def __init__(self, kernel_size: int, scale: float = 1.1) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        k = self.kernel_size
        *lead, h, w = x.shape
        x = x[..., : h - h % k, : w - w % k]  # like avg_pool2d: a partial window is dropped
        rows = x.reshape(*lead, h // k, k, x.shape[-1]).sum(-2)  # two 1-D sums: faster than
        return rows.reshape(*lead, h // k, w // k, k).sum(-1) * self.scale  # avg_pool2d on CPU

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, scale={self.scale}"
