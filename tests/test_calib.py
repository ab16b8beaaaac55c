"""SNN-Calibration backbone: ANN -> SNN conversion, threshold search, calibration, CBP on the SNN."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from cbpqsnn.conversion import (
    ConversionSettings,
    ThresholdGrid,
    ThresholdTracker,
    analog_means,
    bias_correction,
    build_convertible_net,
    channel_mean,
    convert,
    fold_batch_norms,
    potential_correction,
    rescale_to_unit_thresholds,
    search_threshold,
    set_thresholds,
    spiking_means,
)
from cbpqsnn.methods.calib import CalibClassifier
from cbpqsnn.neurons import ATan, IFNeuron, spike
from cbpqsnn.pipeline import run
from cbpqsnn.run_folder import evaluate_run
from tests.conftest import compose


def small_net(spec=("C8", "P2", "FC16"), in_shape=(1, 8, 8), T=4, **kwargs):
    torch.manual_seed(0)
    return build_convertible_net(list(spec), in_shape, 3, T, **kwargs).eval()


def test_batch_norm_folding_leaves_the_ann_outputs_unchanged():
    net = small_net(("C8", "C8", "P2", "FC16"), batch_norm=True)
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.2, 3)
        bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    x = torch.randn(16, 1, 8, 8)
    before = net.analog_forward(x)
    assert fold_batch_norms(net) == 2 and bool(net.bn_folded)
    torch.testing.assert_close(net.analog_forward(x), before, rtol=1e-5, atol=1e-5)
    assert fold_batch_norms(net) == 0  # idempotent: folding twice would scale twice


@pytest.mark.parametrize("T", [4, 32])
@torch.no_grad()
def test_converted_layer_spike_rate_matches_its_relu_within_the_quantization_bound(T):
    net = small_net(("FC50",), in_shape=(20,), T=T)
    x = torch.randn(64, 20)
    activations = []
    net.analog_forward(x, activations)
    relu = activations[0]
    threshold = 0.7 * relu.max()  # some outputs are clipped at the threshold
    net.neurons[0].threshold.fill_(threshold)
    net.set_spiking(True)
    spikes = []
    net.spiking_forward(x, lambda k, neuron, current: spikes.append(neuron(current)) or current)
    (s,) = spikes
    assert s.shape == (T, 64, 50)
    assert set(s.unique().tolist()) <= {0.0, float(threshold)}  # spike amplitude = threshold
    error = (s.mean(0) - relu.clamp(max=threshold)).abs().max()
    assert error <= threshold / (2 * T) + 1e-5  # the input shift V_th/2T turns floor into round


def reference_if(x, threshold, v_init, detach_reset):
    """IF with reset by subtraction unrolled with the shared ``spike`` (autograd through every step)."""
    v, out = v_init, []
    for x_t in x.unbind(0):
        v = v + x_t + threshold / (2 * x.shape[0])
        s = spike(v / threshold - 1, ATan(2.0)) * threshold
        v = v - (s.detach() if detach_reset else s)
        out.append(s)
    return torch.stack(out)


@pytest.mark.parametrize("detach_reset", [False, True])
def test_if_neuron_forward_and_bptt_match_the_unrolled_reference(detach_reset):
    torch.manual_seed(0)
    neuron = IFNeuron((3, 4), ATan(2.0), detach_reset=detach_reset).double()
    neuron.threshold.fill_(0.8)
    neuron.v_init.uniform_(-0.2, 0.2)
    x = torch.randn(6, 2, 3, 4, dtype=torch.float64).requires_grad_(True)
    weights = torch.randn(6, 2, 3, 4, dtype=torch.float64)
    (neuron(x) * weights).sum().backward()
    fused = x.grad.clone()
    x.grad = None
    out = reference_if(x, neuron.threshold, neuron.v_init, detach_reset)
    (out * weights).sum().backward()
    assert torch.equal(neuron(x), out)
    torch.testing.assert_close(fused, x.grad, rtol=1e-12, atol=1e-12)


def reference_search(a: np.ndarray, T: int) -> float:
    best, best_err = None, np.inf
    for i in range(95):
        v = a.max() * (1 - 0.01 * i)
        q = np.clip(np.floor(a * T / v), 0, T) * v / T
        err = np.mean((a - q) ** 2)
        if err < best_err:
            best, best_err = v, err
    return best


def test_threshold_search_finds_the_error_minimum_of_a_constructed_distribution():
    rng = np.random.default_rng(0)
    # most activations in [0, 1], a few rare outliers at 10: the max is a poor threshold
    a = np.concatenate([rng.uniform(0, 1, 20000), np.full(3, 10.0)]).astype(np.float32)
    found = float(search_threshold(torch.from_numpy(a), T=8))
    assert found == pytest.approx(reference_search(a.astype(np.float64), 8), rel=1e-5)
    assert 0.9 < found < 2.0  # near the bulk, far below max_act = 10
    dead = search_threshold(torch.zeros(10), T=8)
    assert float(dead) == 0.0


def test_threshold_tracker_averages_batches_with_momentum():
    tracker = ThresholdTracker(T=4, grid=ThresholdGrid(1, 0.01), momentum=0.9)  # V = max_act
    tracker.update(torch.tensor([0.0, 2.0]))
    tracker.update(torch.tensor([0.0, 4.0]))
    assert float(tracker.threshold) == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)
    dead = ThresholdTracker(T=4, dead_threshold=1.0)
    dead.update(torch.zeros(5))
    assert float(dead.threshold) == 1.0


def calibrated_net(T=4):
    net = small_net(("C8", "P2", "FC16"), T=T)
    x = torch.randn(64, 1, 8, 8)
    set_thresholds(net, [x], ConversionSettings())
    ann = analog_means(net, x)
    net.set_spiking(True)
    return net, x, ann


def channel_errors(net, x, ann):
    return [(channel_mean(a) - channel_mean(s)).abs().mean().item()
            for a, s in zip(ann, spiking_means(net, x), strict=True)]


def test_bias_correction_reduces_each_layers_mean_error():
    net, x, ann = calibrated_net()
    before = channel_errors(net, x, ann)
    bias_correction(net, x, ann)
    after = channel_errors(net, x, ann)
    assert all(a < 0.5 * b for a, b in zip(after, before, strict=True)), (before, after)


def test_potential_correction_reduces_the_per_neuron_error():
    net, x, ann = calibrated_net()
    bias_correction(net, x, ann)
    before = [(a - s).abs().mean().item() for a, s in zip(ann, spiking_means(net, x), strict=True)]
    potential_correction(net, x, ann)
    after = [(a - s).abs().mean().item() for a, s in zip(ann, spiking_means(net, x), strict=True)]
    assert any(n.v_init.abs().sum() > 0 for n in net.neurons)
    assert all(a < b for a, b in zip(after, before, strict=True)), (before, after)


def test_rescaling_to_unit_thresholds_keeps_the_output():
    net, x, ann = calibrated_net(T=8)
    potential_correction(net, x, ann)
    before = net(x)
    thresholds = rescale_to_unit_thresholds(net)
    assert all(float(n.threshold) == 1.0 for n in net.neurons) and len(thresholds) == 2
    torch.testing.assert_close(net(x), before, rtol=1e-4, atol=1e-4)


def test_changing_T_changes_the_simulation_length():
    net, x, _ = calibrated_net(T=4)
    assert net(x).shape == (4, 64, 3)
    net.T = 9
    assert net(x).shape == (9, 64, 3)
    module = CalibClassifier(model={"spec": ["C4", "P2", "FC8"]}, in_shape=(1, 8, 8), num_classes=3, T=6)
    assert module.net(x).shape == (1, 64, 3)  # the ANN: one step, the logits
    module.net.set_spiking(True)
    assert module.net(x).shape == (6, 64, 3) and module(x).shape == (64, 3)  # summed over T


def test_prepare_stage_without_data_switches_the_structure_only():
    """The benchmarks' path: the CBP stage's network (spiking, at finetune_T) with no conversion."""
    module = CalibClassifier(model={"spec": ["C4", "P2", "FC8"]}, in_shape=(1, 8, 8), num_classes=3,
                             T=6, finetune_T=3)
    x = torch.rand(5, 1, 8, 8)
    assert module.prepare_stage("pretrain") == {} and module.net(x).shape == (1, 5, 3)
    assert module.prepare_stage("cbp") == {"calibration": "uncalibrated", "T_finetune": 3}
    assert module.net.is_spiking and module.net(x).shape == (3, 5, 3)
    assert all(float(n.threshold) == 1.0 for n in module.net.neurons)  # nothing calibrated
    with pytest.raises(ValueError, match=r"unknown stage 'finetune'; valid: \['pretrain', 'cbp'\]"):
        module.prepare_stage("finetune")


def test_conversion_keeps_the_chosen_level_and_reports_every_level():
    net = small_net(("C8", "P2", "FC16"), T=4)
    batches = [torch.randn(32, 1, 8, 8) for _ in range(2)]
    calls = []
    result = convert(net, batches, ConversionSettings(calibration="light"),
                     evaluate=lambda: calls.append(1) or float(len(calls)))
    assert result.accuracy == {"none": 1.0, "light": 2.0, "advanced": 3.0}
    assert net.is_spiking and all(float(n.threshold) == 1.0 for n in net.neurons)
    assert all(n.v_init.abs().sum() == 0 for n in net.neurons)  # advanced was undone
    with pytest.raises(ValueError, match="valid choices"):
        ConversionSettings(calibration="heavy")


def test_calib_config_picks_the_mnist_ann_and_vgg16_builds():
    cfg = compose(["method=calib"])
    assert cfg.model.name == "calib_mnist" and cfg.method.module.T == 32
    vgg = compose(["method=calib", "model=vgg16_cifar"]).model
    module = CalibClassifier(model=dict(vgg), in_shape=(3, 32, 32), num_classes=100, T=2)
    convs = [m for m in module.net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and module.net.classifier.in_features == 512
    assert module.net(torch.randn(2, 3, 32, 32)).shape == (1, 2, 100)
    with pytest.raises(ValueError, match="max pooling"):
        build_convertible_net(["C4", "M2"], (1, 8, 8), 3, 2)


def test_tiny_pipeline_run_records_the_calibration_levels(tiny_cfg, tmp_path, monkeypatch):
    spec = ["C4s2", "C8s2", "FC16"]
    cfg = tiny_cfg("method=calib", f"model.spec=[{','.join(spec)}]", "method.module.T=4",
                   "method.module.finetune_T=3", "method.module.eval_batches=1",
                   "method.module.threshold_batches=1", "method.module.calibration_batch_size=32")
    summary = run(cfg, tmp_path)
    assert {"ann_acc", "snn_acc", "calibration", "T", "T_finetune", "thresholds"} <= summary.keys()
    assert set(summary["snn_acc"]) == {"none", "light", "advanced"}
    assert summary["calibration"] == "light" and (summary["T"], summary["T_finetune"]) == (4, 3)
    assert all(0 <= acc <= 100 for acc in (summary["ann_acc"], *summary["snn_acc"].values()))
    assert summary["history"]["cfs"][-1] < summary["cfs_start"]
    assert summary["quantized_layers"] == ["net.layers.2", "net.layers.5"]  # first / classifier FP32
    # the baked SNN (mode, T, thresholds, potentials) loads strictly into a freshly built module
    fresh = CalibClassifier(model={"spec": spec}, in_shape=(1, 28, 28), num_classes=10, T=4)
    fresh.load_state_dict(torch.load(tmp_path / "quantized.pt"))
    assert fresh.net.is_spiking and fresh.net.T == 3
    assert all(float(n.threshold) == 1.0 for n in fresh.net.neurons)
    # re-evaluating the FP32 weights converts the ANN again, as the run did before fp32_acc
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml", resolve=False)
    converted = []
    original = CalibClassifier.prepare_stage

    def spy(self, stage, datamodule=None):
        result = original(self, stage, datamodule)
        converted.append(self.net.is_spiking)
        return result

    monkeypatch.setattr(CalibClassifier, "prepare_stage", spy)
    assert evaluate_run(tmp_path, "fp32") == pytest.approx(summary["fp32_acc"])
    assert converted == [True]


VGG16 = ["C64", "C64", "P2", "C128", "C128", "P2", "C256", "C256", "C256", "P2",
         "C512", "C512", "C512", "P2", "C512", "C512", "C512", "P2"]


def input_dependent_share(out: torch.Tensor) -> float:
    """Spread of the outputs over the batch relative to their magnitude."""
    return float((out - out.mean(0)).std() / out.abs().mean().clamp_min(1e-30))


@torch.no_grad()
def test_reference_init_makes_the_bn_free_vgg16_logits_depend_on_the_input():
    x = torch.randn(8, 3, 32, 32)
    shares = {}
    for init in ("reference", "torch"):
        torch.manual_seed(0)
        net = build_convertible_net(VGG16, (3, 32, 32), 10, 4, conv_dropout=0.25, spiking_pool=True,
                                    init=init).eval()
        shares[init] = input_dependent_share(net.analog_forward(x))
    # measured: reference 5e-2, PyTorch's default 8e-7 (the signal dies in 15 BN-free layers)
    assert shares["reference"] > 1e-2 and shares["torch"] < 1e-4, shares
    torch.manual_seed(0)
    net = build_convertible_net(VGG16, (3, 32, 32), 10, 4, spiking_pool=True, init="reference")
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 512)
    assert float(conv.weight.std()) == pytest.approx((2 / (9 * 512)) ** 0.5, rel=0.02)
    assert float(net.classifier.weight.std()) == pytest.approx(1 / 512, rel=0.1)
    assert all(float(m.bias.abs().max()) == 0 for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    with pytest.raises(ValueError, match="valid choices"):
        build_convertible_net(VGG16, (3, 32, 32), 10, 4, init="kaiming")


def test_spiking_pool_is_a_fixed_conv_with_its_own_neuron_and_is_never_quantized():
    from cbpqsnn.conversion.network import AvgPoolConv
    from cbpqsnn.quant.selection import select_layers

    module = CalibClassifier(model={"spec": VGG16, "conv_dropout": 0.25, "spiking_pool": True,
                                    "init": "reference"}, in_shape=(3, 32, 32), num_classes=10, T=2)
    net = module.net
    pools = [i for i, m in enumerate(net.layers) if isinstance(m, AvgPoolConv)]
    assert len(pools) == 5 and all(isinstance(net.layers[i + 1], IFNeuron) for i in pools)
    assert len(net.neurons) == 13 + 5
    assert not any(isinstance(m, nn.AvgPool2d) for m in net.modules())
    # buffers only: no optimizer step, no CBP layer, no FP32-parameter memory
    assert all(len(list(net.layers[i].parameters())) == 0 for i in pools)
    assert len(select_layers(module)) == 12  # 13 convs + classifier, first and last FP32
    # in the ANN the pool conv + ReLU is exactly the average pool
    plain = build_convertible_net(VGG16, (3, 32, 32), 10, 2, conv_dropout=0.25)
    for a, b in zip((m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))),
                    (m for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), strict=True):
        b.load_state_dict(a.state_dict())
    net.eval(), plain.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.analog_forward(x), plain.analog_forward(x))


@torch.no_grad()
def test_pool_neuron_gets_its_own_threshold_and_the_rescaling_folds_it_into_the_pool_weight():
    net = small_net(("C8", "P2", "FC16"), spiking_pool=True)
    batches = [torch.randn(32, 1, 8, 8)]
    result = convert(net, batches, ConversionSettings(calibration="light", report_levels=()))
    conv_v, pool_v, fc_v = result.thresholds
    assert pool_v != conv_v  # searched on the pool's own (averaged) output
    pool = net.layers[2]
    torch.testing.assert_close(pool.weight, torch.full_like(pool.weight, 0.25 * conv_v / pool_v))


def test_conv_dropout_follows_the_neuron_and_drops_output_spikes():
    torch.manual_seed(0)
    net = build_convertible_net(["C8", "FC16"], (1, 8, 8), 3, 6, conv_dropout=0.5)
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds[:3] == ["Conv2d", "IFNeuron", "Dropout"]
    net.set_spiking(True)
    net.train()
    seen = []
    net.layers[2].register_forward_hook(lambda m, inp, out: seen.append((inp[0], out)))
    net(torch.rand(4, 1, 8, 8) * 3)
    spikes, dropped = seen[0]
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}  # the neuron's output, threshold 1
    assert set(dropped.unique().tolist()) <= {0.0, 2.0}  # spikes kept (x 1/(1-p)) or dropped
    assert ((spikes == 1) & (dropped == 0)).any()


@torch.no_grad()
def test_none_level_uses_the_maximum_activation_and_light_the_mse_search():
    net = small_net(("FC20",), in_shape=(10,), T=4)
    batches = [torch.randn(64, 10), torch.randn(64, 10)]
    maxima = []
    for x in batches:
        acts = []
        net.analog_forward(x, acts)
        maxima.append(float(acts[0].max()))
    none = convert(small_net(("FC20",), in_shape=(10,), T=4), batches,
                   ConversionSettings(calibration="none", report_levels=()))
    assert none.thresholds[0] == pytest.approx(0.9 * maxima[0] + 0.1 * maxima[1], rel=1e-6)
    light = convert(small_net(("FC20",), in_shape=(10,), T=4), batches,
                    ConversionSettings(calibration="light", report_levels=()))
    assert light.thresholds[0] < 0.95 * none.thresholds[0]  # the MSE search clips the tail


@pytest.mark.parametrize("row", ["calib_cifar10", "calib_cifar100"])
def test_calib_rows_use_the_reference_vgg_and_exempt_biases_from_cbp_weight_decay(row):
    cfg = compose([f"experiment={row}"])
    assert (cfg.model.init, cfg.model.spiking_pool, cfg.model.conv_dropout) == ("reference", True, 0.25)
    assert cfg.method.cbp.weight_decay_on_bias is False
    assert cfg.method.pretrain.get("weight_decay_on_bias", True) is True  # main_train_ann.py
