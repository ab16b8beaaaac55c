import pytest
import torch

from cbpqsnn.quant.quantizer import constraint, constraint_failure

TERNARY = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)


def test_constraint_failure_is_twice_the_distance_to_the_nearest_level():
    w = torch.tensor([-1.5, -1.0, -0.7, -0.5, -0.2, 0.0, 0.4, 1.0, 1.3], dtype=torch.float64)
    expected = [1.0, 0.0, 0.6, 1.0, 0.4, 0.0, 0.8, 0.0, 0.6]
    assert constraint_failure(w, TERNARY).tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("g", "w", "cs", "grad"),
    [
        # g = 1: the bands cover every interval between levels; only the outer walls act
        (1, [-1.5, -0.9, -0.5, -0.1, 0.3, 0.99, 1.2], [1.0, 0, 0, 0, 0, 0, 0.4],
         [-2, 0, 0, 0, 0, 0, 2]),
        # g = 2: bands |w - m| < 1/4 around m = -0.5, 0.5
        (2, [-0.8, -0.76, -0.6, -0.24, -0.2, 0.2, 0.3, 0.76, 1.2],
         [0.4, 0.48, 0, 0.48, 0.4, 0.4, 0, 0.48, 0.4], [2, 2, 0, -2, -2, 2, 0, -2, 2]),
        # g = 10: bands |w - m| < 1/20
        (10, [-0.56, -0.54, -0.46, 0.1, 0.44, 0.52], [0.88, 0, 0, 0.2, 0.88, 0],
         [2, 0, 0, 2, 2, 0]),
    ],
)
def test_windowed_constraint_values_and_gradients(g, w, cs, grad):
    wt = torch.tensor(w, dtype=torch.float64)
    value, gradient = constraint(wt, TERNARY, g)
    assert value.tolist() == pytest.approx(cs)
    assert gradient.tolist() == pytest.approx(grad)


@pytest.mark.parametrize("g", [1, 2, 3, 5, 10, 20])
def test_constraint_gradient_matches_finite_differences(g):
    torch.manual_seed(g)
    levels = torch.tensor([-1, -0.5, -0.25, 0, 0.25, 0.5, 1], dtype=torch.float64) * 0.7
    w = torch.empty(4000, dtype=torch.float64).uniform_(-1, 1)
    h = 1e-7
    mids = (levels[1:] + levels[:-1]) / 2
    half = (levels[1:] - levels[:-1]) / (2 * g)
    kinks = torch.cat([levels, mids - half, mids + half])
    w = w[(w[:, None] - kinks[None]).abs().min(1).values > 1e-5]  # away from every kink
    value, grad = constraint(w, levels, g)
    numeric = (constraint(w + h, levels, g)[0] - constraint(w - h, levels, g)[0]) / (2 * h)
    assert torch.allclose(grad, numeric, atol=1e-6)
    assert (value > 0).any() and (value == 0).any()


def test_band_shrinks_as_g_grows_and_constraint_equals_y_outside():
    w = torch.linspace(-1.2, 1.2, 2401, dtype=torch.float64)
    y = constraint_failure(w, TERNARY)
    free_fraction = []
    for g in (1, 2, 3, 5, 10, 20, 30):
        cs, _ = constraint(w, TERNARY, g)
        free = cs == 0
        free_fraction.append(free.double().mean().item())
        assert torch.equal(cs[~free], y[~free])  # outside the bands cs = Y
    assert free_fraction == sorted(free_fraction, reverse=True)


def test_constraint_rejects_g_below_one():
    with pytest.raises(ValueError, match="g must be >= 1"):
        constraint(torch.zeros(3), TERNARY, 0.5)


def two_search_constraint(w, levels, g):
    """The definition with two searches (nearest level; interval by a search of the levels)."""
    idx = torch.bucketize(w, (levels[1:] + levels[:-1]) / 2, right=True)
    diff = w - levels[idx]
    m = (levels[1:] + levels[:-1]) / 2
    lower = torch.bucketize(w, levels, right=True).clamp(1, len(levels) - 1) - 1
    half_band = (levels[lower + 1] - levels[lower]) / (2 * g)
    free = (w - m[lower]).abs() < half_band
    return (torch.where(free, torch.zeros_like(w), 2 * diff.abs()),
            torch.where(free, torch.zeros_like(w), 2 * torch.sign(diff)))


@pytest.mark.parametrize("g", [1, 2, 3, 7, 10, 20, 30])
@pytest.mark.parametrize("factors", [[-1, 1], [-0.5, 1], [-1, 0, 1], [-1, -0.5, -0.25, 0, 0.25, 0.5, 1],
                                     [i / 7 for i in range(-8, 8)]])  # int4: the search path
def test_one_search_constraint_is_bitwise_the_two_search_definition(g, factors):
    w = torch.randn(20000, generator=torch.Generator().manual_seed(g)) * 0.08
    levels = torch.tensor(factors) * 0.061
    w[:len(levels)] = levels  # on the levels, and exactly on the medians
    w[len(levels):2 * len(levels) - 1] = (levels[1:] + levels[:-1]) / 2
    cs, grad = constraint(w, levels, g)
    ref_cs, ref_grad = two_search_constraint(w, levels, g)
    assert torch.equal(cs, ref_cs) and torch.equal(grad, ref_grad)
    assert (cs > 0).any() and (grad == 0).any()
