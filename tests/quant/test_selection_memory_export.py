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


def test_the_calib_cifar100_rows_vgg16_binary_memory_is_about_3_5_percent():
    """The project's paper row (conf/model/vgg16_cifar.yaml via experiment=calib_cifar100), as the
    CBP callback selects its layers: every conv but the first, spiking pools' fixed convs and the
    classifier FP32."""
    from omegaconf import OmegaConf

    from cbpqsnn.methods.calib import CalibClassifier
    from tests.conftest import compose

    cfg = compose(["experiment=calib_cifar100"])
    assert cfg.model.name == "vgg16_cifar"
    module = CalibClassifier(model=OmegaConf.to_container(cfg.model, resolve=True),
                             in_shape=(3, 32, 32), num_classes=100, T=2)
    names = select_layers(module)
    modules = dict(module.named_modules())
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.weight.requires_grad]
    assert len(convs) == 13 and names == convs[1:]  # 12 quantized convs
    n_quant = sum(modules[n].weight.numel() for n in names)
    n_all = sum(p.numel() for p in module.parameters())
    memory = weight_memory(module, names, bits=1)
    assert memory.quantized_weights == n_quant
    assert memory.bits == n_quant + 32 * (n_all - n_quant + len(names))  # + one scale per layer
    assert memory.fp32_bytes == 4 * n_all
    assert memory.ratio == pytest.approx(0.035, abs=0.001)  # the CBP-QSNN abstract's 3.5 %
    ternary = weight_memory(module, names, bits=2)
    expected = (2 * n_quant + 32 * (n_all - n_quant + len(names))) / 8 / (4 * n_all)
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
