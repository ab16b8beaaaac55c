import pytest
import torch
from torch import nn

from cbpqsnn.quant.export import (
    pack_codes,
    pack_state_dict,
    packed_payload_bytes,
    unpack_codes,
    unpack_state_dict,
)
from cbpqsnn.quant.memory import weight_memory
from cbpqsnn.quant.selection import select_layers

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16(num_classes: int) -> nn.Sequential:
    layers, cin = [], 3
    for v in VGG16:
        if v == "M":
            layers.append(nn.AvgPool2d(2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, num_classes))


class WithFixedPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.pool = nn.Conv2d(4, 4, 2, stride=2, bias=False).requires_grad_(False)  # fixed avg pool
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.down = nn.Conv2d(4, 4, 1)
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 2)


def test_layer_selection_skips_first_last_and_fixed_layers():
    model = WithFixedPool()
    assert select_layers(model) == ["conv2", "down", "fc1"]
    assert select_layers(model, skip_first_last=False) == ["conv1", "conv2", "down", "fc1", "fc2"]
    assert select_layers(model, include=["fc2"]) == ["conv2", "down", "fc1", "fc2"]
    assert select_layers(model, exclude=["d*"]) == ["conv2", "fc1"]


def test_vgg16_cifar100_binary_memory_is_about_3_5_percent():
    model = vgg16(100)
    names = select_layers(model)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert len(names) == len(convs) - 1  # all convs but the first; the classifier stays FP32
    n_quant = sum(m.weight.numel() for m in convs[1:])
    n_fp32 = convs[0].weight.numel() + sum(m.bias.numel() for m in convs) + 512 * 100 + 100
    memory = weight_memory(model, names, bits=1)
    assert memory.quantized_weights == n_quant
    assert memory.bits == n_quant + 32 * (n_fp32 + len(names))
    assert memory.fp32_bytes == 4 * (n_quant + n_fp32)
    assert memory.ratio == pytest.approx(0.035, abs=0.001)  # the CBP-QSNN abstract's 3.5 %
    ternary = weight_memory(model, names, bits=2)
    expected = (2 * n_quant + 32 * (n_fp32 + 12)) / 8 / (4 * (n_quant + n_fp32))
    assert ternary.ratio == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_pack_unpack_codes_round_trip(bits):
    codes = torch.randint(0, 2**bits, (1001,))
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-1001 * bits // 8)
    assert torch.equal(unpack_codes(packed, bits, 1001), codes)


def test_packed_export_round_trip_and_size_agrees_with_memory():
    torch.manual_seed(0)
    model = vgg16(10)[:6]  # three convs
    model = nn.Sequential(*model, nn.Flatten(), nn.LazyLinear(10))
    model(torch.zeros(1, 3, 8, 8))
    names = select_layers(model)
    levels = {}
    with torch.no_grad():
        for name in names:
            layer = dict(model.named_modules())[name]
            a = layer.weight.abs().mean()
            levels[name] = torch.tensor([-a, a])
            layer.weight.copy_(torch.where(layer.weight >= 0, a, -a))
    state = model.state_dict()
    packed = pack_state_dict(state, levels, bits=1)
    restored = unpack_state_dict(packed)
    assert restored.keys() == state.keys()
    assert all(torch.equal(restored[k], state[k]) for k in state)
    memory = weight_memory(model, names, bits=1)
    payload = packed_payload_bytes(packed, {n for n, _ in model.named_parameters()})
    assert abs(payload - memory.bytes) < len(names)  # only per-layer byte rounding differs
    with pytest.raises(ValueError, match="not on their levels"):
        state[f"{names[0]}.weight"] += 0.001
        pack_state_dict(state, levels, bits=1)
