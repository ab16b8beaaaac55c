"""Spike-element-wise (SEW) residual block (Fang et al. 2021)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from cbpqsnn.neurons import MultiStepNeuron, TemporalModule, seq_apply


class SEWBlock(TemporalModule):
    """``out = SN(BN(conv(SN(BN(conv(x)))))) + x`` on spikes ``[T, B, C, H, W]`` (ADD connect).

    Both convolutions are 3x3, ``channels -> channels``, padding 1; BN is optional.
    """

    def __init__(self, channels: int, neuron: Callable[[], MultiStepNeuron], bias: bool = False,
                 batch_norm: bool = True) -> None:
        super().__init__()

        def conv_bn() -> nn.Sequential:
            layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, 1, 1, bias=bias)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(channels))
            return nn.Sequential(*layers)

        self.conv1, self.sn1 = conv_bn(), neuron()
        self.conv2, self.sn2 = conv_bn(), neuron()

    def forward(self, x: Tensor) -> Tensor:
        out = self.sn1(seq_apply(self.conv1, x))
        out = self.sn2(seq_apply(self.conv2, out))
        return out + x
