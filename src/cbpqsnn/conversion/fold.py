"""Folding batch-norm into the preceding convolution before conversion."""

from __future__ import annotations

import torch
from torch import nn

from cbpqsnn.conversion.network import ConvertibleNet


@torch.no_grad()
def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Absorb ``bn`` (its running statistics, eval mode) into ``conv`` in place:
    ``W' = W * gamma / sigma``, ``b' = gamma * (b - mu) / sigma + beta``,
    ``sigma = sqrt(running_var + eps)`` (``gamma = 1, beta = 0`` without affine)."""
    if conv.bias is None:
        raise ValueError("fold_batch_norm needs a conv with a bias (build_convertible_net gives every "
                         "conv one)")
    sigma = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(sigma)
    beta = bn.bias if bn.affine else torch.zeros_like(sigma)
    scale = gamma / sigma
    conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
    conv.bias.copy_(scale * (conv.bias - bn.running_mean) + beta)


@torch.no_grad()
def fold_batch_norms(net: ConvertibleNet) -> int:
    """Fold every ``BatchNorm2d`` of ``net`` into the conv before it and mark the net folded (BN
    layers are skipped from then on and freeze). Returns how many were folded; idempotent."""
    if bool(net.bn_folded):
        return 0
    folded = 0
    previous: nn.Module | None = None
    for layer in net.layers:
        if isinstance(layer, nn.BatchNorm2d):
            if not isinstance(previous, nn.Conv2d):
                raise ValueError("a BatchNorm2d must follow a conv to be folded")
            fold_batch_norm(previous, layer)
            layer.requires_grad_(False)
            folded += 1
        previous = layer
    net.bn_folded.fill_(True)
    return folded
