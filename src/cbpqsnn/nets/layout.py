"""Channels-last feature maps (``memory_format=channels_last``): the layout and its test, in one
place for the backbones, the pools and the benchmarks."""

from __future__ import annotations

from torch import Tensor


def channels_innermost(x: Tensor) -> Tensor:
    """``x [..., C, H, W]`` with the same values, laid out with the channels innermost in memory
    (PyTorch's channels-last for 4-D maps; time and batch dims, if any, stay outermost)."""
    return x.movedim(-3, -1).contiguous().movedim(-1, -3)


def is_channels_innermost(x: Tensor) -> bool:
    """True for a 4-D map ``[N, C, H, W]`` (C > 1) laid out with the channels innermost."""
    return x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1
