"""Feed-forward spiking networks built from a short layer spec (torchvision-VGG style).

Spec tokens (case-insensitive):

- ``C<n>`` / ``C<n>s<s>``: 3x3 convolution to ``n`` channels (padding 1, stride ``s``), then a neuron
- ``P<k>``: average pool ``k x k``;  ``M<k>``: max pool ``k x k`` (no neuron)
- ``FC<n>``: fully connected to ``n`` features, then a neuron
- ``D``: dropout with the model's dropout rate

The classifier ``FC<num_classes>`` is appended automatically; it is followed by a neuron only
when ``spiking_output`` is true (STBP reads out the output layer's firing rate).

Stateless layers are applied once to the time-merged tensor ``[T*B, ...]``; a static input
``[B, C, H, W]`` passes through the stateless layers before the first neuron only once and is
then broadcast over T (direct encoding: the first layer acts as the encoder).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from cbpqsnn.neurons import MultiStepNeuron

_TOKEN = re.compile(r"^(C)(\d+)(?:S(\d+))?$|^(P|M)(\d+)$|^(FC)(\d+)$|^(D)$")


class SpikingNet(nn.Module):
    """Sequential SNN on time-first tensors. Input ``[B, *in_shape]`` (static, repeated over
    ``T`` steps) or ``[T, B, *in_shape]``; output ``[T, B, num_classes]``."""

    def __init__(self, layers: Sequence[nn.Module], in_shape: Sequence[int], T: int) -> None:
        super().__init__()
        if T < 1:
            raise ValueError(f"number of time steps T must be >= 1, got {T}")
        self.layers = nn.ModuleList(layers)
        self.in_shape = tuple(in_shape)
        self.T = int(T)

    def forward(self, x: Tensor) -> Tensor:
        temporal = x.dim() == len(self.in_shape) + 2
        if not temporal and x.dim() != len(self.in_shape) + 1:
            raise ValueError(
                f"expected input [B, {', '.join(map(str, self.in_shape))}] or [T, B, ...], "
                f"got shape {tuple(x.shape)}"
            )
        for layer in self.layers:
            if isinstance(layer, MultiStepNeuron):
                if not temporal:
                    x = x.unsqueeze(0).expand(self.T, *x.shape)
                    temporal = True
                x = layer(x)
            elif temporal:
                steps, batch = x.shape[:2]
                y = layer(x.flatten(0, 1))
                x = y.view(steps, batch, *y.shape[1:])
            else:
                x = layer(x)
        if not temporal:
            x = x.unsqueeze(0).expand(self.T, *x.shape)
        return x


def parse_spec(spec: Sequence[str]) -> list[tuple[str, int, int]]:
    """Parse spec tokens into ``(kind, size, stride)`` tuples; a bad token raises a clear error."""
    parsed = []
    for token in spec:
        m = _TOKEN.match(str(token).strip().upper())
        if m is None:
            raise ValueError(
                f"bad layer token {token!r} in model spec; expected C<n>, C<n>s<stride>, P<k>, "
                "M<k>, FC<n> or D (e.g. ['C32', 'P2', 'C64s2', 'FC128'])"
            )
        if m.group(1):
            parsed.append(("conv", int(m.group(2)), int(m.group(3) or 1)))
        elif m.group(4):
            parsed.append(("avgpool" if m.group(4) == "P" else "maxpool", int(m.group(5)), 0))
        elif m.group(6):
            parsed.append(("fc", int(m.group(7)), 0))
        else:
            parsed.append(("dropout", 0, 0))
    return parsed


def build_spiking_net(
    spec: Sequence[str],
    in_shape: Sequence[int],
    num_classes: int,
    neuron: Callable[[], MultiStepNeuron],
    T: int,
    bias: bool = True,
    dropout: float = 0.0,
    spiking_output: bool = True,
) -> SpikingNet:
    """Build a :class:`SpikingNet` from ``spec`` for inputs of shape ``in_shape`` (C, H, W)."""
    layers: list[nn.Module] = []
    shape = tuple(in_shape)
    for kind, size, stride in parse_spec(spec):
        if kind == "conv":
            if len(shape) != 3:
                raise ValueError(f"conv layer C{size} after a fully connected layer in {list(spec)}")
            layers += [nn.Conv2d(shape[0], size, 3, stride, 1, bias=bias), neuron()]
            shape = (size, (shape[1] - 1) // stride + 1, (shape[2] - 1) // stride + 1)
        elif kind in ("avgpool", "maxpool"):
            pool = nn.AvgPool2d if kind == "avgpool" else nn.MaxPool2d
            layers.append(pool(size))
            shape = (shape[0], shape[1] // size, shape[2] // size)
        elif kind == "dropout":
            layers.append(nn.Dropout(dropout))
        else:
            if len(shape) != 1:
                layers.append(nn.Flatten())
                shape = (int(torch.tensor(shape).prod()),)
            layers += [nn.Linear(shape[0], size, bias=bias), neuron()]
            shape = (size,)
    if len(shape) != 1:
        layers.append(nn.Flatten())
        shape = (int(torch.tensor(shape).prod()),)
    layers.append(nn.Linear(shape[0], num_classes, bias=bias))
    if spiking_output:
        layers.append(neuron())
    return SpikingNet(layers, in_shape, T)
