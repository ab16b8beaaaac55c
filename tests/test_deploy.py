"""Deployment: the NIR graph read back by an independent simulator (snnTorch), and the NumPy integer
reference, both against the project's network -- identical output spike counts, on tiny STBP
networks with weights on binary / ternary levels."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from cbpqsnn.deploy import check, integer, numpy_reference
from cbpqsnn.deploy.artifacts import INTEGER_FILE, NIR_FILE, write_deployment
from cbpqsnn.deploy.nir_export import DT, to_nir
from cbpqsnn.deploy.simulators import snntorch_sim
from cbpqsnn.nets.feedforward import build_spiking_net
from cbpqsnn.neurons import STBPLIF

T = 5


def tiny_net(spec, in_shape, levels: str = "binary", seed: int = 0):
    """An STBP net whose hidden conv / linear layers (all but the first and last) sit on
    ``a F`` levels (F binary or ternary); returns the net and its quantized layers' levels."""
    torch.manual_seed(seed)
    neuron = partial(STBPLIF, v_threshold=0.5, decay=0.25)
    net = build_spiking_net(spec, in_shape, 3, neuron, T, bias=True).eval()
    affine = [(f"layers.{i}", m) for i, m in enumerate(net.layers)
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        for layer in [m for _, m in affine]:
            layer.weight.mul_(3.0)  # enough current for spikes in every layer, biases that do
            layer.bias.mul_(0.5)    # not decide the output alone
    return net, on_levels(net, [name for name, _ in affine[1:-1]], levels)


def on_levels(net: torch.nn.Module, names: list[str], levels: str) -> dict[str, torch.Tensor]:
    """Put the named layers' weights on ``a F`` levels (F binary or ternary); returns their levels."""
    quantized = {}
    modules = dict(net.named_modules())
    with torch.no_grad():
        for name in names:
            w = modules[name].weight
            a = w.abs().mean()
            if levels == "binary":
                w.copy_(a * torch.where(w >= 0, 1.0, -1.0))
                quantized[name] = a * torch.tensor([-1.0, 1.0])
            else:
                w.copy_(a * torch.sign(w) * (w.abs() > 0.5 * a))
                quantized[name] = a * torch.tensor([-1.0, 0.0, 1.0])
    return quantized


CASES = {
    "conv_avgpool": (["C4", "P2", "C8", "P2", "FC16"], (1, 8, 8)),
    "mlp": (["FC12", "FC10"], (6,)),
}


@pytest.mark.parametrize("levels", ["binary", "ternary"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_snntorch_and_the_numpy_integer_reference_give_the_projects_spike_counts(tmp_path, case, levels):
    spec, in_shape = CASES[case]
    net, quantized = tiny_net(spec, in_shape, levels)
    inputs = torch.randn(24, *in_shape, generator=torch.Generator().manual_seed(1))
    ours = check.project_outputs(net, inputs)
    assert ours.sum() > 0 and len({tuple(row) for row in ours}) > 3  # activity that tells apart
    info = write_deployment(net, quantized, T, tmp_path)
    assert info["nir"] == NIR_FILE and info["integer"] == INTEGER_FILE
    import nir

    graph = nir.read(str(tmp_path / NIR_FILE))
    assert np.array_equal(snntorch_sim.outputs(graph, inputs, T), ours)
    manifest, arrays = numpy_reference.load(str(tmp_path / INTEGER_FILE))
    assert np.array_equal(check.integer_outputs(manifest, arrays, inputs), ours)
    for name in quantized:  # integer codes, no scale left in the quantized layers
        codes = arrays[f"{name}.codes"]
        assert codes.dtype == np.int8 and set(np.unique(codes)) <= {-1, 0, 1}


def test_the_nir_graph_round_trips_with_stbps_lif_as_nir_lif():
    net, _ = tiny_net(*CASES["conv_avgpool"])
    graph = to_nir(net, T)
    import nir

    path = "/tmp/cbpqsnn_test_roundtrip.nir"
    nir.write(path, graph)
    back = nir.read(path)
    assert set(back.nodes) == set(graph.nodes) and len(back.edges) == len(graph.edges)
    lif = back.nodes["layers.1"]
    assert isinstance(lif, nir.LIF)
    # v[t] = (1 - dt/tau) v + (dt/tau) r I = 0.25 v + I: STBP's decay and unit input gain
    assert np.allclose(1 - DT / lif.tau, 0.25) and np.allclose(DT * lif.r / lif.tau, 1.0)
    assert np.allclose(lif.v_threshold, 0.5) and np.allclose(lif.v_reset, 0.0)
    conv = back.nodes["layers.0"]
    assert np.array_equal(conv.weight, net.layers[0].weight.detach().numpy())
    assert isinstance(back.nodes["layers.2"], nir.AvgPool2d)


def test_a_layer_without_a_mapping_or_weights_off_their_levels_are_named():
    net, quantized = tiny_net(["C4", "M2", "FC8"], (1, 8, 8))
    net.layers.insert(2, torch.nn.ReLU())
    with pytest.raises(NotImplementedError, match="ReLU"):
        to_nir(net, T)
    net, quantized = tiny_net(["C4", "M2", "FC8"], (1, 8, 8))
    net.layers.insert(2, net.layers.pop(1))  # the max pool on currents, before the neuron
    with pytest.raises(NotImplementedError, match="only on spikes"):
        to_nir(net, T)
    net, quantized = tiny_net(*CASES["mlp"])
    with torch.no_grad():
        net.layers[2].weight[0, 0] += 0.01
    with pytest.raises(ValueError, match="bake the model first"):
        integer.build(net, quantized, T)



def test_the_integer_artifact_names_a_level_set_it_cannot_hold_briefly():
    weight = torch.tensor([[0.5, -0.5, 0.0]])
    codes, scale = integer._codes(weight, torch.tensor([-0.5, 0.0, 0.5]))  # ternary: exact codes
    assert codes.tolist() == [[1, -1, 0]] and scale == 0.5
    int8 = torch.arange(-127, 128) / 127 * 0.5
    with pytest.raises(ValueError, match=r"got 255 factors from -1 to 1$"):  # not 255 numbers
        integer._codes(weight, int8)
    with pytest.raises(ValueError, match=r"got \(-1.0, -0.5, 0.0, 0.5, 1.0\)$"):
        integer._codes(weight, torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))

def test_bit_widths_by_hand():
    # layers: Linear(6, 12) LIF | Linear(12, 10) LIF (binary: fan-in 12, |code| 1, spike inputs)
    # | Linear(10, 3) LIF. Accumulator bound 12: ceil(log2 13) + 1 = 5 signed bits.
    net, quantized = tiny_net(*CASES["mlp"])
    manifest, arrays = integer.build(net, quantized, T)
    widths = integer.bit_widths(manifest, arrays)
    assert list(widths) == ["layers.2"] and widths["layers.2"]["accumulator_bits"] == 5
    bias = float(np.abs(arrays["layers.3.bias"]).max())
    expected = int(np.ceil(np.log2((12 + bias) / 0.75 + 1))) + 1
    assert widths["layers.2"]["membrane_integer_bits"] == expected
    # after a 2x2 sum pool the inputs are counts up to 4: conv C8 on C4 (fan-in 4*9 = 36) -> 144
    net, quantized = tiny_net(*CASES["conv_avgpool"])
    manifest, arrays = integer.build(net, quantized, T)
    assert integer.bit_widths(manifest, arrays)["layers.3"]["accumulator_bits"] == 9  # log2(145)


def test_hardware_metrics_against_hand_counted_spikes():
    from cbpqsnn.deploy.metrics import hardware_metrics

    neuron = partial(STBPLIF, v_threshold=0.5, decay=0.25)
    net = build_spiking_net(["FC4"], (3,), 3, neuron, 2, bias=True).eval()
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]))
        net.layers[2].weight.fill_(0.3)
        for i in (0, 2):
            net.layers[i].bias.zero_()
    # currents [1, .2, .6, 0]: t0 u = [1, .2, .6, 0] -> spikes [1, 0, 1, 0]; t1 u = 0.25 u (1 - o) + I
    # = [1, .25, .6, 0] -> [1, 0, 1, 0]: rate 4 / 8. The output gets 2 spikes x 0.3 per step: it
    # spikes at both steps (rate 1). SynOps of layer 2: 2 events x 3 synapses x 2 steps = 12;
    # layer 0 sees the image: 3 inputs x 4 synapses = 12 MACs, once.
    table = {"fp32_mac": 1.0, "fp32_add": 10.0, "int_add": 100.0, "int_mac": 1000.0}
    x = torch.tensor([[1.0, 0.2, 0.6]])
    fp32 = hardware_metrics(net, [x, x], table)
    assert fp32["samples"] == 2 and fp32["spike_rate"] == {"layers.1": 0.5, "layers.3": 1.0}
    assert fp32["layers"]["layers.2"]["synops"] == 12 and fp32["layers"]["layers.0"]["macs"] == 12
    assert fp32["synops"] == 12 and fp32["energy_uj"] == pytest.approx((12 * 1 + 12 * 10) * 1e-6)
    binary = hardware_metrics(net, [x], table, quantized={"layers.2": 1})
    assert binary["energy_uj"] == pytest.approx((12 * 1 + 12 * 100) * 1e-6)
    assert binary["layers"]["layers.2"]["weight_memory_bytes"] == (12 * 1 + 32) / 8
    assert binary["layers"]["layers.0"]["weight_memory_bytes"] == 12 * 4
    int4 = hardware_metrics(net, [x], table, quantized={"layers.2": 4})
    assert int4["energy_uj"] == pytest.approx((12 * 1 + 12 * 1000) * 1e-6)
    # event frames [T, B, 3] (counts of 2): event driven from the first layer, one accumulate per
    # event (not per unit of its count) and synapse: 3 events x 4 synapses
    frames = torch.tensor([[[2.0, 0.0, 0.0]], [[0.0, 2.0, 2.0]]])
    events = hardware_metrics(net, [frames], table)
    assert events["layers"]["layers.0"] == pytest.approx(
        {"synops": 12, "macs": 0, "energy_pj": 120, "weight_bits": 32, "weight_memory_bytes": 48})


def test_conv_synops_count_every_synapse_of_every_event():
    from cbpqsnn.deploy.metrics import _fan_out_count

    conv = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1)
    active = (torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    probe = torch.ones(1, 3, 9, 9, requires_grad=True)  # d/dx sum(conv_ones(x)) = fan-out of x
    torch.nn.functional.conv2d(probe, torch.ones(5, 3, 3, 3), None, 2, 1).sum().backward()
    assert _fan_out_count(conv, active) == pytest.approx(float((active * probe.grad).sum()))
