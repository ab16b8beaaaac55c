"""TSSL-BP backbone: neuron forward, the custom backward (loop reference, finite differences of the
spike-timing model it differentiates, silent-neuron fallback), target trace and kernel loss,
time-shared dropout, networks, config."""

import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from cbpqsnn.methods.tsslbp import TSSLClassifier, desired_spikes, target_trace
from cbpqsnn.nets.tssl_layers import PSPInput, ScaledSumPool, TimeSharedDropout
from cbpqsnn.neurons import TSSLConstants, TSSLFunction, TSSLNeuron
from cbpqsnn.quant.selection import select_layers
from tests.conftest import compose

C = TSSLConstants(tau_m=5.0, tau_s=3.0, v_threshold=1.0)


# --------------------------------------------------------------------------- independent references


def reference_forward(current, c=C):
    """One neuron, scalar loop: membranes u, increments du, spikes s, traces a (lists over t)."""
    mem, syn = 0.0, 0.0
    u, du, s, a = [], [], [], []
    for i_t in current:
        update = -mem / c.tau_m + i_t
        mem = mem + update
        out = 1.0 if mem > c.v_threshold else 0.0
        u.append(mem)
        du.append(update)
        s.append(out)
        mem = mem * (1 - out)
        syn = syn + (out - syn) / c.tau_s
        a.append(syn)
    return u, du, s, a


def reference_backward(current, grad_out, c=C):
    """One neuron, written after the TSSL-BP reference code's structure: explicit kernel sums,
    ``theta`` carrying the next spike's gradient, fallback replacing the value afterwards.
    ``partial_u`` is masked by the spike (``* out``) unless ``c.rising_timing`` (later master)."""
    T = len(current)
    u, du, s, a = reference_forward(current, c)
    eps = [(1 / c.tau_s) * (1 - 1 / c.tau_s) ** k for k in range(T)]
    theta_m = 1 / c.tau_m
    grad, theta = [0.0] * T, 0.0
    for t in reversed(range(T)):
        timed = s[t] or c.rising_timing
        partial_u = -min(1 / du[t], c.max_inverse_slope) if (timed and du[t] > 0) else 0.0
        kernel_sum = sum(eps[k] * grad_out[t + k] for k in range(T - t))
        total = -partial_u * kernel_sum
        if t != T - 1:
            total += theta * u[t] * (-1) * theta_m * partial_u
            total += theta * (1 - theta_m) * (1 - s[t])
        theta = total * s[t] + theta * (1 - s[t]) * (1 - theta_m)
        if a[t] < c.silent_trace / c.tau_s:
            x = max(-c.fallback_clamp, min(c.fallback_clamp, (c.v_threshold - u[t]) / c.fallback_scale))
            total = math.exp(x) / ((1 + math.exp(x)) ** 2 * c.fallback_scale) * kernel_sum
        grad[t] = total
    return grad


def tssl_grad(current, grad_out, c=C):
    x = current.clone().requires_grad_(True)
    trace = TSSLFunction.apply(x, c)
    trace.backward(grad_out)
    return trace.detach(), x.grad


