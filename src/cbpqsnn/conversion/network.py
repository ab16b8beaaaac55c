"""The network of the conversion route: one module that runs as the ANN or as the converted SNN.

Spec tokens are those of :func:`cbpqsnn.nets.feedforward.parse_spec`: ``C<n>`` (3x3 conv, bias,
optional batch-norm, then an activation, then optional dropout), ``P<k>`` (average pool: a fixed
pooling conv followed by its own activation, or a plain ``AvgPool2d``), ``FC<n>`` (linear, then an
activation), ``D`` (dropout). The analog classifier ``Linear -> classes`` is appended.
Every activation is an :class:`IFNeuron`: ReLU in the analog (ANN) mode, integrate-and-fire in the
spiking mode. The mode, the thresholds and the initial potentials are buffers, so a converted
network's ``state_dict`` restores it strictly into a freshly built one.

The VGG-16 of the CBP-QSNN paper rows follows the authors' code (``yoees/CBP-QSNN``,
``CBP-QSNN-SNN-Calibration/CIFAR/models/vgg.py`` and ``spiking_layer.py``): every average pool is a
fixed depthwise 2x2 conv followed by a spiking neuron (``AvgPoolConv``; :class:`AvgPoolConv` here),
the dropout of the BN-free net follows the neuron (it drops output spikes in the SNN), and the
weights start from ``init="reference"`` (:func:`reference_init`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cbpqsnn.nets.feedforward import (
    LayerStack,
    conv_layers,
    flatten_if_needed,
    parse_spec,
    run_time_first,
)
from cbpqsnn.neurons import IFNeuron

# called before a neuron fires in the spiking pass: (neuron index, neuron, input current [T, B, ...])
# -> the input current to use (calibration corrects biases and potentials through it)
NeuronHook = Callable[[int, "IFNeuron", Tensor], Tensor]
INITS = ("reference", "torch")


class AvgPoolConv(nn.Module):
    """Average pool written as a fixed depthwise conv (``yoees/CBP-QSNN`` ``AvgPoolConv``), so that
    the pool gets its own neuron, threshold, calibration and rescaling:
    ``y = conv2d(x, W, b, stride=k, groups=C)`` with ``W = 1/k^2`` at build time.

    ``weight`` and ``bias`` are buffers, not parameters: never trained, never quantized
    (docs/algorithm.md section 1), but bias correction shifts ``bias`` and the rescaling to unit
    thresholds scales ``weight`` (``W <- W V_prev / V``), as for any layer that feeds a neuron.
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.register_buffer("weight", torch.full((channels, 1, kernel_size, kernel_size),
                                                  1.0 / kernel_size**2))
        self.register_buffer("bias", torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, stride=self.kernel_size, groups=self.weight.shape[0])

    def extra_repr(self) -> str:
        return f"channels={self.weight.shape[0]}, kernel_size={self.kernel_size}"


SYNAPSES = (nn.Conv2d, nn.Linear, AvgPoolConv)  # layers that feed a neuron


class ConvertibleNet(LayerStack):
    """Sequential ANN / SNN. Analog mode: ``x -> [1, B, classes]`` (the ANN's logits). Spiking mode:
    static ``[B, *in_shape]`` (the image is the input current at every step) or ``[T, B, ...]``
    -> ``[T, B, classes]``, the analog classifier applied at every step (the readout sums over T).

    Buffers ``spiking`` (the mode), ``bn_folded`` (batch-norm folded into the convs; BN layers are
    then skipped) and ``time_steps`` (T) are part of the ``state_dict``.
    """

    def __init__(self, layers: Sequence[nn.Module], in_shape: Sequence[int], T: int) -> None:
        super().__init__(layers, in_shape, T)
        self.register_buffer("time_steps", torch.tensor(int(T)))
        self.register_buffer("spiking", torch.tensor(False))
        self.register_buffer("bn_folded", torch.tensor(False))
        self.neuron_index = [i for i, m in enumerate(self.layers) if isinstance(m, IFNeuron)]
        self.synapse_index = [self._synapse_before(i) for i in self.neuron_index]
        self.classifier_index = max(i for i, m in enumerate(self.layers) if isinstance(m, SYNAPSES))

    def _synapse_before(self, index: int) -> int:
        for j in range(index - 1, -1, -1):
            if isinstance(self.layers[j], SYNAPSES):
                return j
        raise ValueError("every neuron needs a conv or linear layer before it")

    # -- structure ------------------------------------------------------------------------
    @property
    def T(self) -> int:
        """Simulation length of a static input (a buffer: a converted net keeps its own)."""
        return int(self.time_steps)

    @T.setter
    def T(self, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"number of time steps T must be >= 1, got {steps}")
        self.time_steps.fill_(int(steps))

    @property
    def is_spiking(self) -> bool:
        return bool(self.spiking)

    def set_spiking(self, spiking: bool) -> None:
        self.spiking.fill_(bool(spiking))

    @property
    def neurons(self) -> list[IFNeuron]:
        return [self.layers[i] for i in self.neuron_index]  # type: ignore[misc]

    @property
    def synapses(self) -> list[nn.Module]:
        """The conv / linear layer feeding each neuron, in order."""
        return [self.layers[i] for i in self.synapse_index]

    @property
    def classifier(self) -> nn.Linear:
        return self.layers[self.classifier_index]  # type: ignore[return-value]

    def _skip(self, layer: nn.Module) -> bool:
        return isinstance(layer, nn.BatchNorm2d) and bool(self.bn_folded)

    # -- forward ------------------------------------------------------------------------
    def analog_forward(self, x: Tensor, activations: list[Tensor] | None = None) -> Tensor:
        """The ANN: ``[B, *in_shape] -> [B, classes]``; appends every ReLU output to
        ``activations`` if given."""
        for layer in self.layers:
            if self._skip(layer):
                continue
            if isinstance(layer, IFNeuron):
                x = layer.analog(x)
                if activations is not None:
                    activations.append(x)
            else:
                x = layer(x)
        return x

    def spiking_forward(self, x: Tensor, before_neuron: NeuronHook | None = None) -> Tensor:
        """The SNN over ``self.T`` steps (or the given frames): ``[T, B, classes]``.

        Stateless layers before the first neuron see a static input once (it is then repeated
        over T); ``before_neuron`` may replace each neuron's input current (calibration)."""
        neuron_index = itertools.count()

        def call(neuron: nn.Module, current: Tensor) -> Tensor:
            k = next(neuron_index)
            return neuron(current if before_neuron is None else before_neuron(k, neuron, current))

        return run_time_first([layer for layer in self.layers if not self._skip(layer)], x, self.T,
                              x.dim() == len(self.in_shape) + 2,
                              lambda layer: isinstance(layer, IFNeuron), call)

    def forward(self, x: Tensor) -> Tensor:
        frames = self.is_frames(x)
        if self.is_spiking:
            return self.spiking_forward(x)
        if frames:
            raise ValueError("the analog (ANN) mode takes static inputs [B, ...], not frames")
        return self.analog_forward(x).unsqueeze(0)


