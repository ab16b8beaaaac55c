"""The compiled neuron kernels (``neuron_kernels=compiled``) against the eager fused ones."""

import pytest
import torch

from cbpqsnn.methods.stbp import STBPClassifier
from cbpqsnn.methods.tsslbp import TSSLClassifier
from cbpqsnn.nets.pools import SpikeAvgPool2d, SpikeMaxPool2d
from cbpqsnn.neurons import STBPLIF, ParametricLIF, Rectangular, Sigmoid
from cbpqsnn.neurons.kernels import set_kernels


def outputs_and_gradients(neuron, x, weights):
    x = x.clone().requires_grad_(True)
    for p in neuron.parameters():
        p.grad = None
    out = neuron(x)
    (out * weights).sum().backward()
    return out.detach(), x.grad, [p.grad.clone() for p in neuron.parameters()]


# One case per compiled kernel pair, each with the reset NOT detached (the longest backward) and
# an initial condition the other paths never reach (v_reset != 0); float64, so a wrong term shows.
# Compiling takes seconds per kernel (docs/performance.md): two neurons, four kernels.
CASES = {
    "stbp_lif": lambda: STBPLIF(v_threshold=0.5, decay=0.25, surrogate=Rectangular(1.0)),
    "plif": lambda: ParametricLIF(tau0=3.0, learnable=True, v_reset=0.3, surrogate=Sigmoid(4.0),
                                  detach_reset=False),
}


@pytest.mark.parametrize("name", CASES)
def test_compiled_kernels_compute_the_eager_kernels_outputs_and_gradients(name):
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, 5, dtype=torch.float64) * 1.5
    weights = torch.randn_like(x)
    neuron = CASES[name]().double()
    eager = outputs_and_gradients(neuron, x, weights)
    assert 0.05 < float(eager[0].mean()) < 0.95  # spikes and silences both occur
    neuron.kernels = "compiled"
    compiled = outputs_and_gradients(neuron, x, weights)
    assert torch.equal(compiled[0], eager[0])
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-12, atol=1e-14)
    for got, want in zip(compiled[2], eager[2], strict=True):  # PLIF's dL/dk: another sum order
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    if name == "stbp_lif":  # the eager kernel is bitwise its step loop; the compiled one too
        assert torch.equal(compiled[1], eager[1])
    # a channels-last feature map [T, B, C, H, W] (C innermost) with a contiguous output gradient:
    # the same numbers, and the output and input gradient keep the input's layout (no copy back)
    maps = x.reshape(6, 3, 2, 2, 5).permute(0, 1, 4, 2, 3)
    assert not maps.is_contiguous() and maps.stride(2) == 1
    map_weights = weights.reshape(6, 3, 2, 2, 5).permute(0, 1, 4, 2, 3).contiguous()
    on_maps = outputs_and_gradients(neuron, maps, map_weights)
    assert torch.equal(on_maps[0].permute(0, 1, 3, 4, 2).reshape(x.shape), compiled[0])
    assert torch.equal(on_maps[1].permute(0, 1, 3, 4, 2).reshape(x.shape), compiled[1])
    assert on_maps[0].stride() == maps.stride() and on_maps[1].stride() == maps.stride()


def test_compiled_kernel_takes_a_bf16_current_with_a_float32_membrane():
    """Mixed precision: the compiled kernel casts inside (no wrapper cast) and must still sum the
    membrane in float32: column 0's second step is 0.25 * 0.400390625 + 0.400390625 = 0.50049,
    a spike in float32 and exactly the threshold 0.5 (no spike) in bf16."""
    torch.manual_seed(0)
    x = (torch.randn(4, 2, 30) * 0.8 + 0.3).bfloat16()
    x[:2, 0, 0] = 0.400390625
    weights = torch.randn(x.shape)
    neuron = STBPLIF(v_threshold=0.5, decay=0.25, surrogate=Rectangular(1.0))
    eager = outputs_and_gradients(neuron, x, weights)
    neuron.kernels = "compiled"
    compiled = outputs_and_gradients(neuron, x, weights)
    assert compiled[0].dtype == compiled[1].dtype == torch.bfloat16
    assert compiled[0][:2, 0, 0].tolist() == [0.0, 1.0]
    assert torch.equal(compiled[0], eager[0])
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-2, atol=1e-3)  # bf16 rounding


def test_a_backbone_runs_its_neurons_with_the_kernels_it_is_given_compiling_each_once():
    """Conv and FC layers, a static input expanded over T, two batch sizes, training and no-grad
    evaluation all meet one compiled forward and one backward (the kernels see ``[T, N]``);
    inference tensors add one forward. A run once failed here on dynamo's recompile limit."""
    from torch._dynamo.utils import counters

    model = {"spec": ["C4", "P2", "FC8"]}
    module = STBPClassifier(model=model, in_shape=(1, 8, 8), num_classes=3, T=3,
                            neuron_kernels="compiled")
    switched = (STBPLIF, SpikeAvgPool2d)
    assert {type(m): m.kernels for m in module.net.modules() if isinstance(m, switched)} == {
        STBPLIF: "compiled", SpikeAvgPool2d: "compiled"}
    default = STBPClassifier(model=model, in_shape=(1, 8, 8), num_classes=3, T=3)
    assert {m.kernels for m in default.net.modules() if isinstance(m, switched)} == {"eager"}
    for pool in module.net.modules():  # their compiles are counted in test_compiled_pools_...
        if isinstance(pool, SpikeAvgPool2d):
            pool.kernels = "eager"
    before = counters["stats"]["unique_graphs"]
    for batch in (4, 5, 4):
        x, y = torch.randn(batch, 1, 8, 8), torch.randint(0, 3, (batch,))
        module.loss(module.net(x), y).backward()
    with torch.no_grad():
        module.net(torch.randn(6, 1, 8, 8))
    assert counters["stats"]["unique_graphs"] - before == 2
    with torch.inference_mode():
        module.net(torch.randn(7, 1, 8, 8))
    assert counters["stats"]["unique_graphs"] - before == 3