def random_currents(T=8, shape=(4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.7 + 0.8 * torch.randn(T, *shape, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- forward


def test_neuron_forward_leaks_fires_resets_to_zero_and_outputs_the_psp_trace():
    # tau_m 5, tau_s 3: u = 0.8 u_r + I; spikes at t = 0, 2, 3; a = (2/3) a + s / 3
    current = torch.tensor([1.5, 0.2, 0.9, 1.2, 0.1], dtype=torch.float64).view(-1, 1)
    trace = TSSLFunction.apply(current, C).view(-1)
    s = [1, 0, 1, 1, 0]
    a, expected = 0.0, []
    for s_t in s:
        a = 2 / 3 * a + s_t / 3
        expected.append(a)
    assert trace.tolist() == pytest.approx(expected, abs=1e-15)
    assert reference_forward([1.5, 0.2, 0.9, 1.2, 0.1])[2] == s  # u = 1.5, 0.2, 1.06, 1.2, 0.1


def test_custom_and_surrogate_neurons_share_the_forward():
    x = random_currents(shape=(3, 7), seed=1).float()
    custom, surrogate = TSSLNeuron(C, custom_backward=True), TSSLNeuron(C, custom_backward=False)
    torch.testing.assert_close(custom(x), surrogate(x), rtol=0, atol=1e-6)


def test_psp_input_filters_a_static_image_and_pool_is_a_scaled_sum():
    x = torch.full((4, 1, 2), 3.0)
    assert PSPInput(3.0)(x)[:, 0, 0].tolist() == pytest.approx([1, 5 / 3, 19 / 9, 65 / 27])
    pooled = ScaledSumPool(2, 1.1)(torch.arange(16.0).view(1, 1, 4, 4))
    assert pooled.view(-1).tolist() == pytest.approx([1.1 * 10, 1.1 * 18, 1.1 * 42, 1.1 * 50])


# --------------------------------------------------------------------------- backward


@pytest.mark.parametrize("rising", [False, True], ids=["spike_steps", "rising_timing"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backward_matches_the_loop_reference_exactly(seed, rising):
    c = TSSLConstants(tau_m=5.0, tau_s=3.0, v_threshold=1.0, rising_timing=rising)
    current = random_currents(seed=seed)
    grad_out = torch.randn(current.shape, generator=torch.Generator().manual_seed(10 + seed),
                           dtype=torch.float64)
    _, grad = tssl_grad(current, grad_out, c)
    flat_i, flat_g = current.reshape(current.shape[0], -1), grad_out.reshape(current.shape[0], -1)
    expected = torch.tensor([reference_backward(flat_i[:, n].tolist(), flat_g[:, n].tolist(), c)
                             for n in range(flat_i.shape[1])], dtype=torch.float64).T
    torch.testing.assert_close(grad.reshape(expected.shape), expected, rtol=1e-12, atol=1e-13)
    # every branch is exercised: spikes, repeated spikes, silent and non-silent quiet steps
    s = torch.tensor([reference_forward(flat_i[:, n].tolist())[2] for n in range(flat_i.shape[1])])
    a = torch.tensor([reference_forward(flat_i[:, n].tolist())[3] for n in range(flat_i.shape[1])])
    silent = a < 1 / 12
    assert s.sum() > 5 and (s.sum(1) >= 2).any() and silent.any() and ((s == 0) & ~silent).any()
    if rising:  # the quiet, non-silent, rising steps are there, and change the gradient
        assert not torch.allclose(grad, tssl_grad(current, grad_out)[1])


def timing_model(current, base, c=C):
    """The spike-timing model TSSL-BP differentiates, for a frozen spike pattern ``s`` (affine in
    the current): a spike at step t moves earlier by ``(u[t] - u0[t]) * min(1/du0[t], 8)`` steps,
    which adds that fraction of its PSP kernel to the trace; the reset moves with it and shifts the
    next membrane value by ``theta_m * u0[t]`` per step; between spikes the membrane leaks.
    At ``current = base current`` it is exactly the neuron's trace."""
    u0, du0, s = base
    theta_m, theta_s = 1 / c.tau_m, 1 / c.tau_s
    u_r = torch.zeros_like(current[0])
    a = torch.zeros_like(current[0])
    traces = []
    for t in range(current.shape[0]):
        u = (1 - theta_m) * u_r + current[t]
        slope = torch.where(s[t] > 0, (1 / du0[t]).clamp(max=c.max_inverse_slope), 0)
        shift = s[t] * (u - u0[t]) * slope
        u_r = (1 - s[t]) * u + s[t] * theta_m * u0[t] * shift / (1 - theta_m)
        a = (1 - theta_s) * a + theta_s * s[t] * (1 + shift)
        traces.append(a)
    return torch.stack(traces)


def test_backward_agrees_with_finite_differences_where_the_spike_pattern_is_stable():
    """The discrete loss is flat while no spike appears or vanishes, so the finite differences are
    those of the spike-timing model (equal to the network at the base point, same spike pattern)
    along every input current that is not silent (silent steps take the fallback, tested below)."""
    current = random_currents(T=8, shape=(6,), seed=3)
    ref = [reference_forward(current[:, n].tolist()) for n in range(current.shape[1])]
    u0, du0, s, a0 = (torch.tensor([r[i] for r in ref], dtype=torch.float64).T for i in range(4))
    target = torch.rand(current.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def loss(trace):
        return 0.5 * (trace - target).square().sum()

    trace, grad = tssl_grad(current, (a0 - target))
    assert torch.allclose(trace, a0) and torch.allclose(timing_model(current, (u0, du0, s)), a0)
    h = 1e-6
    checked = 0
    for t, n in zip(*torch.nonzero(a0 >= 1 / 12, as_tuple=True), strict=True):
        v = torch.zeros_like(current)
        v[t, n] = h
        for sign in (1, -1):  # the network's spike pattern (and so its loss) does not change
            assert torch.equal(TSSLFunction.apply(current + sign * v, C), trace)
        fd = (loss(timing_model(current + v, (u0, du0, s)))
              - loss(timing_model(current - v, (u0, du0, s)))) / (2 * h)
        assert float(grad[t, n]) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)
        checked += 1
    assert checked >= 20 and (grad[a0 >= 1 / 12] != 0).sum() >= 10


def test_silent_neurons_take_the_sigmoid_fallback():
    # neuron 0 never fires (u -> 0.5); neuron 1 fires once at t = 0 (du = 1.5) and then goes quiet:
    # a = 1/3, 2/9, 4/27, 8/81 (>= 1/12: no fallback) then 16/243, 32/729 (< 1/12: fallback);
    # neuron 2 is far below threshold: the exponent (1 + 3) / 0.2 = 20 is clamped to 8
    current = torch.tensor([[0.1, 1.5, -3.0]] + [[0.1, 0.0, -3.0]] * 5, dtype=torch.float64)
    g = torch.tensor([[1.0, -2.0, 0.5], [2.0, 1.0, 1.0], [-1.0, 3.0, 1.0], [0.5, 1.0, 1.0],
                      [1.0, 2.0, 1.0], [3.0, -1.0, 1.0]], dtype=torch.float64)
    _, grad = tssl_grad(current, g)
    eps = [(1 / 3) * (2 / 3) ** k for k in range(6)]
    E = [[sum(eps[k] * g[t + k, n].item() for k in range(6 - t)) for n in range(3)] for t in range(6)]

    def sigmoid_grad(u, clamp=8.0):
        x = max(-clamp, min(clamp, (1.0 - u) / 0.2))
        return math.exp(x) / (0.2 * (1 + math.exp(x)) ** 2)

    u = 0.0
    for t in range(6):  # neuron 0: silent at every step
        u = 0.8 * u + 0.1
        assert grad[t, 0].item() == pytest.approx(sigmoid_grad(u) * E[t][0], rel=1e-12)
    assert grad[:, 1].tolist() == pytest.approx(
        [E[0][1] / 1.5, 0.0, 0.0, 0.0, sigmoid_grad(0.0) * E[4][1], sigmoid_grad(0.0) * E[5][1]],
        rel=1e-12)
    assert grad[0, 2].item() == pytest.approx(math.exp(8) / (0.2 * (1 + math.exp(8)) ** 2) * E[0][2])


def test_inverse_slope_is_capped_at_eight():
    # u0 = 0.9, u1 = 0.72 + 0.3 = 1.02: spike with du = 0.12 -> 1/du = 8.33 capped to 8
    current = torch.tensor([0.9, 0.3], dtype=torch.float64).view(2, 1)
    _, grad = tssl_grad(current, torch.tensor([[0.0], [1.0]], dtype=torch.float64))
    assert grad[1, 0].item() == pytest.approx(8 * (1 / 3))


# --------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("shape", [(6, 4, 3, 5, 7), (6, 4, 50)])
def test_dropout_keeps_one_mask_over_time_and_only_in_training(shape):
    torch.manual_seed(0)
    drop = TimeSharedDropout(0.5).train()
    x = torch.ones(shape)
    y = drop(x)
    zero = y == 0
    assert zero.any() and (~zero).any()
    assert torch.equal(zero, zero[:1].expand_as(zero))  # zero at the same positions at every step
    assert torch.equal(y[~zero], torch.full_like(y[~zero], 2.0))  # kept values scaled by 1/(1-p)
    if len(shape) == 5:  # a feature map drops whole rows: one mask per (sample, channel, row)
        assert torch.equal(zero, zero[..., :1].expand_as(zero))
        assert zero[0, ..., 0].float().mean().item() == pytest.approx(0.5, abs=0.2)
    assert not torch.equal(drop(x), y)  # a new mask at the next forward pass
    assert torch.equal(drop.eval()(x), x)  # identity in eval
    with pytest.raises(ValueError, match="dropout probability"):
        TimeSharedDropout(1.0)


def test_dropout_in_the_tssl_net_masks_every_step_alike_in_training_and_not_in_eval():
    module = TSSLClassifier(model={"spec": ["FC64", "D"], "dropout": 0.5}, in_shape=(1, 4, 4),
                            num_classes=2, T=4)
    (drop,) = [m for m in module.net.layers if isinstance(m, TimeSharedDropout)]
    assert drop.p == 0.5
    probe = []
    drop.register_forward_hook(lambda m, i, o: probe.append((i[0], o)))
    x = torch.rand(8, 1, 4, 4) * 4
    module.train()
    module.net(x)
    module.eval()
    module.net(x)
    (x_train, y_train), (x_eval, y_eval) = probe  # traces [T, B, 64] into and out of the dropout
    dropped, kept = (y_train == 0).all(0), (y_train == 2 * x_train).all(0)
    assert (dropped | kept).all()  # each neuron of each sample: dropped at all steps or at none
    assert (dropped & (x_train != 0).any(0)).any() and (kept & (x_train != 0).any(0)).any()
    assert torch.equal(y_eval, x_eval)


# --------------------------------------------------------------------------- loss, readout, nets


def tssl_module(spec, in_shape=(1, 8, 8), classes=3, T=5, **kwargs):
    return TSSLClassifier(model={"spec": spec, "conv_weight_scale": 5.0}, in_shape=in_shape,
                          num_classes=classes, T=T, **kwargs)


def test_desired_spike_train_follows_the_reference_rule():
    assert desired_spikes(5).tolist() == [0, 1, 1, 1, 1]
    assert desired_spikes(7).tolist() == [0, 1, 1, 1, 1, 0, 1]
    assert desired_spikes(10).tolist() == [0, 1] * 5
    assert desired_spikes(3, [1, 0]).tolist() == [1, 0, 1]


def psp_by_hand(x, tau_s):
    """``a[t] = (1 - 1/tau_s) a[t-1] + x[t] / tau_s`` in exact fractions."""
    a, out = Fraction(0), []
    for x_t in x:
        a = (1 - Fraction(1) / tau_s) * a + Fraction(x_t) / tau_s
        out.append(a)
    return out


def test_target_trace_is_the_desired_train_filtered_twice_as_in_the_authors_code():
    once = psp_by_hand([0, 1, 1, 1, 1], 3)
    twice = psp_by_hand(once, 3)
    assert once == [0, Fraction(1, 3), Fraction(5, 9), Fraction(19, 27), Fraction(65, 81)]
    assert twice == [0, Fraction(1, 9), Fraction(7, 27), Fraction(33, 81), Fraction(131, 243)]
    expected = [float(v) for v in twice]  # 0, 0.111, 0.259259, 0.407407, 0.539095
    assert target_trace(5, 3.0).tolist() == pytest.approx(expected, abs=1e-7)
    assert target_trace(5, 3.0, double_filtered=False).tolist() == pytest.approx(
        [float(v) for v in once], abs=1e-7)
    # the loss uses it by default; the single-filtered variant only when asked for
    out = torch.zeros(5, 1, 2)
    for double, trace in ((True, twice), (False, once)):
        module = tssl_module(["FC4"], classes=2, double_filtered_target=double)
        assert module.hparams["double_filtered_target"] is double
        assert module.loss(out, torch.tensor([1])).item() == pytest.approx(
            0.5 * sum(float(v) ** 2 for v in trace), rel=1e-6)
    assert tssl_module(["FC4"], classes=2).hparams.double_filtered_target is True


def test_kernel_loss_and_readout_match_hand_computation():
    module = tssl_module(["FC4"], classes=2)
    # target trace of [0,1,1,1,1], tau_s = 3, filtered twice: 0, 1/9, 7/27, 33/81, 131/243
    target = psp_by_hand(psp_by_hand([0, 1, 1, 1, 1], 3), 3)
    out = torch.tensor([[[0.0, 0.5]], [[0.2, 0.5]], [[0.0, 0.5]], [[0.1, 0.5]], [[0.0, 0.5]]])
    o = [[Fraction(v).limit_denominator(10) for v in row[0]] for row in out.tolist()]
    expected = Fraction(1, 2) * sum((o[t][0] - 0) ** 2 + (o[t][1] - target[t]) ** 2 for t in range(5))
    assert module.loss(out, torch.tensor([1])).item() == pytest.approx(float(expected), rel=1e-6)
    batch = torch.cat([out, out.flip(-1)], dim=1)  # second sample: label 0, same errors
    assert module.loss(batch, torch.tensor([1, 0])).item() == pytest.approx(2 * float(expected), rel=1e-6)
    assert module.readout(batch).argmax(1).tolist() == [1, 0]


def test_count_loss_is_one_sided_and_its_gradient_is_delta_at_every_step_as_the_reference():
    module = tssl_module(["FC4"], classes=3, loss="count")  # desired 5, undesired 1
    # summed traces per class: 0.3, 2.5, 1.5 with label 1
    out = torch.zeros(5, 1, 3)
    out[:, 0, 0] = torch.tensor([0.0, 0.2, 0.0, 0.1, 0.0])
    out[:, 0, 1] = 0.5
    out[:, 0, 2] = 0.3
    out.requires_grad_(True)
    # label: (2.5 - 5) / 5 = -0.5 (below its count: kept); class 0: (0.3 - 1) / 5 < 0 (below: 0);
    # class 2: (1.5 - 1) / 5 = 0.1 (above its count: kept)
    loss = module.loss(out, torch.tensor([1]))
    assert loss.item() == pytest.approx(0.5 * 5 * (0.5 ** 2 + 0.1 ** 2), rel=1e-6)
    loss.backward()
    # loss_count's backward passes delta itself to the output at every step
    assert out.grad[:, 0].tolist() == [pytest.approx([0.0, -0.5, 0.1], abs=1e-7)] * 5
    # the label neuron above its count and the others below theirs cost nothing
    quiet = torch.zeros(5, 1, 3)
    quiet[:, 0, 1] = 1.2  # summed 6 > 5
    assert module.loss(quiet, torch.tensor([1])).item() == 0.0


def test_softmax_loss_is_cross_entropy_of_the_summed_traces():
    module = tssl_module(["FC4"], classes=2, loss="softmax")
    out = torch.tensor([[[0.0, 0.5]], [[0.2, 0.5]], [[0.0, 0.5]], [[0.1, 0.5]], [[0.0, 0.5]]])
    scores = [0.3, 2.5]
    expected = -(scores[1] - math.log(math.exp(scores[0]) + math.exp(scores[1])))
    assert module.loss(out, torch.tensor([1])).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="unknown loss 'mse'.*kernel.*count.*softmax"):
        tssl_module(["FC4"], classes=2, loss="mse")


def test_weights_are_clamped_after_every_optimizer_step():
    module = tssl_module(["C4", "P2", "FC8"])
    opt = torch.optim.SGD(module.parameters(), lr=100.0)
    for p in module.parameters():
        p.grad = torch.randn_like(p)
    module.optimizer_step(0, 0, opt)
    assert max(p.abs().max().item() for p in module.parameters()) == 4.0


def test_cifar10_network_forward_backward_on_a_random_batch():
    cfg = compose(["method=tsslbp", "model=tssl_cifar10"])
    torch.manual_seed(0)
    module = TSSLClassifier(model=dict(cfg.model), in_shape=(3, 32, 32), num_classes=10, T=5)
    convs = [(3, 96), (96, 256), (256, 384), (384, 384), (384, 256)]
    expected = sum(a * b * 9 for a, b in convs) + 256 * 8 * 8 * 1024 + 1024 * 1024 + 1024 * 10
    assert sum(p.numel() for p in module.parameters()) == expected
    assert sum(isinstance(m, TSSLNeuron) for m in module.modules()) == 8
    assert sum(isinstance(m, ScaledSumPool) for m in module.modules()) == 2
    assert sum(isinstance(m, TimeSharedDropout) and m.p == 0.2 for m in module.modules()) == 7
    assert not any(isinstance(m, nn.Dropout) for m in module.modules())
    out = module.net(torch.randn(2, 3, 32, 32))
    assert out.shape == (5, 2, 10)
    loss = module.loss(out, torch.tensor([3, 7]))
    loss.backward()
    assert torch.isfinite(loss) and module(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    grads = [p.grad for p in module.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert grads[0].abs().sum() > 0  # the gradient reaches the first layer (through silent layers too)
    # CBP quantizes every conv/FC except the first and the last
    assert len(select_layers(module)) == 6


def test_config_selects_the_tssl_net_and_the_published_cbp_setting():
    cfg = compose(["method=tsslbp"])
    assert cfg.model.name == "tssl_mnist" and cfg.method.module.T == 5
    assert compose(["method=tsslbp", "model=tssl_cifar10"]).model.name == "tssl_cifar10"
    pretrain = cfg.method.pretrain
    assert pretrain.gradient_clip_algorithm == "norm" and pretrain.gradient_clip_val == 1
    cb = cfg.method.cbp.callback
    assert cb.train_only_quantized and cb.lr_drop_at_g is None
    assert cfg.method.cbp.gradient_clip_algorithm == "norm"
    with pytest.raises(ValueError, match="valid choices"):
        tssl_module(["FC4"], backward="exact")
    neurons = {b: [m for m in tssl_module(["FC4"], backward=b).modules() if isinstance(m, TSSLNeuron)]
               for b in ("tssl", "tssl_rising", "surrogate")}
    kinds = {b: [(n.custom_backward, n.constants.rising_timing) for n in ns] for b, ns in neurons.items()}
    assert kinds["tssl_rising"] == [(True, True)] * 2 and kinds["tssl"] == [(True, False)] * 2
    assert not any(n.custom_backward for n in neurons["surrogate"])


def test_tiny_pipeline_run_quantizes_the_middle_layers_and_keeps_first_and_last_frozen(tiny_cfg, tmp_path):
    from cbpqsnn.pipeline import run

    cfg = tiny_cfg("method=tsslbp", "method.cbp.callback.p_max=1")
    summary = run(cfg, tmp_path)
    assert summary["model"] == "tssl_mnist" and summary["history"]["cfs"][-1] < summary["cfs_start"]
    assert summary["quantized_layers"] == ["net.layers.4", "net.layers.8"]  # conv 2, FC
    fp32 = torch.load(tmp_path / "checkpoints/fp32.ckpt", weights_only=False)["state_dict"]
    baked = torch.load(tmp_path / "quantized.pt")
    for first_or_last in ("net.layers.1.weight", "net.layers.10.weight"):  # frozen during CBP
        assert torch.equal(fp32[first_or_last], baked[first_or_last])
    assert max(w.abs().max().item() for w in fp32.values()) <= 4.0
