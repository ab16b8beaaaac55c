"""TSSL-BP (Zhang & Li, NeurIPS 2020): LIF neuron with a post-synaptic-potential (PSP) trace output
and its temporal spike-sequence-learning backward pass.

Forward, per neuron (time-first ``[T, B, ...]``, ``theta_m = 1/tau_m``, ``theta_s = 1/tau_s``)::

    u[t]       = (1 - theta_m) * u_r[t-1] + I[t]              membrane (leak, then input current)
    s[t]       = 1[u[t] > V_th]                                spike
    u_r[t]     = u[t] * (1 - s[t])                             reset to 0
    du[t]      = u[t] - u_r[t-1]                               membrane increment of step t
    a[t]       = (1 - theta_s) * a[t-1] + theta_s * s[t]       PSP trace = the layer's output

Backward (:class:`TSSLFunction`), with ``g[t] = dL/da[t]`` and the discrete PSP kernel
``eps[k] = theta_s (1 - theta_s)^k``, going backward in time::

    E[t]    = sum_k eps[k] g[t+k] = theta_s g[t] + (1 - theta_s) E[t+1]
    p[t]    = s[t] * min(1/du[t], m)            (0 where du <= 0)      dt_spike/du, m = 8
    D[t]    = p[t] E[t]                          inter-neuron: the spike at t moves in time
            + c[t] D[t+1]                        intra-neuron: the next spike depends on this step
    c[t]    = (1 - theta_m) (1 - s[t])           leak between spikes
            + theta_m u[t] p[t]                  through the reset at a spike (reference code)
    dL/dI[t] = D[t]                              where a[t] >= silent / tau_s
             = sigma'(u[t]) E[t]                 where a[t] <  silent / tau_s (silent neuron)
    sigma'(u) = e^x / (scale (1 + e^x)^2),  x = clamp((V_th - u) / scale, -c, c)

``D`` is carried backward before the fallback is applied (a spiking step is never silent:
``a >= theta_s`` there). The fallback gives a silent neuron a sigmoid-surrogate gradient so it can
start firing. The loop over T is the only loop; every step is a tensor operation on all neurons.

Two versions of the reference backward exist. The one above is the TSSL-BP code that CBP-QSNN
ran (``functions/tsslbp.py`` with ``partial_u = clamp(-1/delta_u, -8, 0) * out``; CBP-QSNN's
``main_quantize_cbp.py`` calls the matching two-argument ``glv.init``). TSSL-BP's later master
drops ``* out``: a quiet step whose membrane rose (``du > 0``) also gets the timing terms, as if
it were about to spike. The carry ``D`` is unchanged, only the gradient returned at quiet steps
gains them (``rising_timing=True``)::

    dL/dI[t] = D[t] + (1 - s[t]) min(1/du[t], m) (E[t] + theta_m u[t] D[t+1])     (du[t] > 0)

Reading: with the spike pattern fixed, a membrane change ``du_t`` moves the spike at ``t`` earlier
by ``p[t] du_t`` steps, adding that fraction of its PSP kernel ``eps`` to the trace (the reference
code writes this as ``(-1/du) * (-eps/tau_s) * tau_s``); the reset moves with the spike and shifts
the next membrane by ``theta_m u[t]`` per step; between spikes a membrane change leaks on with
``1 - theta_m``. ``D`` is the exact adjoint of that linear spike-timing model (the tests check it by
finite differences); the discrete forward itself is flat wherever the spike pattern is stable.
"""


from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cbpqsnn.neurons.base import MultiStepNeuron
from cbpqsnn.neurons.surrogates import Sigmoid, spike


