"""The baseline algorithms (ptq, ste, scaled_ste, lsq): equations by hand, and each one trained and
baked through the same callback as CBP."""

import math

import pytest
import torch

from cbpqsnn.quant.baselines import LSQQuantizer, ScaledQuantizer, check_algorithm
from cbpqsnn.quant.callback import CBPCallback
from cbpqsnn.quant.levels import level_factors
from cbpqsnn.quant.quantizer import quantize
from tests.quant.test_callback import MLP, fit, pretrained


def test_scaled_ste_binary_is_mean_abs_times_sign_of_the_current_weights():
    quantizer = ScaledQuantizer(level_factors("binary"))
    w = torch.tensor([0.5, -1.5, 0.25, -0.25], requires_grad=True)
    q = quantizer(w)
    assert q.tolist() == [0.625, -0.625, 0.625, -0.625]  # mean|w| = 2.5 / 4
    q.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert w.grad.tolist() == [1.0, 2.0, 3.0, 4.0]  # straight through
    assert quantizer(w.detach() * 2).tolist() == [1.25, -1.25, 1.25, -1.25]  # not frozen


def test_scaled_ste_ternary_is_twn():
    # mean|w| = 4.2 / 7 = 0.6, threshold 0.7 of it = 0.42 (0.6 of it would take 0.4 in, 0.8 would
    # leave -0.45 out); above it: 1.0, -2.0, -0.45, scale 3.45 / 3 = 1.15
    w = torch.tensor([0.1, -0.2, 1.0, -2.0, 0.05, 0.4, -0.45])
    a = 1.15
    assert ScaledQuantizer(level_factors("ternary"))(w).tolist() == pytest.approx([0, 0, a, -a, 0, 0, -a])
    assert ScaledQuantizer(level_factors("ternary")).current_levels(w).tolist() == pytest.approx([-a, 0, a])


def test_lsq_forward_and_gradients_are_esser_et_al():
    w0 = torch.tensor([0.3, -0.7, 2.0])
    quantizer = LSQQuantizer(w0, level_factors("ternary"))  # Qp = 1
    assert float(quantizer.step) == pytest.approx(2 * 1.0 / math.sqrt(1))  # 2 mean|w| / sqrt(Qp)
    with torch.no_grad():
        quantizer.step.fill_(0.5)
    w = w0.clone().requires_grad_(True)
    q = quantizer(w)  # v = w / s = [0.6, -1.4, 4.0] -> clamp [0.6, -1, 1] -> round [1, -1, 1]
    assert q.tolist() == [0.5, -0.5, 0.5]
    q.sum().backward()
    assert w.grad.tolist() == [1.0, 0.0, 0.0]  # straight through inside [-Qp, Qp] only
    # ds: round(v) - v inside (1 - 0.6), -Qp / +Qp outside; times 1 / sqrt(numel * Qp)
    expected = (0.4 - 1.0 + 1.0) / math.sqrt(3 * 1)
    assert float(quantizer.step.grad) == pytest.approx(expected, rel=1e-6)
    assert quantizer.current_levels(w).tolist() == [-0.5, 0.0, 0.5]


def test_lsq_int4_levels_are_step_times_integers():
    w = torch.randn(50, generator=torch.Generator().manual_seed(0))
    quantizer = LSQQuantizer(w, level_factors("int4"))
    assert quantizer.qp == 7
    assert set(quantizer(w).tolist()) <= set(quantizer.current_levels(w).tolist())


@pytest.mark.parametrize(("algorithm", "levels", "message"), [
    ("lsq", "binary", "lsq needs a uniform level set with a zero level"),
    ("lsq", "shift2", "lsq needs a uniform level set"),
    ("scaled_ste", "int4", "scaled_ste (BWN / TWN scales) is defined for binary and ternary"),
    ("magic", "binary", "valid choices: ['cbp', 'ptq', 'ste', 'scaled_ste', 'lsq']"),
])
def test_an_algorithm_the_level_set_cannot_use_is_refused(algorithm, levels, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        check_algorithm(algorithm, level_factors(levels))
    with pytest.raises(ValueError):
        CBPCallback(levels=levels, algorithm=algorithm)


def test_ptq_rounds_the_pretrained_weights_with_the_frozen_scale():
    module = pretrained()
    before = {n: module.net[i].weight.detach().clone() for n, i in (("net.2", 2), ("net.4", 4))}
    cbp = CBPCallback(levels="ternary", algorithm="ptq")
    cbp.quantize_post_training(module)
    assert cbp.cfs_start > 0
    result = cbp.result()
    for name, w in before.items():
        levels = w.abs().mean() * torch.tensor([-1.0, 0.0, 1.0])
        assert torch.equal(dict(module.named_modules())[name].weight.detach(), quantize(w, levels))
    assert result.cfs == 0.0 and result.history["epoch"] == []


@pytest.mark.parametrize(("algorithm", "levels"), [
    ("ste", "binary"), ("scaled_ste", "binary"), ("scaled_ste", "ternary"), ("lsq", "ternary"),
    ("lsq", "int4"),
])
def test_each_baseline_fine_tunes_and_bakes_onto_its_levels(tmp_path, algorithm, levels):
    module = pretrained()
    cbp = CBPCallback(levels=levels, algorithm=algorithm, bake_at_end=False)
    fit(module, [cbp], 2, tmp_path)
    assert not cbp.multipliers and cbp.schedule.g == 1  # no constraint, no window
    assert len(cbp.history["cfs"]) == 2
    if algorithm == "lsq":  # the step sizes trained, from LSQ's init
        start = pretrained()
        for name in cbp.layer_names:
            quantizer = cbp.modules[name].parametrizations.weight[0]
            init = 2 * start.get_submodule(name).weight.abs().mean() / math.sqrt(quantizer.qp)
            assert abs(float(quantizer.step) - float(init)) > 1e-4
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(3))
    before_bake = module(x).detach()
    levels_before = {n: cbp.levels(n).clone() for n in cbp.layer_names}
    result = cbp.result()
    assert torch.allclose(module(x), before_bake, atol=1e-6)  # the bake keeps the function
    for name in cbp.layer_names:
        values = set(cbp.modules[name].weight.detach().unique().tolist())
        assert values <= set(levels_before[name].tolist())
        assert torch.equal(result.levels[name], levels_before[name])
    assert result.levels_ok and result.cfs == 0.0


def test_inside_latent_weights_the_module_computes_with_the_latents(tmp_path):
    module = pretrained()
    cbp = CBPCallback(levels="binary", algorithm="ste", bake_at_end=False)
    fit(module, [cbp], 1, tmp_path)
    plain = MLP()
    x = torch.randn(16, 8)
    quantized = module(x)
    with cbp.latent_weights():
        latent = module(x)
        mine = dict(module.named_parameters())
        with torch.no_grad():
            for name, p in plain.named_parameters():
                layer = name.removesuffix(".weight")
                p.copy_(cbp.latent(layer) if layer in cbp.layer_names else mine[name])
    assert torch.equal(latent, plain(x))
    assert not torch.allclose(latent, quantized)
    assert torch.equal(module(x), quantized)  # the quantizers are back
    cbp.bake()
    with cbp.latent_weights():  # after the bake: the kept latents
        assert torch.equal(module(x), latent)
    assert torch.equal(module(x), quantized)
