import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cbpqsnn.methods.stbp import STBPClassifier
from cbpqsnn.nets.feedforward import build_spiking_net, parse_spec
from cbpqsnn.neurons import STBPLIF


def test_parse_spec_tokens_and_bad_token_message():
    assert parse_spec(["C32", "c64s2", "P2", "M2", "FC10", "D"]) == [
        ("conv", 32, 1), ("conv", 64, 2), ("avgpool", 2, 0), ("maxpool", 2, 0), ("fc", 10, 0),
        ("dropout", 0, 0)]
    with pytest.raises(ValueError, match="bad layer token 'X3'"):
        parse_spec(["C32", "X3"])


def test_static_input_is_encoded_once_and_equals_repeated_input():
    torch.manual_seed(0)
    net = build_spiking_net(["C8", "P2", "FC16"], (1, 8, 8), 3, STBPLIF, T=5)
    x = torch.randn(2, 1, 8, 8)
    out_static = net(x)
    out_temporal = net(x.unsqueeze(0).repeat(5, 1, 1, 1, 1))
    assert out_static.shape == (5, 2, 3)
    assert torch.equal(out_static, out_temporal)


def test_wrong_input_shape_is_a_clear_error():
    net = build_spiking_net(["C8"], (1, 8, 8), 3, STBPLIF, T=2)
    with pytest.raises(ValueError, match=r"expected input \[B, 1, 8, 8\]"):
        net(torch.randn(8, 8))


def test_7conv3fc_parameter_count_for_cifar10():
    # 128C3 - 256C3s2 - 256C3 - 512C3s2 - 512C3 - 1024C3 - 2048C3s2 - FC1024 - FC512 - FC10, bias
    convs = [(3, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 1024), (1024, 2048)]
    expected = sum(cin * cout * 9 + cout for cin, cout in convs)
    expected += (2048 * 4 * 4) * 1024 + 1024 + 1024 * 512 + 512 + 512 * 10 + 10
    spec = ["C128", "C256s2", "C256", "C512s2", "C512", "C1024", "C2048s2", "FC1024", "FC512"]
    net = build_spiking_net(spec, (3, 32, 32), 10, STBPLIF, T=8)
    assert sum(p.numel() for p in net.parameters()) == expected
    assert sum(isinstance(m, STBPLIF) for m in net.modules()) == 10  # every layer spiking


def test_stbp_classifier_rate_readout_and_mse_loss():
    module = STBPClassifier(model={"spec": ["FC4"]}, in_shape=(1, 2, 2), num_classes=3, T=4)
    out = torch.tensor([[[1.0, 0, 0]], [[1, 0, 1]], [[0, 0, 1]], [[1, 0, 0]]])  # [T=4, B=1, 3]
    rate = module.readout(out)
    assert rate.tolist() == [[0.75, 0.0, 0.5]]
    loss = module.loss(out, torch.tensor([2]))
    assert loss.item() == pytest.approx((0.75**2 + 0 + 0.5**2) / 3)
    assert isinstance(module.net.layers[-1], STBPLIF)
    assert isinstance(module.net.layers[-2], nn.Linear)


def stbp_module(**kwargs) -> STBPClassifier:
    return STBPClassifier(model={"spec": ["C4", "FC8"], "bias": True}, in_shape=(1, 4, 4),
                          num_classes=3, T=2, **kwargs)


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


def test_weight_decay_reaches_every_parameter_by_default():
    module = stbp_module()
    module.set_optimization(sgd)
    (group,) = module.configure_optimizers().param_groups
    assert group["weight_decay"] == 1e-4
    assert len(group["params"]) == len(list(module.parameters()))


def test_weight_decay_on_bias_false_exempts_exactly_the_biases():
    module = stbp_module()
    module.set_optimization(sgd, weight_decay_on_bias=False)
    weights, biases = module.configure_optimizers().param_groups
    named = dict(module.named_parameters())
    by_id = {id(p): n for n, p in named.items()}
    assert {by_id[id(p)] for p in biases["params"]} == {n for n in named if n.endswith(".bias")}
    assert {by_id[id(p)] for p in weights["params"]} == {n for n in named if n.endswith(".weight")}
    assert len(biases["params"]) == 3 and len(weights["params"]) == 3  # conv, FC8, classifier
    assert (weights["weight_decay"], biases["weight_decay"]) == (1e-4, 0.0)
    assert weights["lr"] == biases["lr"] == 0.1 and biases["momentum"] == 0.9


