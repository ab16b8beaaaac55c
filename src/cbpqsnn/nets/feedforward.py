"""Feed-forward spiking networks built from a short layer spec (torchvision-VGG style).

Spec tokens (case-insensitive):

- ``C<n>`` / ``C<n>s<s>``: 3x3 convolution to ``n`` channels (padding 1, stride ``s``), batch-norm if
  the model asks for it, then a neuron
- ``SEW<n>``: SEW residual block on ``n`` channels (two conv[-BN]-neuron, ADD connect)
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
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from cbpqsnn.nets.pools import SpikeAvgPool2d, SpikeMaxPool2d
from cbpqsnn.nets.sew import SEWBlock
from cbpqsnn.neurons import MultiStepNeuron, TemporalModule, seq_apply

_TOKEN = re.compile(r"^(C)(\d+)(?:S(\d+))?$|^(P|M)(\d+)$|^(FC)(\d+)$|^(D)$|^(SEW)(\d+)$")


class LayerStack(nn.Module):
    """A sequence of layers for inputs ``[B, *in_shape]`` (static) or ``[T, B, *in_shape]``
    (frames); the base of :class:`SpikingNet` and the conversion's ``ConvertibleNet``."""

    def __init__(self, layers: Sequence[nn.Module], in_shape: Sequence[int], T: int) -> None:
        super().__init__()
        if T < 1:
            raise ValueError(f"number of time steps T must be >= 1, got {T}")
        self.layers = nn.ModuleList(layers)
        self.in_shape = tuple(in_shape)

    def is_frames(self, x: Tensor) -> bool:
        """True for frames ``[T, B, ...]``, False for a static batch; any other shape is an error."""
        if x.dim() not in (len(self.in_shape) + 1, len(self.in_shape) + 2):
            raise ValueError(f"expected input [B, {', '.join(map(str, self.in_shape))}] or "
                             f"[T, B, ...], got shape {tuple(x.shape)}")
        return x.dim() == len(self.in_shape) + 2


class SpikingNet(LayerStack):
    """Sequential SNN on time-first tensors. Input ``[B, *in_shape]`` (static, repeated over
    ``T`` steps) or ``[T, B, *in_shape]``; output ``[T, B, num_classes]``."""

    def __init__(self, layers: Sequence[nn.Module], in_shape: Sequence[int], T: int) -> None:
        super().__init__(layers, in_shape, T)
        self.T = int(T)

    def forward(self, x: Tensor) -> Tensor:
        return run_time_first(self.layers, x, self.T, self.is_frames(x),
                              lambda layer: isinstance(layer, TemporalModule))


def run_time_first(layers: Iterable[nn.Module], x: Tensor, T: int, temporal: bool,
                   stateful: Callable[[nn.Module], bool],
                   call: Callable[[nn.Module, Tensor], Tensor] | None = None) -> Tensor:
    """Run ``layers`` on ``x`` and return ``[T, B, ...]``. Frames (``temporal``) go through every
    layer time-first (stateless layers per step, :func:`seq_apply`). A static input ``[B, ...]``
    goes through the stateless layers before the first ``stateful`` one once and is repeated over
    ``T`` there. ``call(layer, x)`` runs a stateful layer (default: ``layer(x)``)."""
    for layer in layers:
        if stateful(layer):
            if not temporal:
                x = x.unsqueeze(0).expand(T, *x.shape)
                temporal = True
            x = call(layer, x) if call is not None else layer(x)
        elif temporal:
            x = seq_apply(layer, x)
        else:
            x = layer(x)
    if not temporal:
        x = x.unsqueeze(0).expand(T, *x.shape)
    return x