@dataclass(frozen=True)
class TSSLConstants:
    """Neuron and backward constants of TSSL-BP (published: tau_m 5, tau_s 3, V_th 1 on CIFAR-10;
    ``1/du`` capped at 8; sigmoid fallback scale 0.2, exponent clamp 8, silent below ``1/(4 tau_s)``)."""

    tau_m: float = 5.0
    tau_s: float = 3.0
    v_threshold: float = 1.0
    max_inverse_slope: float = 8.0
    fallback_scale: float = 0.2
    fallback_clamp: float = 8.0
    silent_trace: float = 0.25  # silent where a[t] < silent_trace / tau_s
    rising_timing: bool = False  # True: TSSL-BP's later master (module docstring)

    def __post_init__(self) -> None:
        if self.tau_m < 1 or self.tau_s < 1:
            raise ValueError(f"TSSL time constants must be >= 1, got tau_m={self.tau_m}, tau_s={self.tau_s}")
        if self.fallback_scale <= 0:
            raise ValueError(f"fallback_scale must be > 0, got {self.fallback_scale}")


def psp_kernel(tau_s: float, steps: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Discrete PSP kernel ``eps[k] = (1/tau_s) (1 - 1/tau_s)^k``, ``k = 0 .. steps-1``."""
    k = torch.arange(steps, dtype=dtype)
    return (1 / tau_s) * (1 - 1 / tau_s) ** k


def _causal_filter(x: Tensor, kernel: Tensor, anticausal: bool = False) -> Tensor:
    """``y[t] = sum_k kernel[k] x[t-k]`` (``k <= t``) over the leading (time) axis, as one matmul;
    ``anticausal``: ``y[t] = sum_k kernel[k] x[t+k]`` (the transpose)."""
    steps = x.shape[0]
    index = torch.arange(steps, device=x.device)
    lag = index.view(-1, 1) - index.view(1, -1)
    toeplitz = torch.where(lag >= 0, kernel[lag.clamp(min=0)], 0)
    if anticausal:
        toeplitz = toeplitz.T
    return (toeplitz @ x.reshape(steps, -1)).view(x.shape)


def psp_trace(x: Tensor, tau_s: float) -> Tensor:
    """Filter a time-first signal: ``a[t] = (1 - 1/tau_s) a[t-1] + x[t] / tau_s`` (``a[-1] = 0``),
    i.e. ``a[t] = sum_k eps[k] x[t-k]``."""
    return _causal_filter(x, psp_kernel(tau_s, x.shape[0], x.dtype).to(x.device))


def fallback_derivative(u: Tensor, c: TSSLConstants) -> Tensor:
    """Sigmoid surrogate of the fallback: ``e^x / (scale (1 + e^x)^2) = sigma(x) (1 - sigma(x)) / scale``,
    ``x = clamp((V_th - u) / scale, -clamp, clamp)``."""
    sig = u.mul(-1 / c.fallback_scale).add_(c.v_threshold / c.fallback_scale)
    sig = sig.clamp_(-c.fallback_clamp, c.fallback_clamp).sigmoid_()
    return torch.addcmul(sig, sig, sig, value=-1).div_(c.fallback_scale)


def lif_psp_forward(current: Tensor, c: TSSLConstants) -> tuple[Tensor, Tensor, Tensor]:
    """The neuron's forward over ``[T, ...]``: membranes ``u``, spikes ``s`` (0/1) and traces ``a``."""
    leak = 1 - 1 / c.tau_m
    u = torch.empty_like(current)
    quiet = torch.empty_like(current)  # 1 - s[t]
    u[0].copy_(current[0])
    for t in range(current.shape[0]):
        torch.le(u[t], c.v_threshold, out=quiet[t])
        if t + 1 < current.shape[0]:  # u[t+1] = (1 - theta_m) u[t] (1 - s[t]) + I[t+1]
            torch.addcmul(current[t + 1], u[t], quiet[t], value=leak, out=u[t + 1])
    spikes = 1 - quiet
    return u, spikes, psp_trace(spikes, c.tau_s)


class TSSLFunction(torch.autograd.Function):
    """Input current ``I [T, ...]`` -> PSP trace ``a [T, ...]`` with the TSSL-BP backward (see the
    module docstring for both). Saves ``u``, ``s`` and ``a``; the backward computes its
    coefficients and ``E`` for all steps at once and loops over T only for the recursion of ``D``."""

    @staticmethod
    def forward(ctx: Any, current: Tensor, c: TSSLConstants) -> Tensor:
        u, spikes, trace = lif_psp_forward(current, c)
        ctx.save_for_backward(u, spikes, trace)
        ctx.constants = c
        return trace

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_trace: Tensor) -> tuple[Tensor, None]:
        u, s, trace = ctx.saved_tensors
        c: TSSLConstants = ctx.constants
        theta_m, steps = 1 / c.tau_m, u.shape[0]
        e = _causal_filter(grad_trace, psp_kernel(c.tau_s, steps, u.dtype).to(u.device), anticausal=True)
        du = u.clone()
        du[1:].sub_(u[:-1]).addcmul_(u[:-1], s[:-1])                 # u[t] - u[t-1] (1 - s[t-1])
        slope = du.reciprocal_().clamp_(0, c.max_inverse_slope)      # min(1/du, m); 0 if du <= 0
        p = slope * s if c.rising_timing else slope.mul_(s)
        carry = torch.addcmul(s.mul(theta_m - 1).add_(1 - theta_m), u, p, value=theta_m)
        inter = p.mul_(e)
        d = torch.empty_like(inter)
        d[-1] = inter[-1]
        for t in range(steps - 2, -1, -1):
            torch.addcmul(inter[t], carry[t], d[t + 1], out=d[t])   # D[t] = p E + c D[t+1]
        grad = d
        if c.rising_timing:  # quiet steps with du > 0: + min(1/du, m) (E + theta_m u D[t+1])
            reset = torch.zeros_like(d)
            reset[:-1] = u[:-1] * d[1:] * theta_m
            grad = d + slope.mul_(1 - s).mul_(e + reset)
        silent = trace < c.silent_trace / c.tau_s
        return torch.where(silent, fallback_derivative(u, c).mul_(e), grad), None


