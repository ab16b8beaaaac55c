"""Per-layer firing thresholds of the converted SNN (Li et al. 2021), averaged over a few batches
with momentum. Two rules (``THRESHOLD_RULES``), as in the reference ``get_maximum_activation``
(``yoees/CBP-QSNN`` ``CBP-QSNN-SNN-Calibration/CIFAR/models/spiking_layer.py``): ``mse``, the grid
search on the clip-floor quantization error of the ReLU output (light / advanced calibration), and
``max``, the maximum activation (the reference's "none" level, ``mse = False``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def clip_floor(x: Tensor, T: int, v_threshold: Tensor | float) -> Tensor:
    """What ``T`` steps of an IF neuron with threshold ``V`` can express:
    ``clip_floor(x) = V / T * clamp(floor(x T / V), 0, T)``."""
    return torch.clamp(torch.floor(x * T / v_threshold), 0, T) * v_threshold / T


@dataclass(frozen=True)
class ThresholdGrid:
    """Candidates ``V_i = max_act * (1 - step * i)``, ``i = 0 .. steps - 1`` (published: 95 x 0.01)."""

    steps: int = 95
    step: float = 0.01

    def __post_init__(self) -> None:
        if self.steps < 1 or self.step <= 0 or self.step * (self.steps - 1) >= 1:
            raise ValueError(f"threshold grid needs steps >= 1, step > 0 and step * (steps - 1) < 1, "
                             f"got steps={self.steps}, step={self.step}")

    def candidates(self, max_act: Tensor) -> Tensor:
        factors = 1 - self.step * torch.arange(self.steps, dtype=max_act.dtype, device=max_act.device)
        return max_act * factors


def quantization_error(x: Tensor, T: int, v_threshold: Tensor | float) -> Tensor:
    """Mean squared error ``mean((x - clip_floor(x, T, V))^2)``."""
    return (x - clip_floor(x, T, v_threshold)).square().mean()


def search_threshold(activation: Tensor, T: int, grid: ThresholdGrid = ThresholdGrid()) -> Tensor:
    """The grid candidate with the smallest :func:`quantization_error` on ``activation`` (ReLU
    outputs); the first (largest) one on ties. A layer that never activates gets ``max_act = 0``:
    its threshold is returned as 0 and :class:`ThresholdTracker` replaces it."""
    max_act = activation.max()
    if max_act <= 0:
        return torch.zeros((), dtype=activation.dtype, device=activation.device)
    candidates = grid.candidates(max_act)
    # zeros (most ReLU outputs) are expressed exactly by every candidate: the error sums over the
    # positive outputs only, divided by the full count -- the same mean, several times faster
    positive = activation[activation > 0]
    scale = positive.numel() / activation.numel()
    errors = torch.stack([quantization_error(positive, T, v) * scale for v in candidates])
    return candidates[int(torch.argmin(errors))]


THRESHOLD_RULES = ("mse", "max")


class ThresholdTracker:
    """Running threshold of one layer over calibration batches:
    ``V <- momentum * V + (1 - momentum) * V_batch`` (the first batch sets ``V``); ``V_batch`` is
    :func:`search_threshold` (``rule="mse"``) or the batch's maximum activation (``rule="max"``)."""

    def __init__(self, T: int, grid: ThresholdGrid = ThresholdGrid(), momentum: float = 0.9,
                 dead_threshold: float = 1.0, rule: str = "mse") -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"threshold momentum must be in [0, 1), got {momentum}")
        if rule not in THRESHOLD_RULES:
            raise ValueError(f"unknown threshold rule {rule!r}; valid choices: {list(THRESHOLD_RULES)}")
        self.rule = rule
        self.T = int(T)
        self.grid = grid
        self.momentum = float(momentum)
        self.dead_threshold = float(dead_threshold)
        self.value: Tensor | None = None

    def update(self, activation: Tensor) -> Tensor:
        if self.rule == "mse":
            v = search_threshold(activation, self.T, self.grid)
        else:
            v = activation.max().clamp(min=0)
        self.value = v if self.value is None else self.momentum * self.value + (1 - self.momentum) * v
        return self.value

    @property
    def threshold(self) -> Tensor:
        """The threshold to use; ``dead_threshold`` for a layer that never activated."""
        if self.value is None:
            raise RuntimeError("no calibration batch seen yet")
        if self.value <= 0:
            return torch.full_like(self.value, self.dead_threshold)
        return self.value
