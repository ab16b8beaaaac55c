"""Spiking neurons (multi-step, time-first ``[T, B, ...]``) and surrogate gradient functions.

A neuron is a small subclass of :class:`MultiStepNeuron` that defines one time step
(``step``); the base class runs it over time with ``unbind``/``stack`` so the autograd graph
stays O(T). Surrogates are small objects chosen by name (:func:`make_surrogate`): the forward
pass is always the Heaviside step, the backward pass uses the surrogate's derivative.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

# --------------------------------------------------------------------------- surrogates


class Surrogate:
    """Base surrogate: ``derivative(x)`` approximates dH/dx of the Heaviside step at ``x``."""

    name = "base"

    def derivative(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Rectangular(Surrogate):
    """Rectangular window (STBP): ``dH/dx = (1/width) * 1[|x| < width/2]``."""

    name = "rectangular"

    def __init__(self, width: float = 1.0) -> None:
        if width <= 0:
            raise ValueError(f"rectangular surrogate width must be > 0, got {width}")
        self.width = float(width)

    def derivative(self, x: Tensor) -> Tensor:
        return (x.abs() < self.width / 2).to(x.dtype) / self.width


class ATan(Surrogate):
    """Arc-tangent (SpikingJelly's default): ``dH/dx = (alpha/2) / (1 + (pi/2 * alpha * x)^2)``."""

    name = "atan"

    def __init__(self, alpha: float = 2.0) -> None:
        self.alpha = float(alpha)

    def derivative(self, x: Tensor) -> Tensor:
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * x).square())


class FastSigmoid(Surrogate):
    """Fast sigmoid (SuperSpike): ``dH/dx = 1 / (1 + alpha*|x|)^2``."""

    name = "fast_sigmoid"

    def __init__(self, alpha: float = 10.0) -> None:
        self.alpha = float(alpha)

    def derivative(self, x: Tensor) -> Tensor:
        return 1 / (1 + self.alpha * x.abs()).square()


class Sigmoid(Surrogate):
    """Logistic sigmoid: ``dH/dx = alpha * sigmoid(alpha x) * (1 - sigmoid(alpha x))``."""

    name = "sigmoid"

    def __init__(self, alpha: float = 4.0) -> None:
        self.alpha = float(alpha)

    def derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.alpha * x)
        return self.alpha * s * (1 - s)


SURROGATES: dict[str, type[Surrogate]] = {
    cls.name: cls for cls in (Rectangular, ATan, FastSigmoid, Sigmoid)
}


def make_surrogate(name: str, **kwargs: Any) -> Surrogate:
    """Build a surrogate by name; an unknown name lists the valid ones."""
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; valid choices: {sorted(SURROGATES)}")
    return SURROGATES[name](**kwargs)


class _Heaviside(torch.autograd.Function):
    """Forward ``1[x > 0]`` (``strict``) or ``1[x >= 0]``; backward ``grad * surrogate'(x)``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, surrogate: Surrogate, strict: bool) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype) if strict else (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(x), None, None


def spike(x: Tensor, surrogate: Surrogate, strict: bool = False) -> Tensor:
    """Heaviside step of ``x`` with a surrogate gradient."""
    return _Heaviside.apply(x, surrogate, strict)


# --------------------------------------------------------------------------- neurons


class TemporalModule(nn.Module):
    """A module that consumes and produces time-first tensors ``[T, B, ...]`` itself (neurons,
    residual blocks containing neurons). Every other layer is applied time-merged."""


def seq_apply(layer: nn.Module, x: Tensor) -> Tensor:
    """Apply a stateless ``layer`` to ``[T, B, ...]`` by merging T into the batch dimension."""
    steps, batch = x.shape[:2]
    y = layer(x.flatten(0, 1))
    return y.view(steps, batch, *y.shape[1:])


class MultiStepNeuron(TemporalModule):
    """Runs a single-step neuron over a time-first input ``[T, B, ...]`` -> spikes ``[T, B, ...]``.

    Subclasses implement ``step(x_t, state) -> (spike_t, state)``; ``state`` is ``None`` at t = 0.
    """

    def __init__(self, v_threshold: float, surrogate: Surrogate) -> None:
        super().__init__()
        self.v_threshold = float(v_threshold)
        self.surrogate = surrogate

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        state = None
        spikes = []
        for x_t in x.unbind(0):
            s_t, state = self.step(x_t, state)
            spikes.append(s_t)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return f"v_threshold={self.v_threshold}, surrogate={self.surrogate}"


class STBPLIF(MultiStepNeuron):
    """Iterative LIF of STBP (Wu et al. 2018).

    ``u[t] = decay * u[t-1] * (1 - o[t-1]) + I[t]``, ``o[t] = 1[u[t] > V_th]``.
    The reset is folded into the decay and the gradient flows through ``o[t-1]`` in the reset
    term (it is not detached), exactly as in the STBP code.
    """

    def __init__(self, v_threshold: float = 0.5, decay: float = 0.25,
                 surrogate: Surrogate | None = None) -> None:
        super().__init__(v_threshold, surrogate or Rectangular(1.0))
        self.decay = float(decay)

    def step(self, x_t: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Any]:
        if state is None:
            u = x_t
        else:
            u_prev, o_prev = state
            u = self.decay * u_prev * (1 - o_prev) + x_t
        o = spike(u - self.v_threshold, self.surrogate, strict=True)
        return o, (u, o)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, decay={self.decay}"


class ParametricLIF(MultiStepNeuron):
    """LIF / PLIF of SpikingJelly (Fang et al. 2021), decay on the input:

    ``H[t] = V[t-1] + k (X[t] - (V[t-1] - V_reset))``, ``S[t] = 1[H[t] >= V_th]``,
    ``V[t] = H[t] (1 - S[t]) + V_reset S[t]`` with the reset spike detached (``detach_reset``).
    ``k = sigmoid(w)``; ``w`` is one learnable scalar per layer (PLIF) initialised so that
    ``1/k = tau0`` (``tau0 = 2`` -> ``w = 0``), or a fixed buffer (plain LIF, ``learnable=False``).
    """

    def __init__(self, tau0: float = 2.0, learnable: bool = True, v_threshold: float = 1.0,
                 v_reset: float = 0.0, surrogate: Surrogate | None = None,
                 detach_reset: bool = True) -> None:
        super().__init__(v_threshold, surrogate or ATan(2.0))
        if tau0 <= 1:
            raise ValueError(f"membrane time constant tau0 must be > 1, got {tau0}")
        w = torch.tensor(-math.log(tau0 - 1.0))
        if learnable:
            self.w = nn.Parameter(w)
        else:
            self.register_buffer("w", w)
        self.v_reset = float(v_reset)
        self.detach_reset = detach_reset

    @property
    def tau(self) -> Tensor:
        return 1 / torch.sigmoid(self.w.detach())

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
        return f"{super().extra_repr()}, tau={float(self.tau):.3f} ({kind}), v_reset={self.v_reset}"
