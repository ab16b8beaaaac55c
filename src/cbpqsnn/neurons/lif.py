"""Leaky integrate-and-fire neurons: STBP's iterative LIF and SpikingJelly's LIF / PLIF."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from cbpqsnn.neurons import kernels as compiled
from cbpqsnn.neurons.base import MultiStepNeuron
from cbpqsnn.neurons.surrogates import ATan, Rectangular, Surrogate, spike


class _STBPLIFFunction(torch.autograd.Function):
    """:class:`STBPLIF` over ``[T, B, ...]`` in one autograd node, bitwise its step loop.

    Forward (``q[t] = 1 - o[t] = 1[u[t] <= V_th]``): ``u[0] = x[0]``,
    ``u[t] = x[t] + (decay u[t-1]) q[t-1]`` (one ``addcmul`` per step), ``o[t] = 1[u[t] > V_th]``.
    Saves ``u`` only (``q`` is recomputed). Backward, ``sg[t] = surrogate'(u[t] - V_th)``,
    ``go = dL/do``, ``a[t] = decay u[t]``::

        do_total[t] = go[t] - gu[t+1] a[t]                 (the reset term; none with detach_reset)
        gu[t]       = do_total[t] sg[t] + (gu[t+1] q[t]) decay
        dL/dx[t]    = gu[t]

    The backward works one step at a time (temporaries of one step, not of all T: a tensor of all
    T steps of a conv layer is tens of MB, and each fresh one costs page faults). The products
    and sums round as autograd's for the step loop, so the gradients are bitwise those of
    :meth:`STBPLIF.step_loop` (tests check it). ``addcmul`` appears only where one factor is ``q``
    (0 or 1): the product is exact, so a fused multiply-add rounds like the separate operations.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, v_threshold: float, decay: float, surrogate: Surrogate,
                detach_reset: bool, kernels: str = "eager") -> Tensor:
        ctx.constants = (v_threshold, decay, surrogate, detach_reset)
        ctx.kernels = kernels
        if kernels == "compiled":
            ctx.order = compiled.memory_order(x)
            spikes, u = compiled.stbp_lif_forward(compiled.flat(x, ctx.order), v_threshold, decay)
            ctx.save_for_backward(u)
            return compiled.unflat(spikes, x.shape, ctx.order)
        u = torch.empty_like(x)
        spikes = torch.empty_like(x)
        quiet = torch.empty_like(x[0])
        u[0] = x[0]
        for t in range(x.shape[0]):
            if t:
                torch.addcmul(x[t], u[t - 1], quiet, value=decay, out=u[t])
            torch.gt(u[t], v_threshold, out=spikes[t])
            if t + 1 < x.shape[0]:
                torch.le(u[t], v_threshold, out=quiet)
        ctx.save_for_backward(u)
        return spikes

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_spikes: Tensor) -> tuple[Tensor | None, ...]:
        (u,) = ctx.saved_tensors
        v_threshold, decay, surrogate, detach_reset = ctx.constants
        if ctx.kernels == "compiled":
            grad = compiled.stbp_lif_backward(compiled.flat(grad_spikes, ctx.order), u, v_threshold,
                                              decay, surrogate, detach_reset)
            return compiled.unflat(grad, grad_spikes.shape, ctx.order), None, None, None, None, None
        grad_x = torch.empty_like(u)
        quiet = torch.empty_like(u[0])
        grad_x[-1] = surrogate.derivative_(u[-1] - v_threshold).mul_(grad_spikes[-1])
        for t in range(u.shape[0] - 2, -1, -1):  # per step: no temporary of the size of all T
            gu = grad_x[t + 1]
            spike_grad = grad_spikes[t]
            if not detach_reset:  # no fused multiply-add here: rounds as autograd does
                spike_grad = spike_grad - gu * (u[t] * decay)
            direct = surrogate.derivative_(u[t] - v_threshold).mul_(spike_grad)
            torch.le(u[t], v_threshold, out=quiet)
            torch.addcmul(direct, gu, quiet, value=decay, out=grad_x[t])
        return grad_x, None, None, None, None, None