def build_convertible_net(
    spec: Sequence[str],
    in_shape: Sequence[int],
    num_classes: int,
    T: int,
    batch_norm: bool = False,
    conv_dropout: float = 0.0,
    dropout: float = 0.0,
    neuron: Callable[[tuple[int, ...]], IFNeuron] = IFNeuron,
    spiking_pool: bool = False,
    init: str = "torch",
) -> ConvertibleNet:
    """Build a :class:`ConvertibleNet` from ``spec`` for inputs ``in_shape`` (C, H, W).

    Every conv / linear has a bias (calibration shifts it; BN folds into it). ``conv_dropout``
    (> 0) puts a dropout after every conv's activation (the reference VGG without BN: in the ANN
    ``dropout(ReLU(x)) = ReLU(dropout(x))``; in the SNN it drops output spikes); ``D`` tokens use
    ``dropout``. ``spiking_pool``: ``P<k>`` is an :class:`AvgPoolConv` followed by a neuron (the
    CBP-QSNN VGG) instead of a plain ``AvgPool2d``. ``neuron(shape)`` builds the activation of a
    layer whose output has ``shape`` (without the batch). ``init``: ``reference``
    (:func:`reference_init`) or ``torch`` (PyTorch's default).
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid choices: {list(INITS)}")
    layers: list[nn.Module] = []
    shape = tuple(in_shape)
    for kind, size, stride in parse_spec(spec):
        if kind == "conv":
            conv, shape = conv_layers(shape, size, stride, spec, bias=True, batch_norm=batch_norm)
            layers += [*conv, neuron(shape)]
            if conv_dropout > 0:
                layers.append(nn.Dropout(conv_dropout))
        elif kind == "avgpool":
            pooled = (shape[0], shape[1] // size, shape[2] // size)
            if spiking_pool:
                layers += [AvgPoolConv(shape[0], size), neuron(pooled)]
            else:
                layers.append(nn.AvgPool2d(size))
            shape = pooled
        elif kind == "dropout":
            layers.append(nn.Dropout(dropout))
        elif kind == "fc":
            shape = flatten_if_needed(layers, shape)
            layers += [nn.Linear(shape[0], size), neuron((size,))]
            shape = (size,)
        else:
            raise ValueError(f"the conversion route supports C<n>, P<k> (average pool), FC<n> and D; "
                             f"got a {kind} layer in {list(spec)} (max pooling and SEW blocks do not "
                             "convert to IF neurons)")
    shape = flatten_if_needed(layers, shape)
    layers.append(nn.Linear(shape[0], num_classes))
    net = ConvertibleNet(layers, in_shape, T)
    if init == "reference":
        reference_init(net)
    return net


@torch.no_grad()
def reference_init(net: nn.Module) -> None:
    """The SNN-Calibration / CBP-QSNN VGG init (``yoees/CBP-QSNN``
    ``CBP-QSNN-SNN-Calibration/CIFAR/models/vgg.py``, from ``yhhhli/SNN_Calibration``): conv
    weights ``N(0, sqrt(2 / (k_h k_w C_out)))``, linear weights ``N(0, 1 / n_in)`` (standard
    deviation ``1/n_in``, as written there), BN weight 1, every bias 0. The fixed pooling convs are
    buffers and keep ``1/k^2``. Without batch-norm, PyTorch's default init barely passes the input
    through 15 layers (the logits hardly depend on it)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.Linear):
            m.weight.normal_(0.0, 1.0 / m.in_features)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1.0)
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and m.bias is not None:
            m.bias.zero_()
