"""Event-driven schedule of the window parameter g (docs/algorithm.md section 6)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class WindowDecision:
    """What the schedule decided at the end of an epoch."""

    updated: bool  # g was increased (a multiplier step follows)
    lr_drop: bool  # g just reached the LR-drop value


@dataclass
class WindowSchedule:
    """State ``g`` (starts 1), ``p`` (epochs since the last update), ``L_prev`` (+inf).

    At each epoch end with the epoch's Lagrangian sum ``L_sum``: ``p += 1``; if
    ``L_sum >= L_prev`` or ``p >= p_max``: ``g += 1`` while ``g < 10`` else ``g += 10``
    (1, 2, ..., 10, 20, 30, ...), ``L_prev = inf``, ``p = 0``; otherwise ``L_prev = L_sum``.
    """

    p_max: int = 20
    lr_drop_at_g: int | None = 20
    g: int = 1
    p: int = 0
    L_prev: float = math.inf

    def __post_init__(self) -> None:
        if self.p_max < 1:
            raise ValueError(f"p_max must be >= 1, got {self.p_max}")

    @staticmethod
    def next_g(g: int) -> int:
        return g + 1 if g < 10 else g + 10

    def end_epoch(self, L_sum: float) -> WindowDecision:
        if math.isnan(L_sum):
            raise ValueError("the epoch's Lagrangian sum is NaN")
        self.p += 1
        if L_sum >= self.L_prev or self.p >= self.p_max:
            self.g = self.next_g(self.g)
            self.L_prev = math.inf
            self.p = 0
            return WindowDecision(True, self.lr_drop_at_g is not None and self.g == self.lr_drop_at_g)
        self.L_prev = float(L_sum)
        return WindowDecision(False, False)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
