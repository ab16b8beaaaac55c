"""Surrogate-gradient backbone: PLIF neurons, SEW-ResNets, CBP on it."""

import math

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cbpqsnn.methods.sg import SGClassifier
from cbpqsnn.nets.sew import SEWBlock
from cbpqsnn.neurons import ATan, ParametricLIF
from cbpqsnn.quant.callback import CBPCallback
from tests.conftest import compose


def test_plif_charge_fire_reset_match_hand_computation():
    # tau0 = 2 -> k = 1/2; H = V + (X - V)/2; fire at H >= 1; hard reset to 0
    plif = ParametricLIF(tau0=2.0)
    assert plif.w.item() == 0.0 and plif.tau.item() == 2.0
    x = torch.tensor([1.5, 0.8, 1.4, 0.2, 2.0]).view(5, 1)
    # H: 0.75, 0.775, 1.0875 (spike, V -> 0), 0.1, 1.05 (spike)
    assert plif(x).view(-1).tolist() == [0.0, 0.0, 1.0, 0.0, 1.0]
    assert ParametricLIF(tau0=2.0)(torch.tensor([[2.0]])).item() == 1.0  # H = 1 = V_th fires


def reference_plif_grads(x, c, k, alpha=2.0):
    """Loop-by-loop backward of PLIF with a detached reset (independent of the module)."""
    T = len(x)
    H, S, V = [0.0] * T, [0.0] * T, [0.0] * T
    v = 0.0
    for t in range(T):
        H[t] = v + k * (x[t] - v)
        S[t] = float(H[t] >= 1.0)
        V[t] = H[t] * (1 - S[t])
        v = V[t]
    sg = [(alpha / 2) / (1 + (math.pi / 2 * alpha * (h - 1.0)) ** 2) for h in H]
    dx, dk, dV_next = [0.0] * T, 0.0, 0.0
    for t in reversed(range(T)):
        dH = c[t] * sg[t] + dV_next * (1 - S[t])  # dV/dH = 1 - S (reset spike detached)
        dx[t] = dH * k
        v_prev = V[t - 1] if t > 0 else 0.0
        dk += dH * (x[t] - v_prev)
        dV_next = dH * (1 - k)  # dH[t]/dV[t-1]
    return dx, dk * k * (1 - k)  # dk/dw = k (1 - k)


@pytest.mark.parametrize("tau0", [2.0, 3.0])
def test_plif_backward_matches_a_loop_reference(tau0):
    x = torch.tensor([1.5, 0.8, 1.4, 0.2, 0.9, 1.3], dtype=torch.float64)
    c = [1.0, -2.0, 0.5, 3.0, 1.0, -1.0]
    plif = ParametricLIF(tau0=tau0, surrogate=ATan(2.0)).double()
    xt = x.clone().view(-1, 1).requires_grad_(True)
    (plif(xt).view(-1) * torch.tensor(c, dtype=torch.float64)).sum().backward()
    k = torch.sigmoid(plif.w).item()  # = 1/tau0 up to the float32 init of w
    assert k == pytest.approx(1 / tau0, rel=1e-6)
    dx, dw = reference_plif_grads(x.tolist(), c, k)
    assert xt.grad.view(-1).tolist() == pytest.approx(dx, rel=1e-10)
    assert plif.w.grad.item() == pytest.approx(dw, rel=1e-10)


def test_plain_lif_has_a_fixed_time_constant():
    lif = ParametricLIF(tau0=2.0, learnable=False)
    assert not any(True for _ in lif.parameters()) and lif.tau.item() == 2.0
    with pytest.raises(ValueError, match="tau0 must be > 1"):
        ParametricLIF(tau0=1.0)


def test_sew_block_adds_its_input():
    block = SEWBlock(4, lambda: ParametricLIF(), batch_norm=False)
    for conv in (block.conv1[0], block.conv2[0]):
        nn.init.zeros_(conv.weight)  # branch never fires -> output equals the input spikes
    x = (torch.rand(3, 2, 4, 5, 5) > 0.5).float()
    assert torch.equal(block(x), x)


def row_module(row: str) -> SGClassifier:
    """The row's network (its model config) for 128x128 event frames."""
    cfg = compose([f"experiment={row}"])
    return SGClassifier(model=OmegaConf.to_container(cfg.model, resolve=True),
                        in_shape=(2, 128, 128), num_classes=10, T=2)


def sew_blocks(module: SGClassifier) -> list[SEWBlock]:
    return [m for m in module.net.modules() if isinstance(m, SEWBlock)]


def test_zero_init_residual_makes_every_sew_block_the_identity_at_init():
    torch.manual_seed(0)
    blocks = sew_blocks(row_module("sg_dvs128_gesture"))  # the published run: zero_init_residual
    assert len(blocks) == 7
    for block in blocks:
        assert torch.count_nonzero(block.conv2[1].weight) == 0  # last BN before sn2
        assert torch.count_nonzero(block.conv1[1].weight - 1) == 0  # first BN untouched
        x = (torch.rand(3, 2, 32, 8, 8) > 0.5).float()  # spikes [T, B, C, H, W]
        for train in (True, False):  # batch statistics and running statistics alike
            block.train(train)
            assert torch.equal(block(x), x)  # sn2 gets 0 and a PLIF never fires: out = x