def test_the_time_loops_compile_with_the_cpu_fusion_cap_and_other_devices_with_defaults(monkeypatch):
    """The four time-loop kernels carry ``TIME_LOOP_OPTIONS`` (at most 8 nodes per fused CPU kernel:
    faster than the default, docs/performance.md); each device type compiles its own variant
    with its own options; the pools keep Inductor's defaults."""
    from cbpqsnn.neurons import kernels

    assert kernels.TIME_LOOP_OPTIONS == {"cpu": {"max_fusion_size": 8}}
    for loop in (kernels.stbp_lif_forward, kernels.stbp_lif_backward, kernels.plif_forward,
                 kernels.plif_backward):
        assert loop.options is kernels.TIME_LOOP_OPTIONS
    assert kernels.pool_kernel("avg", 2).options is None
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.append(kw["options"]) or fn)
    double = kernels._compiled(lambda x: 2 * x, kernels.TIME_LOOP_OPTIONS)
    for device in ("cpu", "meta", "cpu"):
        double(torch.ones(3, device=device))
    assert seen == [{"max_fusion_size": 8}, None]


def test_compiled_kernels_for_a_network_without_them_is_an_error_not_a_no_op():
    model = {"spec": ["C4", "P2", "FC8"], "dropout": 0.0}
    with pytest.raises(ValueError, match="none of this network's neurons .*TSSLNeuron.* has compiled"):
        TSSLClassifier(model=model, in_shape=(1, 8, 8), num_classes=3, T=2, neuron_kernels="compiled")
    with pytest.raises(ValueError, match=r"valid choices: \['eager', 'compiled'\]"):
        set_kernels(torch.nn.Sequential(STBPLIF()), "fast")


def test_under_a_dispatch_mode_the_compiled_kernels_run_uncompiled_and_are_counted():
    """FlopCounterMode (benchmarks/compute_per_row.py) is bypassed by compiled code; there the
    kernels run as written, with the same results, and their operations are counted."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 5)
    x = torch.randn(4, 3, 6)
    neuron = STBPLIF(v_threshold=0.5, decay=0.25, surrogate=Rectangular(1.0))
    eager = neuron(layer(x))
    neuron.kernels = "compiled"
    with FlopCounterMode(display=False) as counter:
        counted = neuron(layer(x))
        counted.sum().backward()
    assert torch.equal(counted, eager)
    assert counter.get_total_flops() > 0


@pytest.mark.parametrize("pool, shape", [(SpikeAvgPool2d(2), (4, 5, 7, 9)),   # partial windows
                                         (SpikeMaxPool2d(2), (6, 3, 8, 8))])
def test_compiled_pools_compute_pytorchs_pools_on_sums_of_spikes_bitwise(pool, shape):
    """Forward and gradient equal to ``nn.AvgPool2d`` / ``nn.MaxPool2d`` on integer inputs 0..3
    (spikes summed by SEW blocks; max pooling then meets many ties: the gradient must go to the
    same first maximum of the window)."""
    torch.manual_seed(0)
    x = (torch.rand(shape) < 0.3).float() * torch.randint(1, 4, shape)
    grads = torch.randn(pool(x).shape)
    results = {}
    for kernels in ("eager", "compiled"):
        pool.kernels = kernels
        xg = x.clone().requires_grad_(True)
        out = pool(xg)
        out.backward(grads)
        results[kernels] = (out.detach(), xg.grad)
    assert torch.equal(results["compiled"][0], results["eager"][0])
    assert torch.equal(results["compiled"][1], results["eager"][1])


def test_a_compiled_max_pool_of_channels_last_maps_runs_pytorchs_own(monkeypatch):
    """The one exception (measured faster, the same pool): max pooling of channels-innermost maps;
    average pooling and contiguous maps go to the compiled kernel."""
    import cbpqsnn.nets.pools as pools

    called = []
    monkeypatch.setattr(pools, "pool_kernel",
                        lambda kind, k: lambda x: called.append(kind) or x[..., ::k, ::k])
    x = torch.rand(2, 4, 6, 6)
    maps = x.contiguous(memory_format=torch.channels_last)
    for pool in (SpikeMaxPool2d(2), SpikeAvgPool2d(2)):
        pool.kernels = "compiled"
        assert pool(x).shape == pool(maps).shape == (2, 4, 3, 3)
    assert called == ["max", "avg", "avg"]
