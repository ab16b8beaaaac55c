import math

import pytest
import torch

from cbpqsnn import neurons
from cbpqsnn.neurons import STBPLIF, ATan, FastSigmoid, Rectangular, Sigmoid, make_surrogate, spike


def run_lif(inputs, weights):
    x = torch.tensor(inputs, dtype=torch.float64).view(-1, 1).requires_grad_(True)
    lif = STBPLIF(v_threshold=0.5, decay=0.25, surrogate=Rectangular(1.0))
    out = lif(x)
    (out.view(-1) * torch.tensor(weights, dtype=torch.float64)).sum().backward()
    return out.view(-1).tolist(), x.grad.view(-1).tolist()


def test_stbp_lif_forward_and_backward_match_hand_computation():
    # u = [0.6, 0.3, 0.475, 0.31875] -> spikes [1, 0, 0, 0]; every u inside the surrogate window.
    # delta_t = c_t h_t + delta_{t+1} * decay * (1 - o_t - u_t h_t)  (reset NOT detached)
    spikes, grad = run_lif([0.6, 0.3, 0.4, 0.2], [1, 2, 3, 4])
    assert spikes == [1.0, 0.0, 0.0, 0.0]
    d3 = 4.0
    d2 = 3 + d3 * 0.25 * (1 - 0 - 0.475)
    d1 = 2 + d2 * 0.25 * (1 - 0 - 0.3)
    d0 = 1 + d1 * 0.25 * (1 - 1 - 0.6)
    assert grad == pytest.approx([d0, d1, d2, d3], abs=1e-12)
    assert grad[0] == pytest.approx(0.60746875)  # detaching the reset would give 1.0


def test_stbp_lif_gradient_is_zero_outside_the_rectangular_window():
    # u0 = 1.2: |u0 - 0.5| >= 0.5 -> surrogate 0; u1 = 0.3 (reset by o0 = 1)
    spikes, grad = run_lif([1.2, 0.3], [1, 2])
    assert spikes == [1.0, 0.0]
    assert grad == pytest.approx([0.0, 2.0])


def test_stbp_lif_fires_strictly_above_threshold():
    spikes, _ = run_lif([0.5, 0.5000001], [1, 1])
    assert spikes == [0.0, 1.0]


def test_stbp_lif_multistep_shape_and_independence_of_batch_elements():
    lif = STBPLIF()
    x = torch.rand(5, 3, 4, 2)
    out = lif(x)
    assert out.shape == x.shape
    single = lif(x[:, 1:2])
    assert torch.equal(out[:, 1:2], single)


@pytest.mark.parametrize(
    ("surrogate", "x", "expected"),
    [
        (Rectangular(1.0), [-0.6, -0.4, 0.0, 0.49, 0.5], [0.0, 1.0, 1.0, 1.0, 0.0]),
        (Rectangular(0.5), [0.2, 0.3], [2.0, 0.0]),
        (ATan(2.0), [0.0, 0.5], [1.0, 1.0 / (1 + (math.pi / 2) ** 2)]),
        (FastSigmoid(10.0), [0.0, 0.1], [1.0, 0.25]),
        (Sigmoid(4.0), [0.0], [1.0]),
    ],
)
def test_surrogate_derivatives_match_their_formulas(surrogate, x, expected):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = spike(xt, surrogate)
    out.sum().backward()
    assert xt.grad.tolist() == pytest.approx(expected)
    assert out.tolist() == [float(v >= 0) for v in x]


def test_unknown_surrogate_lists_valid_choices():
    with pytest.raises(ValueError, match="atan"):
        make_surrogate("triangle")


def _all_neuron_classes(cls=neurons.MultiStepNeuron):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_neuron_classes(sub)


def _if_neuron(**kwargs):
    n = neurons.IFNeuron(shape=(4,), **kwargs).double()
    n.threshold.fill_(0.7)
    n.v_init.copy_(torch.tensor([0.0, 0.2, -0.1, 0.5]))
    return n


# every neuron of the package, with the gradients its forward claims to share with its step loop
# (TSSL-BP's forward has its own backward by design: outputs only)
NEURON_CASES = {
    "stbp_lif": (lambda: neurons.STBPLIF(), True),
    "stbp_lif_detached_reset": (lambda: neurons.STBPLIF(decay=0.5, detach_reset=True), True),
    "plif": (lambda: neurons.ParametricLIF(tau0=3.0).double(), True),
    "lif_attached_reset": (lambda: neurons.ParametricLIF(learnable=False, detach_reset=False), True),
    "plif_reset_potential": (
        lambda: neurons.ParametricLIF(tau0=1.5, v_reset=-0.2, detach_reset=False).double(), True),
    "if": (_if_neuron, True),
    "if_detached_reset": (lambda: _if_neuron(detach_reset=True), True),
    "tssl": (lambda: neurons.TSSLNeuron(), False),
}


