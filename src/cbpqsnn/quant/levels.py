"""Level sets (cbp.md section 2): factor sets F; a layer's levels are ``Q_l = a_l * F`` with the
frozen scale ``a_l = mean(|W_l|)`` of the pretrained weights."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import Tensor

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


def layer_scale(weight: Tensor) -> Tensor:
    """Frozen per-layer scale ``a_l = mean(|W_l|)`` of the pretrained weights."""
    return weight.detach().abs().mean()


def layer_levels(weight: Tensor, factors: tuple[float, ...] | list[float]) -> Tensor:
    """Ascending levels ``a_l * F`` (same dtype/device as ``weight``)."""
    f = torch.tensor(sorted(factors), dtype=weight.dtype, device=weight.device)
    return layer_scale(weight) * f