class STBPLIF(MultiStepNeuron):
    """Iterative LIF of STBP (Wu et al. 2018).

    ``u[t] = decay * u[t-1] * (1 - o[t-1]) + I[t]``, ``o[t] = 1[u[t] > V_th]``.
    The reset is folded into the decay and the gradient flows through ``o[t-1]`` in the reset
    term (it is not detached), exactly as in the STBP code; ``detach_reset=True`` stops it (the
    LIF of SpikingJelly with ``decay_input=False`` and snnTorch's ``Leaky`` with a zero reset,
    ``decay = 1 - 1/tau = beta``). ``forward`` runs the fused :class:`_STBPLIFFunction` (bitwise
    the step loop's outputs and gradients, with less time and memory).
    """

    def __init__(self, v_threshold: float = 0.5, decay: float = 0.25,
                 surrogate: Surrogate | None = None, detach_reset: bool = False) -> None:
        super().__init__(surrogate or Rectangular(1.0))
        self.v_threshold = float(v_threshold)
        self.decay = float(decay)
        self.detach_reset = bool(detach_reset)
        self.kernels = "eager"  # or "compiled" (cbpqsnn.neurons.kernels)

    def forward(self, x: Tensor) -> Tensor:
        return _STBPLIFFunction.apply(x, self.v_threshold, self.decay, self.surrogate,
                                      self.detach_reset, self.kernels)

    def step(self, x_t: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Any]:
        if state is None:
            u = x_t
        else:
            u_prev, o_prev = state
            o_reset = o_prev.detach() if self.detach_reset else o_prev
            u = self.decay * u_prev * (1 - o_reset) + x_t
        o = spike(u - self.v_threshold, self.surrogate, strict=True)
        return o, (u, o)

    def extra_repr(self) -> str:
        return (f"v_threshold={self.v_threshold}, decay={self.decay}, "
                f"detach_reset={self.detach_reset}, {super().extra_repr()}")


