"""Level sets (docs/algorithm.md section 2): factor sets F; a layer's levels are ``Q_l = a_l * F``
with a scale ``a_l`` of the pretrained weights, computed once by the level set's scale rule and then
frozen.

Scale rules (``quant.scale``):

- ``mean_abs``: ``a = mean|W|``, the paper's rule for binary and ternary (for binary it is also the
  least-squares scale: ``argmin_a sum (W - a sign W)^2 = mean|W|``);
- ``max_abs``: ``a = max|W|``, no weight clipped (the top level at the largest magnitude);
- ``mse``: the clip minimising the rounding error ``sum (W - quantize(W; a F))^2``, searched over
  ``a = max|W| * k / 200``, k = 1 .. 200 (the best of a fine grid, not an analytic optimum).

``mean_abs`` puts the top level of a multi-level set at the mean magnitude, so a large share of a
bell-shaped layer lies beyond it and is clipped (what that costs: docs/algorithm.md section 2),
so the default rule depends on the set (:func:`default_scale`): ``mean_abs`` for two or three
levels, ``mse`` above.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import Tensor

from cbpqsnn.quant.quantizer import quantize

_FACTORS: dict[str, tuple[float, ...]] = {
    "binary": (-1.0, 1.0),
    "ternary": (-1.0, 0.0, 1.0),
    "shift1": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "shift2": (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0),
}
LEVEL_SETS = (*_FACTORS, "intN (N >= 2, e.g. int4)")


def level_factors(levels: str | Sequence[float]) -> tuple[float, ...]:
    """Ascending factor set ``F``: of a level-set name (binary, ternary, shift1, shift2, intN), or a
    factor list as written in a ``conf/quant`` file (at least two distinct factors, the largest
    ``|f|`` exactly 1 -- the layer's levels are ``a_l * F``; a new level set is one YAML file).

    ``intN``: symmetric uniform ``k / (2^(N-1) - 1)``, ``k = -(2^(N-1) - 1) ... 2^(N-1) - 1``.
    """
    if not isinstance(levels, str):
        try:
            factors = tuple(sorted(float(f) for f in levels))
        except (TypeError, ValueError):
            raise ValueError(f"a level set is a name ({', '.join(LEVEL_SETS)}) or a list of "
                             f"factors such as [-1, 0, 1], got {levels!r}") from None
        if len(set(factors)) != len(factors) or len(factors) < 2:
            raise ValueError(f"a factor list needs at least two distinct factors, got {list(factors)}")
        if max(abs(f) for f in factors) != 1.0:
            raise ValueError(f"the largest |factor| must be 1 (levels are a_l * F with the layer's "
                             f"scale a_l), got {list(factors)}; divide the list by its largest |factor|")
        return factors
    key = str(levels).lower()
    if key in _FACTORS:
        return _FACTORS[key]
    m = re.fullmatch(r"int(\d+)", key)
    if m and int(m.group(1)) >= 2:
        top = 2 ** (int(m.group(1)) - 1) - 1
        return tuple(k / top for k in range(-top, top + 1))
    raise ValueError(f"unknown level set {levels!r}; valid choices: {', '.join(LEVEL_SETS)}, or a "
                     "factor list such as [-1, -0.5, 0, 0.5, 1]")


def bits_per_weight(factors: tuple[float, ...] | list[float]) -> int:
    """``ceil(log2 |F|)`` bits to store one weight's level index."""
    return max(1, math.ceil(math.log2(len(factors))))


SCALES = ("mean_abs", "max_abs", "mse")
MSE_GRID = 200  # candidate clips of the ``mse`` rule: max|W| * k / MSE_GRID
MSE_SAMPLE = 1 << 20  # the ``mse`` search reads at most about this many weights (evenly strided)


def default_scale(factors: Sequence[float]) -> str:
    """The scale rule a level set uses unless ``quant.scale`` says otherwise: the paper's
    ``mean_abs`` for binary and ternary (two or three levels), ``mse`` for the multi-level sets."""
    return "mean_abs" if len(factors) <= 3 else "mse"


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"unknown scale rule {scale!r}; valid choices: {', '.join(SCALES)}")
    return scale


@torch.no_grad()
def layer_scale(weight: Tensor, factors: Sequence[float] = (-1.0, 1.0), rule: str = "mean_abs") -> Tensor:
    """Per-layer scale ``a_l`` of ``weight`` by ``rule`` (see the module docstring), a 0-dim tensor."""
    w = weight.detach()
    if check_scale(rule) == "mean_abs":
        return w.abs().mean()
    top = w.abs().max()
    if rule == "max_abs" or top == 0:
        return top
    f = torch.tensor(sorted(factors), dtype=w.dtype, device=w.device)
    flat = w.reshape(-1)[:: max(1, w.numel() // MSE_SAMPLE)]  # every k-th weight of a big layer
    candidates = top * torch.arange(1, MSE_GRID + 1, dtype=w.dtype, device=w.device) / MSE_GRID
    errors = torch.stack([(flat - quantize(flat, a * f)).square().sum() for a in candidates])
    return candidates[int(errors.argmin())]


def layer_levels(weight: Tensor, factors: Sequence[float], rule: str = "mean_abs") -> Tensor:
    """Ascending levels ``a_l * F`` (same dtype/device as ``weight``), ``a_l`` by ``rule``."""
    f = torch.tensor(sorted(factors), dtype=weight.dtype, device=weight.device)
    return layer_scale(weight, factors, rule) * f