def test_sew_blocks_keep_pytorch_bn_init_unless_asked():
    blocks = sew_blocks(row_module("sg_cifar10dvs"))  # no zero-init published
    assert blocks and all(torch.all(b.conv2[1].weight == 1) for b in blocks)
    with pytest.raises(ValueError, match="needs SEW blocks"):
        SGClassifier(model={"spec": ["C4"], "zero_init_residual": True}, in_shape=(1, 4, 4),
                     num_classes=2, T=2)


def sg_module(spec, in_shape, classes, T=2, **kwargs):
    return SGClassifier(model={"spec": spec, "bias": False, "batch_norm": True},
                        in_shape=in_shape, num_classes=classes, T=T, **kwargs)


def test_7bnet_parameter_count_for_dvs_gesture_frames():
    cfg = compose(["method=sg", "model=7bnet"])
    net = sg_module(list(cfg.model.spec), (2, 128, 128), 11).net
    first = 2 * 32 * 9 + 2 * 32 + 1  # conv (no bias) + BN + PLIF w
    block = 2 * (32 * 32 * 9 + 2 * 32 + 1)
    fc = 32 * 1 * 1 * 11 + 11  # 128 px / 2^7 = 1 px
    assert sum(p.numel() for p in net.parameters()) == first + 7 * block + fc == 130938


def test_wide_7bnet_parameter_count_for_cifar10dvs_frames():
    cfg = compose(["method=sg", "model=wide_7bnet"])
    net = sg_module(list(cfg.model.spec), (2, 128, 128), 10).net
    conv_bn_plif = lambda cin, cout: cin * cout * 9 + 2 * cout + 1  # noqa: E731
    expected = (conv_bn_plif(2, 64) + 4 * 2 * conv_bn_plif(64, 64) + conv_bn_plif(64, 128)
                + 3 * 2 * conv_bn_plif(128, 128) + 128 * 10 + 10)
    assert sum(p.numel() for p in net.parameters()) == expected == 1258778
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16


@pytest.mark.parametrize(("model", "classes"), [("7bnet", 11), ("wide_7bnet", 10)])
def test_forward_backward_on_fabricated_event_frames(model, classes):
    cfg = compose(["method=sg", f"model={model}"])
    module = sg_module(list(cfg.model.spec), (2, 128, 128), classes, T=3, train_time_steps=2)
    frames = torch.poisson(torch.full((2, 3, 2, 128, 128), 0.3))  # batch-first [B, T, 2, H, W]
    loss = module.training_step((frames, torch.tensor([0, classes - 1])), 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in module.parameters())
    assert module(frames).shape == (2, classes)


def test_training_uses_an_ordered_random_subset_of_frames():
    module = sg_module(["C4"], (1, 4, 4), 2, T=8, train_time_steps=5)
    x = torch.arange(8.0).view(1, 8, 1, 1, 1).expand(3, 8, 1, 4, 4)  # frame t holds value t
    picked = module.time_first(x, training=True)[:, 0, 0, 0, 0].tolist()
    assert len(picked) == 5 and picked == sorted(picked) and len(set(picked)) == 5
    assert module.time_first(x, training=False).shape[0] == 8  # evaluation uses every frame


def test_cbp_keeps_time_constants_and_bn_fp32_and_training():
    torch.manual_seed(0)
    module = sg_module(["C8", "SEW8", "M2", "C8", "M2"], (1, 8, 8), 3, T=2)
    module.set_optimization(lambda params: torch.optim.SGD(params, lr=0.5))
    data = TensorDataset(torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,)))
    taus = {n: p.detach().clone() for n, p in module.named_parameters() if n.endswith(".w")}
    bn = {n: p.detach().clone() for n, p in module.named_parameters() if "weight" in n and p.dim() == 1}
    cbp = CBPCallback(levels="binary", multiplier_lr=0.01)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[cbp])
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=8))
    # quantized: the SEW convs and the second conv; FP32: first conv, classifier, BN, PLIF w
    assert cbp.layer_names == ["net.layers.3.conv1.0", "net.layers.3.conv2.0", "net.layers.5"]
    assert cbp.history["cfs"][-1] < cbp.cfs_start  # the constraint pulled the latents in
    params = dict(module.named_parameters())
    assert taus and all(not torch.equal(params[n], v) for n, v in taus.items())
    assert bn and any(not torch.equal(params[n], v) for n, v in bn.items())
    assert all(params[n].dtype == torch.float32 for n in taus)
    levels = set(torch.cat([module.net.layers[5].weight.unique()]).tolist())
    assert len(levels) == 2


def test_sg_config_picks_its_own_network_and_surrogates_by_name():
    cfg = compose(["method=sg"])
    assert cfg.model.name == "sew_mnist" and cfg.method.module.surrogate == "atan"
    assert compose(["method=sg", "model=7bnet"]).model.name == "7bnet"
    with pytest.raises(ValueError, match="valid choices"):
        sg_module(["C4"], (1, 4, 4), 2, surrogate="triangle")


def test_hardware_metrics_of_a_run_count_event_batches_per_sample_over_T():
    # event batches arrive batch-first [B, T, ...]; the run's metrics must see T steps of B inputs
    from cbpqsnn.pipeline import _hardware

    cfg = compose(["method=sg", "hardware.samples=5"])
    module = sg_module(["C4"], (2, 6, 6), 3, T=4)

    class Events:
        def setup(self, stage):
            pass

        def test_dataloader(self):
            frames = (torch.rand(3, 4, 2, 6, 6) < 0.5).float()
            return [(frames, torch.zeros(3)), (frames, torch.zeros(3))]

    metrics = _hardware(cfg, module, Events(), None)
    assert (metrics["samples"], metrics["T"]) == (5, 4)
