import math

import pytest
import torch

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