def test_epoch_schedulers_step_after_each_training_epoch():
    """A milestone m of MultiStepLR: epochs 0..m-1 train at the old LR, epoch m at the new one
    (what conf/experiment/stbp_*.yaml's milestones rely on)."""
    seen: list[float] = []

    class RecordLR(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    module = stbp_module()
    module.set_optimization(lambda p: torch.optim.SGD(p, lr=1.0),
                            lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 3], 0.1))
    data = DataLoader(TensorDataset(torch.randn(2, 1, 4, 4), torch.tensor([0, 1])), batch_size=1)
    L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False,
              callbacks=[RecordLR()]).fit(module, train_dataloaders=data)
    assert seen == pytest.approx([1.0, 1.0, 0.1, 0.01])


def stbp_7conv3fc_rates(init: str) -> list[float]:
    """Firing rate of each neuron layer of the 7Conv3FC with every width / 16 (the same depth and
    per-layer statistics at init: both inits scale with 1 / fan-in) on random normalized images."""
    from cbpqsnn.deploy.metrics import hardware_metrics

    spec = ["C8", "C16s2", "C16", "C32s2", "C32", "C64", "C128s2", "FC64", "FC32"]
    torch.manual_seed(0)
    module = STBPClassifier(model={"spec": spec, "init": init}, in_shape=(3, 32, 32),
                            num_classes=10, T=8).eval()
    rates = hardware_metrics(module.net, [torch.randn(8, 3, 32, 32)], {"fp32_mac": 1.0,
                             "fp32_add": 1.0, "int_add": 1.0, "int_mac": 1.0})["spike_rate"]
    return list(rates.values())


def test_stbp_kaiming_init_keeps_every_layer_of_the_deep_net_firing():
    default, kaiming = stbp_7conv3fc_rates("torch"), stbp_7conv3fc_rates("kaiming_normal")
    assert len(default) == len(kaiming) == 10
    assert default[0] > 0.1 and max(default[3:]) == 0.0  # PyTorch's init: silent from layer 4 on
    assert min(kaiming) > 0.1                              # every layer fires


def test_stbp_kaiming_init_draws_weights_of_variance_two_over_fan_in_and_zero_biases():
    torch.manual_seed(0)
    module = STBPClassifier(model={"spec": ["C64", "FC256"], "init": "kaiming_normal"},
                            in_shape=(32, 8, 8), num_classes=10, T=1)
    for layer in [m for m in module.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]:
        fan_in = layer.weight[0].numel()
        assert float(layer.weight.detach().std()) == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
        assert float(layer.bias.abs().max()) == 0.0
    valid = r"unknown model.init 'xavier'; valid choices: \['torch', 'kaiming_normal'\]"
    with pytest.raises(ValueError, match=valid):
        STBPClassifier(model={"spec": ["FC4"], "init": "xavier"}, in_shape=(4,), num_classes=2, T=1)


@pytest.mark.parametrize("frames", [False, True], ids=["static", "frames"])
def test_channels_last_runs_the_feature_maps_channels_innermost_with_the_same_outputs(frames):
    torch.manual_seed(0)
    kwargs = dict(model={"spec": ["C8", "P2", "C8", "FC16"]}, in_shape=(3, 8, 8), num_classes=4, T=3)
    plain = STBPClassifier(**kwargs, v_threshold=0.2).double()
    fast = STBPClassifier(**kwargs, v_threshold=0.2, memory_format="channels_last").double()
    fast.load_state_dict(plain.state_dict())
    seen = []
    for module in fast.net.layers:  # every conv input and neuron output keeps C innermost
        if isinstance(module, (nn.Conv2d, STBPLIF)):
            module.register_forward_hook(lambda m, i, o: seen.append((type(m).__name__, i[0], o)))
    x = torch.randn((2, 3, 3, 8, 8) if frames else (2, 3, 8, 8), dtype=torch.float64)
    with torch.no_grad():
        out = fast(x)
        torch.testing.assert_close(out, plain(x), rtol=1e-12, atol=1e-12)
    layouts = [(name, (i if name == "Conv2d" else o).stride(-3) == 1) for name, i, o in seen]
    assert layouts == [("Conv2d", True), ("STBPLIF", True), ("Conv2d", True), ("STBPLIF", True),
                       ("STBPLIF", False), ("STBPLIF", False)]  # the FC layers' neurons: no maps
    rates = [float(o.mean()) for name, _, o in seen if name == "STBPLIF"]
    assert all(0 < r < 1 for r in rates[:2])  # spikes and silences in the feature maps


def test_memory_format_is_checked():
    with pytest.raises(ValueError, match=r"valid choices: \['contiguous', 'channels_last'\]"):
        STBPClassifier(model={"spec": ["C4"]}, in_shape=(1, 4, 4), num_classes=2, T=1, memory_format="nhwc")
    with pytest.raises(ValueError, match="needs feature-map inputs"):
        STBPClassifier(model={"spec": ["FC4"]}, in_shape=(16,), num_classes=2, T=1,
                       memory_format="channels_last")
