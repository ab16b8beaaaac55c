"""Deployment of the surrogate-gradient, converted and TSSL-BP networks: PLIF with a learned tau,
batch-norm folded, SEW residual ADDs, max pools over spikes, an analog classifier, event frames;
IF neurons with reset by subtraction, amplitude, input shift and initial potentials. The NumPy
integer reference and snnTorch (reading model.nir) against the project's network."""

from __future__ import annotations

from functools import partial

import nir
import numpy as np
import pytest
import torch

from cbpqsnn.conversion.network import build_convertible_net
from cbpqsnn.deploy import check, integer, numpy_reference
from cbpqsnn.deploy.artifacts import INTEGER_FILE, NIR_FILE, write_deployment
from cbpqsnn.deploy.nir_export import DT
from cbpqsnn.deploy.simulators import snntorch_sim
from cbpqsnn.nets.feedforward import build_spiking_net
from cbpqsnn.neurons import IFNeuron, ParametricLIF
from tests.test_deploy import on_levels

T = 6


def sew_net(levels: str, in_shape=(2, 8, 8), seed: int = 0):
    """A small SEW-ResNet: conv-BN-PLIF, max pool, SEW block, max pool (of 0..2), SEW block,
    conv-BN-PLIF (inputs 0..3), max pool, SEW block, analog classifier; BN with running statistics
    and some negative gammas; PLIF taus learned apart from 2; every conv between the first and the
    classifier on levels."""
    torch.manual_seed(seed)
    net = build_spiking_net(["C6", "M2", "SEW6", "M2", "SEW6", "C8", "M2", "SEW8"], in_shape, 3,
                            partial(ParametricLIF, tau0=2.0), T, bias=False, batch_norm=True,
                            spiking_output=False, classifier_bias=True).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 2.5).mul_(torch.where(torch.rand(c) < 0.2, -1.0, 1.0))
                module.bias.uniform_(-0.2, 0.6)
            elif isinstance(module, ParametricLIF):
                module.w.uniform_(-1.0, 1.0)
            elif isinstance(module, torch.nn.Conv2d):
                module.weight.mul_(3.0)  # currents that make every layer spike
    convs = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return net, on_levels(net, convs[1:], levels)


def assert_same(reference: np.ndarray, other: np.ndarray) -> None:
    result = check.agreement(reference, other)
    assert result == {"same_prediction": 100.0, "same_outputs": 100.0}, result


@pytest.mark.parametrize("levels", ["binary", "ternary"])
@pytest.mark.parametrize("events", [False, True], ids=["static", "events"])
def test_sew_resnet_with_plif_bn_and_max_pools_runs_the_same_in_snntorch_and_numpy(tmp_path, levels, events):
    net, quantized = sew_net(levels)
    generator = torch.Generator().manual_seed(1)
    inputs = ((torch.rand(16, T, 2, 8, 8, generator=generator) < 0.3).float() if events
              else torch.randn(16, 2, 8, 8, generator=generator) * 2)
    ours = check.project_outputs(net, inputs)
    assert len({tuple(row.round(4)) for row in ours}) > 4  # spikes that differ between inputs
    info = write_deployment(net, quantized, T, tmp_path)
    assert info["nir"] == NIR_FILE and info["integer"] == INTEGER_FILE
    graph = nir.read(str(tmp_path / NIR_FILE))
    assert_same(ours, snntorch_sim.outputs(graph, inputs, T))
    manifest, arrays = numpy_reference.load(str(tmp_path / INTEGER_FILE))
    assert_same(ours, check.integer_outputs(manifest, arrays, inputs))
    assert {name: set(np.unique(arrays[f"{name}.codes"])) <= {-1, 0, 1} for name in quantized} \
        == dict.fromkeys(quantized, True)


def test_plif_bn_and_the_residual_add_in_the_nir_graph():
    net, _ = sew_net("binary")
    graph = write_graph(net)
    plif = net.layers[2]
    lif = graph.nodes["layers.2"]
    k = float(torch.sigmoid(plif.w.detach()))
    # v[t] = (1 - dt/tau) v + (dt/tau) r I = (1 - k) v + k I: PLIF's leak and input gain
    assert np.allclose(1 - DT / lif.tau, 1 - k) and np.allclose(DT * lif.r / lif.tau, k)
    conv, norm = net.layers[0], net.layers[1]
    s = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    assert np.allclose(graph.nodes["layers.0"].weight, (conv.weight * s.view(-1, 1, 1, 1)).detach().numpy(),
                       atol=1e-6)
    assert np.allclose(graph.nodes["layers.0"].bias, (norm.bias - s * norm.running_mean).detach().numpy(),
                       atol=1e-6)
    # max pool of spikes: Threshold(0.5), SumPool2d, Threshold(0.5); the SEW block's input and
    # output both feed the next pool, whose values reach 2: two threshold levels
    assert isinstance(graph.nodes["layers.3.ge1.sum"], nir.SumPool2d)
    assert [type(graph.nodes[f"layers.3.ge1{end}"]) for end in ("", ".any")] == [nir.Threshold] * 2
    assert {src for src, dst in graph.edges if dst == "layers.5.ge2"} == {"layers.3.ge1.any", "layers.4.sn2"}
    assert np.allclose(graph.nodes["layers.5.ge2"].threshold, 1.5)
    pooled = {src for src, dst in graph.edges if dst == "layers.6.conv1.0"}
    assert pooled == {"layers.5.ge1.any", "layers.5.ge2.any"}


def write_graph(net):
    from cbpqsnn.deploy.nir_export import to_nir

    return to_nir(net, T)