class TSSLNeuron(MultiStepNeuron):
    """LIF with reset to 0 whose output is the PSP trace ``a[t]`` (module docstring).

    ``custom_backward=True``: the TSSL-BP backward (:class:`TSSLFunction`). ``False``: plain BPTT
    through the same forward with a sigmoid surrogate ``dS/du`` of slope ``1/fallback_scale``
    (the baseline of the speed benchmark).
    """

    def __init__(self, constants: TSSLConstants | None = None, custom_backward: bool = True) -> None:
        constants = constants or TSSLConstants()
        super().__init__(Sigmoid(1 / constants.fallback_scale))
        self.constants = constants
        self.custom_backward = custom_backward

    def forward(self, x: Tensor) -> Tensor:
        if not self.custom_backward:
            return self.step_loop(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return TSSLFunction.apply(x, self.constants)
        return lif_psp_forward(x, self.constants)[2]

    def step(self, x_t: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Any]:
        c = self.constants
        u_r, a = state if state is not None else (torch.zeros_like(x_t), torch.zeros_like(x_t))
        u = (1 - 1 / c.tau_m) * u_r + x_t
        s = spike(u - c.v_threshold, self.surrogate, strict=True)
        a = (1 - 1 / c.tau_s) * a + s / c.tau_s
        return a, (u * (1 - s), a)

    def spike_train(self, out: Tensor) -> Tensor:
        """The spikes behind a PSP trace: ``s[t] = tau_s (a[t] - (1 - 1/tau_s) a[t-1])``, rounded
        (a trace is nonzero at every step after a neuron's first spike, so ``out != 0`` would
        count those steps as spikes)."""
        c = self.constants
        a = out.float()
        previous = torch.cat([torch.zeros_like(a[:1]), a[:-1]])
        return (c.tau_s * (a - (1 - 1 / c.tau_s) * previous)).round_().clamp_(0, 1)

    def extra_repr(self) -> str:
        c = self.constants
        return (f"tau_m={c.tau_m}, tau_s={c.tau_s}, v_threshold={c.v_threshold}, "
                f"backward={'tssl' if self.custom_backward else 'surrogate'}")
