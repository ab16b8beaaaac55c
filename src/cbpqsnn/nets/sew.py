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

    @property
    def last_norm(self) -> nn.BatchNorm2d | None:
        """The BN in front of ``sn2`` (``None`` without batch-norm)."""
        norm = self.conv2[-1]
        return norm if isinstance(norm, nn.BatchNorm2d) else None

    def zero_init_residual(self) -> None:
        """Set the last BN's weight (and bias) to 0: ``sn2`` receives 0, so a neuron that needs a
        positive input to fire (PLIF, IF) stays silent and the block starts as the identity,
        ``out = x`` (SEW-ResNet's ``zero_init_residual`` for the ADD connect function)."""
        norm = self.last_norm
        if norm is None:
            raise ValueError("zero_init_residual needs batch-norm in the SEW block (model.batch_norm)")
        nn.init.zeros_(norm.weight)
        nn.init.zeros_(norm.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.sn1(seq_apply(self.conv1, x))
        out = self.sn2(seq_apply(self.conv2, out))
        return out + x


def zero_init_residuals(net: nn.Module) -> int:
    """:meth:`SEWBlock.zero_init_residual` on every SEW block of ``net``; returns their number."""
    blocks = [m for m in net.modules() if isinstance(m, SEWBlock)]
    for block in blocks:
        block.zero_init_residual()
    return len(blocks)