def converted_net(levels: str, seed: int = 0):
    """A converted network in spiking mode: IF neurons with thresholds 0.7 / 1.3 / 1, initial
    potentials, a spiking pool conv (AvgPoolConv + IF) and a plain average pool."""
    torch.manual_seed(seed)
    net = build_convertible_net(["C6", "P2", "C8", "FC12"], (1, 8, 8), 3, T, spiking_pool=True).eval()
    net.set_spiking(True)
    with torch.no_grad():
        for i, neuron in enumerate(net.neurons):
            neuron.threshold.fill_((0.7, 1.3, 1.0, 1.0)[i])
            neuron.v_init.uniform_(0.0, 0.5 * float(neuron.threshold))
        for layer in net.synapses:
            layer.weight.mul_(3.0)
    names = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    return net, on_levels(net, names[1:-1], levels)


@pytest.mark.parametrize("levels", ["binary", "ternary"])
def test_converted_network_runs_the_same_in_numpy_and_snntorch_refuses_nir_if(tmp_path, levels):
    net, quantized = converted_net(levels)
    assert isinstance(net.neurons[0], IFNeuron)
    inputs = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2
    ours = check.project_outputs(net, inputs)
    assert len({tuple(row.round(4)) for row in ours}) > 8  # spikes that differ between inputs
    info = write_deployment(net, quantized, T, tmp_path)
    assert info["nir"] == NIR_FILE and info["integer"] == INTEGER_FILE
    manifest, arrays = numpy_reference.load(str(tmp_path / INTEGER_FILE))
    assert_same(ours, check.integer_outputs(manifest, arrays, inputs))
    assert any(k.endswith(".v_init") for k in arrays)
    # NIR's IF semantics (reset to 0, no initial potential) in the same reference: other outputs
    nir_if = check.integer_outputs(check.with_nir_if_semantics(manifest), arrays, inputs)
    assert check.agreement(ours, nir_if)["same_outputs"] < 50.0
    graph = nir.read(str(tmp_path / NIR_FILE))
    assert isinstance(graph.nodes["layers.1"], nir.IF)
    assert np.allclose(graph.nodes["layers.1"].v_threshold, 0.7)
    # NIR's IF has a hard reset and no initial potential; snnTorch 1.0 cannot run nir.IF at all
    with pytest.raises(NotImplementedError, match="cannot feed the next layer"):
        snntorch_sim.outputs(graph, inputs, T)


def test_integer_units_fold_bn_sign_and_pool_factors():
    # a negative BN gamma negates the channel's codes; the unit is |s| a f
    net, quantized = sew_net("binary")
    manifest, arrays = integer.build(net, quantized, T)
    norm = net.layers[4].conv1[1]
    s = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).detach().double().numpy()
    codes = arrays["layers.4.conv1.0.codes"].astype(np.int64)
    a = float(quantized["layers.4.conv1.0"].max())
    original = np.round(net.layers[4].conv1[0].weight.detach().double().numpy() / a)
    assert np.array_equal(codes, original * np.sign(s).reshape(-1, 1, 1, 1))
    threshold = arrays["layers.4.sn1.threshold"].reshape(-1)
    assert np.allclose(threshold, 1.0 / (np.abs(s) * a))
    # two SEW ADDs before layers.7: its inputs reach 3 (1 + 1 + 1): 3 x fan-in
    widths = integer.bit_widths(manifest, arrays)
    fan_in = int(np.abs(arrays["layers.7.codes"]).reshape(8, -1).sum(1).max())
    assert widths["layers.7"]["accumulator_bits"] == int(np.ceil(np.log2(3 * fan_in + 1))) + 1


def tssl_net(levels: str, seed: int = 0):
    """A small TSSL-BP network: PSP input, conv, scaled sum pool, conv, FC, spiking classifier."""
    from cbpqsnn.methods.tsslbp import build_tssl_net
    from cbpqsnn.neurons import TSSLConstants

    torch.manual_seed(seed)
    model = {"spec": ["C6", "P2", "C8", "P2", "FC12"], "dropout": 0.0, "conv_weight_scale": 5.0,
             "fc_weight_scale": 1.0}
    net = build_tssl_net(model, (1, 8, 8), 3, T, TSSLConstants()).eval()
    names = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    with torch.no_grad():
        net.layers[-2].weight.uniform_(-0.5, 1.0)  # every output neuron fires for some inputs
    return net, on_levels(net, names[1:-1], levels)


@pytest.mark.parametrize("levels", ["binary", "ternary"])
def test_tssl_network_runs_the_same_in_snntorch_and_numpy(tmp_path, levels):
    net, quantized = tssl_net(levels)
    inputs = torch.randn(24, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 3
    ours = check.project_outputs(net, inputs)
    assert len({tuple(row.round(4)) for row in ours}) > 8
    info = write_deployment(net, quantized, T, tmp_path)
    assert info["nir"] == NIR_FILE and info["integer"] == INTEGER_FILE
    graph = nir.read(str(tmp_path / NIR_FILE))
    assert isinstance(graph.nodes["layers.2"], nir.CubaLIF)
    assert_same(ours, snntorch_sim.outputs(graph, inputs, T))
    manifest, arrays = numpy_reference.load(str(tmp_path / INTEGER_FILE))
    assert_same(ours, check.integer_outputs(manifest, arrays, inputs))


def test_a_bias_after_a_psp_filter_is_refused_by_both_targets():
    from cbpqsnn.deploy.nir_export import to_nir

    net, quantized = tssl_net("binary")
    conv = net.layers[1]
    conv.bias = torch.nn.Parameter(torch.full((conv.out_channels,), 0.1))
    for target in (lambda: to_nir(net, T), lambda: integer.build(net, quantized, T)):
        with pytest.raises(NotImplementedError, match="bias after a PSP filter"):
            target()
