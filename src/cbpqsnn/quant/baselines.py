"""The quantization algorithms CBP is compared with (``quant.algorithm``), as weight
parametrizations the :class:`~cbpqsnn.quant.callback.CBPCallback` registers instead of the plain
nearest-level quantizer. Everything else -- layer selection, latent clamp, bake, export, summary --
is the callback's, shared by every algorithm.

- ``cbp``: constrained backpropagation (this project, docs/algorithm.md): the nearest-level straight-through
  forward onto the frozen levels ``a_l * F`` plus the constraint term and its multipliers.
- ``ptq``: post-training quantization: the pretrained weights rounded to their nearest level
  ``a_l * F`` (the same frozen scale as CBP), no fine-tuning.
- ``ste``: straight-through fine-tuning of latent FP32 weights on the frozen levels, no constraint
  (BinaryConnect: Courbariaux et al., NeurIPS 2015): forward ``q(w)``, backward ``dL/dw = dL/dq``.
- ``scaled_ste``: the per-layer scale recomputed from the current latent weights at every forward
  (straight-through backward, the scale's own dependence on ``w`` not differentiated):
  binary ``q = a sign(w)``, ``a = mean|w|`` (BWN weights of XNOR-Net: Rastegari et al., ECCV 2016);
  ternary ``q = a sign(w) 1[|w| > d]``, ``d = 0.7 mean|w|``, ``a = mean(|w| : |w| > d)`` (TWN:
  Li et al., 2016).
- ``lsq``: a learned per-layer step size ``s`` (LSQ: Esser et al., ICLR 2020), for the uniform
  sets with a zero level (ternary, intN): ``q = round(clamp(w / s, -Qp, Qp)) s`` with
  ``Qp = (|F| - 1) / 2``; straight-through round, so ``dq/dw = 1`` inside the clip range and 0
  outside, and ``dq/ds = round(v) - v`` inside, ``+-Qp`` outside (``v = w / s``), the step's
  gradient scaled by ``1 / sqrt(numel(w) Qp)``; ``s`` initialised to ``2 mean|w| / sqrt(Qp)`` and
  trained by the stage's weight optimizer. Its levels are ``s k``, ``k = -Qp .. Qp``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cbpqsnn.quant.levels import layer_levels
from cbpqsnn.quant.quantizer import LevelQuantizer

ALGORITHMS = ("cbp", "ptq", "ste", "scaled_ste", "lsq")
TWN_THRESHOLD = 0.7  # TWN: the ternary threshold is 0.7 * mean|w| (Li et al. 2016, eq. 7)


def _uniform_steps(factors: Sequence[float]) -> int | None:
    """``Qp`` when ``factors`` are ``k / Qp``, ``k = -Qp .. Qp`` (uniform with zero), else None."""
    qp = (len(factors) - 1) // 2
    if len(factors) % 2 == 0 or qp < 1:
        return None
    expected = [k / qp for k in range(-qp, qp + 1)]
    uniform = all(math.isclose(f, e, abs_tol=1e-9) for f, e in zip(factors, expected, strict=True))
    return qp if uniform else None


def algorithm_label(algorithm: str, variant: str | None = None) -> str:
    """How job folders and reports name an algorithm run with a variant (the config's
    ``variant``, non-default settings it tries): ``cbp@slow_window``; plainly ``cbp``."""
    return f"{algorithm}@{variant}" if variant else algorithm


def label_order(label: str) -> tuple[int, str]:
    """Sort key of algorithm labels: ``ALGORITHMS`` order, each algorithm before its variants."""
    base = label.split("@", 1)[0]
    return (ALGORITHMS.index(base) if base in ALGORITHMS else len(ALGORITHMS), label)


def check_algorithm(algorithm: str, factors: Sequence[float]) -> None:
    """An unknown algorithm, or one not defined for the level set, is a ValueError saying which."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown quant.algorithm {algorithm!r}; valid choices: {list(ALGORITHMS)}")
    if algorithm == "scaled_ste" and len(factors) not in (2, 3):
        raise ValueError(f"quant.algorithm=scaled_ste (BWN / TWN scales) is defined for binary and "
                         f"ternary, not for the level set {list(factors)}; use ste, lsq or cbp")
    if algorithm == "lsq" and _uniform_steps(factors) is None:
        raise ValueError(f"quant.algorithm=lsq needs a uniform level set with a zero level "
                         f"(ternary, intN), not {list(factors)}; use ste, scaled_ste or cbp")


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, v: Tensor) -> Tensor:
        return torch.round(v)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad


class _GradScale(torch.autograd.Function):
    """Identity forward; the gradient times ``scale`` (LSQ's step-size gradient scale)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


class _Through(torch.autograd.Function):
    """Forward ``q`` (computed without autograd), backward the identity to ``w``."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, q: Tensor) -> Tensor:
        return q

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class ScaledQuantizer(nn.Module):
    """``scaled_ste``: BWN (binary) / TWN (ternary) quantization with the scale of the current
    weights (module docstring)."""

    def __init__(self, factors: Sequence[float]) -> None:
        super().__init__()
        self.ternary = len(factors) == 3

    @torch.no_grad()
    def scale_and_threshold(self, w: Tensor) -> tuple[Tensor, Tensor]:
        mean_abs = w.abs().mean()
        if not self.ternary:
            return mean_abs, torch.zeros_like(mean_abs)
        threshold = TWN_THRESHOLD * mean_abs
        above = w.abs() > threshold
        scale = w.abs()[above].mean() if bool(above.any()) else mean_abs
        return scale, threshold

    def current_levels(self, w: Tensor) -> Tensor:
        scale, _ = self.scale_and_threshold(w)
        factors = [-1.0, 0.0, 1.0] if self.ternary else [-1.0, 1.0]
        return scale * torch.tensor(factors, dtype=w.dtype, device=w.device)

    def forward(self, w: Tensor) -> Tensor:
        scale, threshold = self.scale_and_threshold(w)
        with torch.no_grad():
            sign = torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
            if self.ternary:
                sign = sign.masked_fill_(w.abs() <= threshold, 0.0)
            q = sign * scale
        return _Through.apply(w, q)


class LSQQuantizer(nn.Module):
    """``lsq``: learned step size (module docstring); ``step`` is a trainable parameter."""

    def __init__(self, weight: Tensor, factors: Sequence[float]) -> None:
        super().__init__()
        qp = _uniform_steps(factors)
        assert qp is not None, "check_algorithm refuses non-uniform sets"
        self.qp = qp
        init = 2 * weight.detach().abs().mean() / math.sqrt(qp)
        self.step = nn.Parameter(init.clone().float().to(weight.dtype))
        self.grad_scale = 1.0 / math.sqrt(weight.numel() * qp)

    def current_levels(self, w: Tensor) -> Tensor:
        k = torch.arange(-self.qp, self.qp + 1, dtype=w.dtype, device=w.device)
        return k * self.step.detach().to(w.dtype)

    def forward(self, w: Tensor) -> Tensor:
        step = _GradScale.apply(self.step, self.grad_scale)
        return _RoundSTE.apply(torch.clamp(w / step, -self.qp, self.qp)) * step


def make_quantizer(algorithm: str, weight: Tensor, factors: Sequence[float], scale: str) -> nn.Module:
    """The weight parametrization of ``algorithm`` for one layer (``scale``: the frozen-scale rule
    of ``cbp`` / ``ptq`` / ``ste``)."""
    check_algorithm(algorithm, factors)
    if algorithm == "scaled_ste":
        return ScaledQuantizer(factors)
    if algorithm == "lsq":
        return LSQQuantizer(weight, factors)
    return LevelQuantizer(layer_levels(weight, factors, scale))