def parse_spec(spec: Sequence[str]) -> list[tuple[str, int, int]]:
    """Parse spec tokens into ``(kind, size, stride)`` tuples; a bad token raises a clear error."""
    parsed = []
    for token in spec:
        m = _TOKEN.match(str(token).strip().upper())
        if m is None:
            raise ValueError(
                f"bad layer token {token!r} in model spec; expected C<n>, C<n>s<stride>, SEW<n>, "
                "P<k>, M<k>, FC<n> or D (e.g. ['C32', 'P2', 'C64s2', 'FC128'])"
            )
        if m.group(1):
            parsed.append(("conv", int(m.group(2)), int(m.group(3) or 1)))
        elif m.group(4):
            parsed.append(("avgpool" if m.group(4) == "P" else "maxpool", int(m.group(5)), 0))
        elif m.group(6):
            parsed.append(("fc", int(m.group(7)), 0))
        elif m.group(9):
            parsed.append(("sew", int(m.group(10)), 0))
        else:
            parsed.append(("dropout", 0, 0))
    return parsed


def conv_output_shape(shape: tuple[int, ...], channels: int, stride: int, spec: Sequence[str]
                      ) -> tuple[int, int, int]:
    """Shape after a 3x3, padding-1 conv to ``channels`` (an FC layer before it is an error)."""
    if len(shape) != 3:
        raise ValueError(f"conv layer C{channels} after a fully connected layer in {list(spec)}")
    return (channels, (shape[1] - 1) // stride + 1, (shape[2] - 1) // stride + 1)


def conv_layers(shape: tuple[int, ...], channels: int, stride: int, spec: Sequence[str], *,
                bias: bool, batch_norm: bool) -> tuple[list[nn.Module], tuple[int, int, int]]:
    """The ``C<n>[s<k>]`` token's 3x3, padding-1 conv (and BN) and the shape after it."""
    out_shape = conv_output_shape(shape, channels, stride, spec)
    layers: list[nn.Module] = [nn.Conv2d(shape[0], channels, 3, stride, 1, bias=bias)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(channels))
    return layers, out_shape


def flatten_if_needed(layers: list[nn.Module], shape: tuple[int, ...]) -> tuple[int, ...]:
    """Append ``nn.Flatten`` before a fully connected layer when the input is a feature map."""
    if len(shape) == 1:
        return shape
    layers.append(nn.Flatten())
    return (int(torch.tensor(shape).prod()),)


def build_spiking_net(
    spec: Sequence[str],
    in_shape: Sequence[int],
    num_classes: int,
    neuron: Callable[[], MultiStepNeuron],
    T: int,
    bias: bool = True,
    dropout: float = 0.0,
    spiking_output: bool = True,
    batch_norm: bool = False,
    classifier_bias: bool | None = None,
) -> SpikingNet:
    """Build a :class:`SpikingNet` from ``spec`` for inputs of shape ``in_shape`` (C, H, W).

    ``bias`` applies to every conv/FC layer; ``classifier_bias`` (default: ``bias``) to the
    appended classifier only (SEW-ResNets have bias-free convs before BN but a biased FC).
    """
    layers: list[nn.Module] = []
    shape = tuple(in_shape)
    for kind, size, stride in parse_spec(spec):
        if kind == "conv":
            conv, shape = conv_layers(shape, size, stride, spec, bias=bias, batch_norm=batch_norm)
            layers += [*conv, neuron()]
        elif kind == "sew":
            if len(shape) != 3 or shape[0] != size:
                raise ValueError(f"SEW{size} needs a {size}-channel feature map, got shape {shape} "
                                 f"in {list(spec)}; put C{size} before it")
            layers.append(SEWBlock(size, neuron, bias=bias, batch_norm=batch_norm))
        elif kind in ("avgpool", "maxpool"):
            pool = SpikeAvgPool2d if kind == "avgpool" else SpikeMaxPool2d
            layers.append(pool(size))
            shape = (shape[0], shape[1] // size, shape[2] // size)
        elif kind == "dropout":
            layers.append(nn.Dropout(dropout))
        else:
            shape = flatten_if_needed(layers, shape)
            layers += [nn.Linear(shape[0], size, bias=bias), neuron()]
            shape = (size,)
    shape = flatten_if_needed(layers, shape)
    layers.append(nn.Linear(shape[0], num_classes, bias=bias if classifier_bias is None else classifier_bias))
    if spiking_output:
        layers.append(neuron())
    return SpikingNet(layers, in_shape, T)
