"""Surrogate gradient functions and the Heaviside step they stand in for.

Surrogates are small objects chosen by name (:func:`make_surrogate`): the forward pass is always
the Heaviside step, the backward pass uses the surrogate's derivative.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


class Surrogate:
    """Base surrogate: ``derivative(x)`` approximates dH/dx of the Heaviside step at ``x``."""

    name = "base"

    def derivative(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative_(self, x: Tensor) -> Tensor:
        """``derivative(x)`` written into ``x`` (a scratch tensor), bitwise the same values: the
        fused neurons' backward uses it to avoid temporaries."""
        return x.copy_(self.derivative(x))

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

    def derivative_(self, x: Tensor) -> Tensor:
        return x.abs_().lt_(self.width / 2).div_(self.width)


class ATan(Surrogate):
    """Arc-tangent (SpikingJelly's default): ``dH/dx = (alpha/2) / (1 + (pi/2 * alpha * x)^2)``."""

    name = "atan"

    def __init__(self, alpha: float = 2.0) -> None:
        self.alpha = float(alpha)

    def derivative(self, x: Tensor) -> Tensor:
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * x).square())

    def derivative_(self, x: Tensor) -> Tensor:  # scalar / t is t.reciprocal() * scalar in torch
        return x.mul_(math.pi / 2 * self.alpha).square_().add_(1).reciprocal_().mul_(self.alpha / 2)


class FastSigmoid(Surrogate):
    """Fast sigmoid (SuperSpike): ``dH/dx = 1 / (1 + alpha*|x|)^2``."""

    name = "fast_sigmoid"

    def __init__(self, alpha: float = 10.0) -> None:
        self.alpha = float(alpha)

    def derivative(self, x: Tensor) -> Tensor:
        return 1 / (1 + self.alpha * x.abs()).square()

    def derivative_(self, x: Tensor) -> Tensor:
        return x.abs_().mul_(self.alpha).add_(1).square_().reciprocal_()


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
