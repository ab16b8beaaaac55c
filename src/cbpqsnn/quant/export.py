"""Packed export of a baked quantized model: per quantized layer the level indices packed at
``bits(F)`` bits each plus its levels (``a_l * F``); every other tensor in FP32.

The payload (packed codes + one FP32 scale per layer + FP32 tensors) is what
:mod:`cbpqsnn.quant.memory` counts; :func:`unpack_state_dict` restores the exact ``state_dict``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cbpqsnn.quant.quantizer import level_index


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Pack non-negative integer codes ``< 2**bits`` into a uint8 bitstream (LSB first)."""
    flat = codes.flatten().to(torch.int64)
    if flat.numel() and (flat.min() < 0 or flat.max() >= 2**bits):
        raise ValueError(f"codes out of range for {bits} bits")
    shifts = torch.arange(bits, dtype=torch.int64)
    bitstream = ((flat[:, None] >> shifts) & 1).flatten()
    pad = (-bitstream.numel()) % 8
    bitstream = torch.cat([bitstream, bitstream.new_zeros(pad)]).view(-1, 8)
    return (bitstream << torch.arange(8, dtype=torch.int64)).sum(1).to(torch.uint8)


def unpack_codes(packed: Tensor, bits: int, count: int) -> Tensor:
    bitstream = ((packed.to(torch.int64)[:, None] >> torch.arange(8)) & 1).flatten()
    bitstream = bitstream[: count * bits].view(count, bits)
    return (bitstream << torch.arange(bits, dtype=torch.int64)).sum(1)


def pack_state_dict(state: dict[str, Tensor], layer_levels: dict[str, Tensor], bits: int) -> dict[str, Any]:
    """``layer_levels`` maps a quantized layer's name to its ascending levels."""
    packed: dict[str, Any] = {"bits": bits, "quantized": {}, "fp32": {}}
    for layer, levels in layer_levels.items():
        w = state[f"{layer}.weight"]
        codes = level_index(w, levels.to(w.dtype))
        if not torch.equal(levels.to(w.dtype)[codes], w):
            raise ValueError(f"layer {layer}: weights are not on their levels; bake the model first")
        packed["quantized"][f"{layer}.weight"] = {
            "codes": pack_codes(codes, bits), "shape": tuple(w.shape), "levels": levels.clone(),
        }
    for key, value in state.items():
        if key not in packed["quantized"]:
            packed["fp32"][key] = value.clone()
    return packed


def unpack_state_dict(packed: dict[str, Any]) -> dict[str, Tensor]:
    state = dict(packed["fp32"])
    for key, entry in packed["quantized"].items():
        count = int(torch.Size(entry["shape"]).numel())
        codes = unpack_codes(entry["codes"], packed["bits"], count)
        state[key] = entry["levels"][codes].view(entry["shape"])
    return state


def packed_payload_bytes(packed: dict[str, Any], trainable: set[str] | None = None) -> int:
    """Bytes of the packed codes + 4 per scale + 4 per FP32 value (only ``trainable`` keys, if
    given: buffers such as BN running statistics are not weights)."""
    codes = sum(e["codes"].numel() for e in packed["quantized"].values())
    scales = 4 * len(packed["quantized"])
    fp32 = sum(v.numel() * 4 for k, v in packed["fp32"].items() if trainable is None or k in trainable)
    return codes + scales + fp32
