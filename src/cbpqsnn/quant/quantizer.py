"""Nearest-level quantizer and the constraint function of CBP (docs/algorithm.md sections 3 and 4).

For ascending levels ``q_1 < ... < q_n`` with medians ``m_i = (q_i + q_{i+1}) / 2``:

- ``quantize(w) = q_1 + sum_i (q_{i+1} - q_i) [w >= m_i]`` (nearest level, ties go up), computed as
  a gather from the level table so the result is bit-exactly a level value;
- ``Y(w) = 2 |w - quantize(w)|`` (no window; its mean is the constraint-failure score CFS);
- ``cs(w; g) = Y(w)`` outside the unconstrained bands ``|w - m_i| < (q_{i+1} - q_i) / (2g)``, 0 inside;
  ``dcs/dw = 2 sign(w - quantize(w))`` outside the bands, 0 inside.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def medians(levels: Tensor) -> Tensor:
    return (levels[1:] + levels[:-1]) / 2


def level_index(w: Tensor, levels: Tensor) -> Tensor:
    """Index of the nearest level (``#{i : w >= m_i}``; a tie at a median goes up)."""
    return torch.bucketize(w, medians(levels), right=True)


def quantize(w: Tensor, levels: Tensor) -> Tensor:
    """Nearest level of every element of ``w`` (exact level values)."""
    return levels[level_index(w, levels)]


def constraint_failure(w: Tensor, levels: Tensor) -> Tensor:
    """``Y(w) = 2 * distance(w, nearest level)``."""
    return 2 * (w - quantize(w, levels)).abs()


FEW_LEVELS = 8  # up to this many levels the constraint fills by comparison; above, one search


@torch.no_grad()
def constraint(w: Tensor, levels: Tensor, g: float) -> tuple[Tensor, Tensor]:
    """Windowed constraint ``cs(w; g)`` and its gradient ``dcs/dw`` (element-wise, no autograd).

    Needs the nearest level ``q(w)`` and the median ``m_j`` and band half-width of the interval
    ``[q_j, q_{j+1})`` holding ``w`` (clamped to the outer intervals). For a few levels (binary,
    ternary, shift sets) they are filled level by level with comparisons, without index tensors
    (binary needs one comparison); for many (int4, int8) one ``bucketize`` gives the nearest level
    ``k`` and the interval is ``j = k`` at or above ``q_k``, ``k - 1`` below it. Both are bitwise
    the definition with two searches (tests keep it as the reference).
    """
    if g < 1:
        raise ValueError(f"window parameter g must be >= 1, got {g}")
    if len(levels) > FEW_LEVELS:
        return _constraint_by_search(w, levels, g)
    n = len(levels)  # the tables as Python numbers, read in one transfer (one sync on a GPU)
    table = torch.cat([levels, medians(levels), (levels[1:] - levels[:-1]) / (2 * g)]).tolist()
    values, mids, half_bands = table[:n], table[n:2 * n - 1], table[2 * n - 1:]
    nearest = torch.where(w >= mids[0], w.new_tensor(values[1]), w.new_tensor(values[0]))
    for i in range(1, len(mids)):  # ties at a median go up
        nearest.masked_fill_(w >= mids[i], values[i + 1])
    if len(values) == 2:  # one interval; symmetric levels have their median at 0 (w - 0 = w)
        free = (w.abs() if mids[0] == 0 else (w - mids[0]).abs_()) < half_bands[0]
    else:
        mid_of = torch.full_like(w, mids[0])
        band_of = torch.full_like(w, half_bands[0])
        for j in range(1, len(values) - 1):
            inside = w >= values[j]
            mid_of.masked_fill_(inside, mids[j])
            band_of.masked_fill_(inside, half_bands[j])
        free = torch.sub(w, mid_of, out=mid_of).abs_() < band_of
    return _outside_bands(torch.sub(w, nearest, out=nearest), free)


def _constraint_by_search(w: Tensor, levels: Tensor, g: float) -> tuple[Tensor, Tensor]:
    m = medians(levels)
    idx = torch.bucketize(w, m, right=True)
    diff = w - levels[idx]
    lower = (idx - (diff < 0).to(idx.dtype)).clamp_(0, len(levels) - 2)
    half_band = (levels[1:] - levels[:-1]) / (2 * g)
    free = (w - m[lower]).abs_() < half_band[lower]
    return _outside_bands(diff, free)


def _outside_bands(diff: Tensor, free: Tensor) -> tuple[Tensor, Tensor]:
    """``cs = 2 |w - q(w)|`` and ``dcs/dw = 2 sign(w - q(w))`` outside the bands, 0 inside."""
    twice = diff.mul_(2).masked_fill_(free, 0)
    return twice.abs(), twice.sign_().mul_(2)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, w: Tensor, levels: Tensor) -> Tensor:
        return quantize(w, levels)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class LevelQuantizer(nn.Module):
    """Weight parametrization ``w -> quantize(w)`` with a straight-through (identity) backward.

    Registered with ``torch.nn.utils.parametrize`` so that the layer computes with ``w_q`` in
    training and validation while the optimizer updates the latent FP32 weight. ``levels``
    (``a_l * F``) is a buffer, so it travels with the model's state_dict.
    """

    def __init__(self, levels: Tensor) -> None:
        super().__init__()
        self.register_buffer("levels", levels.detach().clone())

    def current_levels(self, w: Tensor) -> Tensor:
        """The levels ``w`` is quantized to (frozen: the same for any ``w``)."""
        return self.levels

    def forward(self, w: Tensor) -> Tensor:
        return _StraightThrough.apply(w, self.levels)

    def extra_repr(self) -> str:
        return f"levels={[round(v, 6) for v in self.levels.tolist()]}"
