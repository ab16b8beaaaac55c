"""The integrate-and-fire neuron a converted ReLU becomes, with a fused multi-step backward."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cbpqsnn.neurons.base import MultiStepNeuron
from cbpqsnn.neurons.surrogates import ATan, Surrogate, spike


class _SoftResetIF(torch.autograd.Function):
    """Unit-threshold IF with reset by subtraction over ``[T, B, ...]``, BPTT in one backward loop.

    Forward: ``h[t] = u[t-1] + z[t]``, ``s[t] = 1[h[t] >= 1]``, ``u[t] = h[t] - s[t]``, ``u[-1] = u0``.
    Backward (``sg[t] = surrogate'(h[t] - 1)``, ``gs = dL/ds``):
    ``dL/dh[t] = gs[t] sg[t] + dL/dh[t+1] (1 - sg[t])`` (``dL/dh[t+1]`` alone with a detached
    reset), ``dL/dz[t] = dL/dh[t]``. The same gradients as unrolling :func:`cbpqsnn.neurons.spike`
    step by step, with a fraction of the operations and of the saved tensors.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, u0: Tensor, surrogate: Surrogate, detach_reset: bool) -> Tensor:
        h = torch.empty_like(z)
        spikes = torch.empty_like(z)
        u = u0.expand_as(z[0])
        for t in range(z.shape[0]):
            torch.add(u, z[t], out=h[t])
            torch.ge(h[t], 1, out=spikes[t])
            u = h[t] - spikes[t]
        ctx.save_for_backward(h)
        ctx.surrogate = surrogate
        ctx.detach_reset = detach_reset
        return spikes

    @staticmethod
    def backward(ctx: Any, grad_spikes: Tensor) -> tuple[Tensor, None, None, None]:
        (h,) = ctx.saved_tensors
        sg = ctx.surrogate.derivative(h - 1)
        direct = grad_spikes * sg  # through this step's spike
        carry = torch.ones_like(sg) if ctx.detach_reset else 1 - sg  # through the membrane
        grad_z = torch.empty_like(h)
        g = torch.zeros_like(h[0])
        for t in range(h.shape[0] - 1, -1, -1):
            g = torch.addcmul(direct[t], g, carry[t])
            grad_z[t] = g
        return grad_z, None, None, None


class IFNeuron(MultiStepNeuron):
    """Integrate-and-fire neuron of a converted ReLU, reset by subtraction, on ``[T, B, ...]``:

    ``v[t] = v[t-1] + x[t] + V_th / (2T)``, ``s[t] = V_th * 1[v[t] >= V_th]``, ``v[t] -= s[t]``,
    ``v[-1] = v_init`` (zero unless potential correction set it). The spike amplitude is the
    threshold, so ``mean_t s[t]`` approximates ``clip(x, 0, V_th)`` within ``V_th / (2T)`` for a
    constant input. It runs in units of the threshold (``u = v / V_th``, see :class:`_SoftResetIF`);
    the backward of a step is the surrogate's derivative at ``v[t] / V_th - 1`` (``v[t] - V_th`` at
    the unit threshold fine-tuning uses). In the analog mode the network calls :meth:`analog`:
    ``ReLU(x)``.
    """

    def __init__(self, shape: Sequence[int], surrogate: Surrogate | None = None,
                 input_shift: bool = True, detach_reset: bool = False) -> None:
        super().__init__(surrogate or ATan(2.0))
        self.input_shift = input_shift
        self.detach_reset = detach_reset
        self.register_buffer("threshold", torch.ones(()))
        self.register_buffer("v_init", torch.zeros(tuple(shape)))

    @staticmethod
    def analog(x: Tensor) -> Tensor:
        return F.relu(x)

    def shifted(self, x: Tensor) -> Tensor:
        """The input with the ``V_th / (2T)`` shift added (if ``input_shift``)."""
        return x + self.threshold / (2 * x.shape[0]) if self.input_shift else x

    def forward(self, x: Tensor) -> Tensor:  # fused: the whole time loop in one autograd node
        threshold = self.threshold
        spikes = _SoftResetIF.apply(self.shifted(x) / threshold, self.v_init / threshold,
                                    self.surrogate, self.detach_reset)
        return spikes * threshold

    def step_loop(self, x: Tensor) -> Tensor:
        return super().step_loop(self.shifted(x))

    def step(self, x_t: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        """One step in units of the threshold (``u = v / V_th``); ``x_t`` already shifted."""
        threshold = self.threshold
        u = self.v_init / threshold if state is None else state
        h = u + x_t / threshold
        s = spike(h - 1, self.surrogate)
        u = h - (s.detach() if self.detach_reset else s)
        return s * threshold, u

    def extra_repr(self) -> str:
        return (f"shape={tuple(self.v_init.shape)}, threshold={float(self.threshold):.4g}, "
                f"input_shift={self.input_shift}, detach_reset={self.detach_reset}, "
                f"surrogate={self.surrogate}")
