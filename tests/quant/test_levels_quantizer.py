import pytest
import torch

from cbpqsnn.quant.levels import (
    MSE_GRID,
    bits_per_weight,
    default_scale,
    layer_levels,
    layer_scale,
    level_factors,
)
from cbpqsnn.quant.quantizer import LevelQuantizer, level_index, medians, quantize

EXPECTED = {
    "binary": ([-1, 1], 1),
    "ternary": ([-1, 0, 1], 2),
    "shift1": ([-1, -0.5, 0, 0.5, 1], 3),
    "shift2": ([-1, -0.5, -0.25, 0, 0.25, 0.5, 1], 3),
    "int2": ([-1, 0, 1], 2),
    "int3": ([-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1], 3),
    "int4": ([k / 7 for k in range(-7, 8)], 4),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_factor_sets_and_bits(name):
    factors, bits = EXPECTED[name]
    assert level_factors(name) == pytest.approx(factors)
    assert bits_per_weight(level_factors(name)) == bits


def test_unknown_level_set_lists_the_valid_ones():
    with pytest.raises(ValueError, match="binary, ternary, shift1, shift2, intN"):
        level_factors("quaternary")
    with pytest.raises(ValueError):
        level_factors("int1")


def test_scale_rules_by_hand():
    w = torch.tensor([[-2.0, 1.0], [0.5, 0.5]])
    assert layer_levels(w, level_factors("ternary")).tolist() == [-1.0, 0.0, 1.0]  # mean_abs
    assert layer_levels(w, level_factors("ternary"), "max_abs").tolist() == [-2.0, 0.0, 2.0]
    # ternary {-a, 0, a} on w = [-1, -0.5, 0.1, 0.5, 1]: 0.1 rounds to 0 for a > 0.2, the others
    # to +-a for a <= 1, so the error is 2 (0.5 - a)^2 + 2 (1 - a)^2 + 0.01: least at a = 0.75
    w = torch.tensor([-1.0, -0.5, 0.1, 0.5, 1.0], dtype=torch.float64)
    assert float(layer_scale(w, level_factors("ternary"), "mse")) == pytest.approx(0.75)


def test_binary_mean_abs_is_its_least_squares_scale_and_mse_finds_it():
    w = torch.randn(4000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def error(a):
        return float((w - a * torch.sign(w)).square().sum())

    a = float(layer_scale(w, (-1.0, 1.0), "mean_abs"))
    assert error(a) < min(error(a * 0.99), error(a * 1.01))
    step = float(w.abs().max()) / MSE_GRID  # the mse rule's grid spacing
    assert float(layer_scale(w, (-1.0, 1.0), "mse")) == pytest.approx(a, abs=step)


@pytest.mark.parametrize("name", ["ternary", "shift2", "int4", "int8"])
def test_mse_scale_rounds_with_less_error_than_the_other_rules(name):
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
    factors = level_factors(name)

    def error(rule):
        return float((w - quantize(w, layer_levels(w, factors, rule))).square().sum())

    assert error("mse") <= min(error("mean_abs"), error("max_abs"))
    assert error("mse") < 0.8 * error("mean_abs")  # mean|W| clips the multi-level sets


def test_default_scale_rule_per_level_set_and_unknown_rule():
    assert [default_scale(level_factors(n)) for n in ("binary", "ternary", "shift2", "int4")] == [
        "mean_abs", "mean_abs", "mse", "mse"]
    with pytest.raises(ValueError, match="valid choices: mean_abs, max_abs, mse"):
        layer_scale(torch.ones(3), (-1.0, 1.0), "mean")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_quantizer_returns_the_nearest_level_and_ties_go_up(name):
    levels = torch.tensor(EXPECTED[name][0], dtype=torch.float64) * 0.3
    mids = medians(levels)
    assert mids.tolist() == pytest.approx(((levels[1:] + levels[:-1]) / 2).tolist())
    # brute force nearest level on a dense grid (excluding exact medians)
    w = torch.linspace(-0.5, 0.5, 2001, dtype=torch.float64)
    w = w[(w[:, None] - mids[None]).abs().min(1).values > 1e-9]
    brute = levels[(w[:, None] - levels[None]).abs().argmin(1)]
    assert torch.equal(quantize(w, levels), brute)
    # the formula of docs/algorithm.md section 3: q_1 + sum_i (q_{i+1} - q_i) [w >= m_i]
    formula = levels[0] + ((w[:, None] >= mids[None]) * (levels[1:] - levels[:-1])).sum(1)
    assert torch.allclose(quantize(w, levels), formula)
    # exact medians round up
    assert torch.equal(level_index(mids, levels), torch.arange(1, len(levels)))
    # outputs are exactly level values
    assert set(quantize(w, levels).tolist()) <= set(levels.tolist())


def test_level_quantizer_is_straight_through():
    quantizer = LevelQuantizer(torch.tensor([-0.5, 0.0, 0.5]))
    w = torch.tensor([-0.9, -0.2, 0.1, 0.3], requires_grad=True)
    out = quantizer(w)
    assert out.tolist() == [-0.5, 0.0, 0.0, 0.5]
    (out * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert w.grad.tolist() == [1.0, 2.0, 3.0, 4.0]