def test_every_neuron_class_is_covered_by_the_forward_vs_step_loop_contract():
    covered = {type(make()) for make, _ in NEURON_CASES.values()}
    assert set(_all_neuron_classes()) <= covered


@pytest.mark.parametrize("case", NEURON_CASES)
def test_forward_equals_the_step_by_step_definition(case):
    make, same_gradient = NEURON_CASES[case]
    neuron = make()
    x = (torch.randn(6, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.8
         + 0.6).requires_grad_(True)
    weights = torch.randn(6, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    results = []
    for run in (neuron.forward, neuron.step_loop):
        out = run(x)
        grads = torch.autograd.grad((out * weights).sum(), [x, *neuron.parameters()])
        results.append((out.detach(), grads))
    (out_a, grads_a), (out_b, grads_b) = results
    assert 0 < float(out_a.count_nonzero()) < out_a.numel()  # some steps fire, some do not
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=1e-12)
    if same_gradient:
        for a, b in zip(grads_a, grads_b, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("surrogate", [Rectangular(1.0), ATan(2.0), Sigmoid(4.0), FastSigmoid(10.0)])
def test_fused_stbp_lif_is_bitwise_its_step_loop_in_float32(surrogate, detach_reset):
    """The default run's numbers depend on it: same outputs and gradients to the last bit. (The
    sigmoid surrogate's exp, evaluated on all T steps at once, may differ from the per-step
    evaluation in the last bit: vectorized vs scalar tails; its gradients agree to 1e-6.)"""
    neuron = STBPLIF(v_threshold=0.5, decay=0.25, surrogate=surrogate, detach_reset=detach_reset)
    x = (torch.randn(8, 16, 33, generator=torch.Generator().manual_seed(2)) * 0.6 + 0.3).requires_grad_(True)
    weights = torch.randn(8, 16, 33, generator=torch.Generator().manual_seed(3))
    out_fused = neuron(x)
    (grad_fused,) = torch.autograd.grad((out_fused * weights).sum(), x)
    out_loop = neuron.step_loop(x)
    (grad_loop,) = torch.autograd.grad((out_loop * weights).sum(), x)
    assert torch.equal(out_fused, out_loop)
    if isinstance(surrogate, Sigmoid):
        torch.testing.assert_close(grad_fused, grad_loop, rtol=1e-6, atol=1e-7)
    else:
        assert torch.equal(grad_fused, grad_loop)
    assert 0.05 < float(out_fused.mean()) < 0.95 and float(grad_fused.abs().sum()) > 0


@pytest.mark.parametrize("surrogate", [Rectangular(1.0), Rectangular(0.4), ATan(2.0), Sigmoid(4.0),
                                       FastSigmoid(10.0)])
def test_in_place_surrogate_derivative_is_bitwise_the_derivative(surrogate):
    x = torch.randn(1000, generator=torch.Generator().manual_seed(4))
    assert torch.equal(surrogate.derivative_(x.clone()), surrogate.derivative(x))


def test_every_neuron_runs_its_time_loop_in_float32_on_a_half_precision_current():
    """Mixed precision hands the neurons bf16 currents; the membrane must not be summed in bf16."""
    assert all(getattr(cls.forward, "float32_time_loop", False) for cls in _all_neuron_classes())
    # bf16-exact currents whose second-step membrane 0.25 * 0.400390625 + 0.400390625 = 0.50049 is
    # above the threshold 0.5 in float32 but rounds to 0.5 (no spike) in bf16
    x = torch.tensor([[0.400390625], [0.400390625]], dtype=torch.bfloat16)
    out = neurons.STBPLIF(v_threshold=0.5, decay=0.25)(x)
    assert out.dtype == torch.bfloat16 and out.flatten().tolist() == [0.0, 1.0]


@pytest.mark.parametrize("case", NEURON_CASES)
def test_a_bf16_current_gives_the_float32_neurons_spikes_and_gradient_in_bf16(case):
    neuron = NEURON_CASES[case][0]().float()
    x32 = (torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.6)
    x16 = x32.bfloat16().requires_grad_(True)
    x32 = x16.detach().float().requires_grad_(True)
    weights = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(1))
    out16, out32 = neuron(x16), neuron(x32)
    assert out16.dtype == torch.bfloat16 and 0 < int(out32.count_nonzero()) < out32.numel()
    assert torch.equal(out16, out32.bfloat16())
    (grad16,) = torch.autograd.grad((out16.float() * weights).sum(), x16)
    (grad32,) = torch.autograd.grad((out32.bfloat16().float() * weights).sum(), x32)
    assert grad16.dtype == torch.bfloat16 and torch.equal(grad16, grad32.bfloat16())