class _PLIFFunction(torch.autograd.Function):
    """:class:`ParametricLIF` over ``[T, B, ...]`` in one autograd node.

    Forward: ``d[t] = X[t] - (V[t-1] - V_r)``, ``H[t] = V[t-1] + k d[t]``, ``S[t] = 1[H[t] >= V_th]``,
    ``V[t] = H[t] q[t] + V_r S[t]`` with ``q[t] = 1 - S[t]``; saves ``H`` and ``d``. Backward, one
    step at a time (``sg[t] = surrogate'(H[t] - V_th)``, ``gV[t] = gH[t+1] (1 - k)``)::

        dL/dS_total[t] = dL/dS[t] + gV[t] (V_r - H[t])      (the reset term; none with detach_reset)
        gH[t]          = dL/dS_total[t] sg[t] + gV[t] q[t]
        dL/dX[t]       = k gH[t],     dL/dk = sum_t sum gH[t] d[t]

    The outputs are bitwise the step loop's; the gradients agree to rounding (the sum over T of
    ``dL/dk`` is taken in another order).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, k: Tensor, v_threshold: float, v_reset: float,
                surrogate: Surrogate, detach_reset: bool, kernels: str = "eager") -> Tensor:
        ctx.constants = (v_threshold, v_reset, surrogate, detach_reset)
        ctx.kernels = kernels
        if kernels == "compiled":
            ctx.order = compiled.memory_order(x)
            spikes, h, d = compiled.plif_forward(compiled.flat(x, ctx.order), k.detach(), v_threshold,
                                                 v_reset)
            ctx.save_for_backward(h, d, k)
            return compiled.unflat(spikes, x.shape, ctx.order)
        h = torch.empty_like(x)
        d = torch.empty_like(x)
        spikes = torch.empty_like(x)
        k_value = float(k)
        v = torch.full_like(x[0], v_reset)
        for t in range(x.shape[0]):
            torch.sub(x[t], v - v_reset if v_reset else v, out=d[t])  # v - 0 is v: no temporary
            torch.mul(d[t], k_value, out=h[t]).add_(v)
            torch.ge(h[t], v_threshold, out=spikes[t])
            if t + 1 < x.shape[0]:
                v = h[t] * torch.lt(h[t], v_threshold)
                if v_reset:
                    v.add_(spikes[t], alpha=v_reset)
        ctx.save_for_backward(h, d, k)
        return spikes

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_spikes: Tensor) -> tuple[Tensor | None, ...]:
        h, d, k = ctx.saved_tensors
        v_threshold, v_reset, surrogate, detach_reset = ctx.constants
        if ctx.kernels == "compiled":
            grad_x, grad_k = compiled.plif_backward(compiled.flat(grad_spikes, ctx.order), h, d,
                                                    k.detach(), v_threshold, v_reset, surrogate,
                                                    detach_reset)
            grad_k = grad_k.reshape(k.shape) if ctx.needs_input_grad[1] else None
            grad_x = compiled.unflat(grad_x, grad_spikes.shape, ctx.order)
            return grad_x, grad_k, None, None, None, None, None
        k_value = float(k)
        grad_x = torch.empty_like(h)
        grad_k = torch.zeros((), dtype=h.dtype, device=h.device)
        quiet = torch.empty_like(h[0])
        gv = None
        for t in range(h.shape[0] - 1, -1, -1):
            spike_grad = grad_spikes[t]
            if gv is not None and not detach_reset:
                spike_grad = spike_grad + gv * (v_reset - h[t])
            gh = surrogate.derivative_(h[t] - v_threshold).mul_(spike_grad)
            if gv is not None:
                torch.lt(h[t], v_threshold, out=quiet)
                gh.addcmul_(gv, quiet)  # q is 0 or 1: exact product
            torch.mul(gh, k_value, out=grad_x[t])
            if ctx.needs_input_grad[1]:
                grad_k += (gh * d[t]).sum()
            gv = gh - gh * k_value  # H[t] = V[t-1] + k (X[t] - V[t-1] + V_r)
        return (grad_x, grad_k.reshape(k.shape) if ctx.needs_input_grad[1] else None,
                None, None, None, None, None)


class ParametricLIF(MultiStepNeuron):
    """LIF / PLIF of SpikingJelly (Fang et al. 2021), decay on the input:

    ``H[t] = V[t-1] + k (X[t] - (V[t-1] - V_reset))``, ``S[t] = 1[H[t] >= V_th]``,
    ``V[t] = H[t] (1 - S[t]) + V_reset S[t]`` with the reset spike detached (``detach_reset``).
    ``k = sigmoid(w)``; ``w`` is one learnable scalar per layer (PLIF) initialised so that
    ``1/k = tau0`` (``tau0 = 2`` -> ``w = 0``), or a fixed buffer (plain LIF, ``learnable=False``).
    ``forward`` runs the fused :class:`_PLIFFunction`; :meth:`step_loop` is the definition.
    """

    def __init__(self, tau0: float = 2.0, learnable: bool = True, v_threshold: float = 1.0,
                 v_reset: float = 0.0, surrogate: Surrogate | None = None,
                 detach_reset: bool = True) -> None:
        super().__init__(surrogate or ATan(2.0))
        self.v_threshold = float(v_threshold)
        if tau0 <= 1:
            raise ValueError(f"membrane time constant tau0 must be > 1, got {tau0}")
        w = torch.tensor(-math.log(tau0 - 1.0))
        if learnable:
            self.w = nn.Parameter(w)
        else:
            self.register_buffer("w", w)
        self.v_reset = float(v_reset)
        self.detach_reset = detach_reset
        self.kernels = "eager"  # or "compiled" (cbpqsnn.neurons.kernels)

    @property
    def tau(self) -> Tensor:
        return 1 / torch.sigmoid(self.w.detach())

    def forward(self, x: Tensor) -> Tensor:
        return _PLIFFunction.apply(x, torch.sigmoid(self.w), self.v_threshold, self.v_reset,
                                   self.surrogate, self.detach_reset, self.kernels)

    def step(self, x_t: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        k = torch.sigmoid(self.w)
        v_prev = torch.full_like(x_t, self.v_reset) if state is None else state
        h = v_prev + k * (x_t - (v_prev - self.v_reset))
        s = spike(h - self.v_threshold, self.surrogate, strict=False)
        s_reset = s.detach() if self.detach_reset else s
        v = h * (1 - s_reset) + self.v_reset * s_reset
        return s, v

    def extra_repr(self) -> str:
        kind = "learnable" if isinstance(self.w, nn.Parameter) else "fixed"
        return (f"v_threshold={self.v_threshold}, tau={float(self.tau):.3f} ({kind}), "
                f"v_reset={self.v_reset}, {super().extra_repr()}")
