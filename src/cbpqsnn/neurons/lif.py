"""Leaky integrate-and-fire neurons: STBP's iterative LIF and SpikingJelly's LIF / PLIF."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from cbpqsnn.neurons.base import MultiStepNeuron
from cbpqsnn.neurons.surrogates import ATan, Rectangular, Surrogate, spike


class STBPLIF(MultiStepNeuron):
    """Iterative LIF of STBP (Wu et al. 2018).

    ``u[t] = decay * u[t-1] * (1 - o[t-1]) + I[t]``, ``o[t] = 1[u[t] > V_th]``.
    The reset is folded into the decay and the gradient flows through ``o[t-1]`` in the reset
    term (it is not detached), exactly as in the STBP code.
    """

    def __init__(self, v_threshold: float = 0.5, decay: float = 0.25,
                 surrogate: Surrogate | None = None) -> None:
        super().__init__(surrogate or Rectangular(1.0))
        self.v_threshold = float(v_threshold)
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
        return f"v_threshold={self.v_threshold}, decay={self.decay}, {super().extra_repr()}"


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
        return (f"v_threshold={self.v_threshold}, tau={float(self.tau):.3f} ({kind}), "
                f"v_reset={self.v_reset}, {super().extra_repr()}")
