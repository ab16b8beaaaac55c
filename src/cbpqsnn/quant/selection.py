"""Which weights CBP quantizes (docs/algorithm.md section 1)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def select_layers(
    model: nn.Module,
    skip_first_last: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[str]:
    """Names of the Conv/Linear modules whose weights are quantized, in registration order.

    Every trainable Conv*d/Linear weight is a candidate; fixed (``requires_grad=False``) layers,
    such as an average pool written as a fixed conv, are not. By default the first and the last
    candidate (input layer and classifier) stay FP32. ``include`` / ``exclude`` are glob patterns
    on module names applied afterwards: ``include`` forces a layer in, ``exclude`` out.
    """
    candidates = [
        name for name, m in model.named_modules()
        if isinstance(m, QUANTIZABLE) and m.weight.requires_grad
    ]
    chosen = candidates[1:-1] if skip_first_last else list(candidates)
    chosen += [n for n in candidates if n not in chosen and any(fnmatch.fnmatch(n, p) for p in include)]
    chosen = [n for n in candidates if n in chosen and not any(fnmatch.fnmatch(n, p) for p in exclude)]
    return chosen
