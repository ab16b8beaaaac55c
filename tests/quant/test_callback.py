"""The CBP callback on a method-agnostic LightningModule (a plain MLP)."""

import copy
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cbpqsnn.data.sampling import EpochShuffleSampler
from cbpqsnn.quant.callback import CBPCallback
from cbpqsnn.quant.levels import layer_scale, level_factors
from cbpqsnn.quant.quantizer import constraint


class MLP(L.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                                 nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def loader(seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=16, sampler=EpochShuffleSampler(data, seed))


def pretrained() -> MLP:
    torch.manual_seed(0)
    return MLP()


def fit(module, callbacks, epochs, tmp_path, ckpt_path=None, clip=1.0):
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=callbacks, default_root_dir=str(tmp_path),
                        gradient_clip_val=clip, gradient_clip_algorithm="value",
                        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks))
    trainer.fit(module, train_dataloaders=loader(), ckpt_path=ckpt_path)
    return trainer


def test_attach_selects_hidden_layers_freezes_scales_and_quantizes_the_forward():
    module = pretrained()
    a = {n: module.net[i].weight.abs().mean().item() for n, i in (("net.2", 2), ("net.4", 4))}
    cbp = CBPCallback(levels="ternary")
    cbp.attach(module)
    assert cbp.layer_names == ["net.2", "net.4"]
    for name, scale in a.items():
        assert cbp.levels(name).tolist() == pytest.approx([-scale, 0.0, scale])
        w = cbp.modules[name].weight  # what the layer computes with
        assert set(w.unique().tolist()) <= set(cbp.levels(name).tolist())
    assert not hasattr(module.net[0], "parametrizations")  # first and last layer stay FP32
    assert not hasattr(module.net[6], "parametrizations")
    assert all(torch.count_nonzero(lam) == 0 for lam in cbp.multipliers.values())


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_multiplier_step_is_gradient_ascent_on_the_constraint(optimizer):
    module = pretrained()
    cbp = CBPCallback(levels="binary", multiplier_optimizer=optimizer, multiplier_lr=0.01)
    cbp.attach(module)
    with torch.no_grad():
        cbp.latent("net.2").mul_(3)  # push some weights outside the outer levels
    cs = {n: constraint(cbp.latent(n), cbp.levels(n), 1)[0] for n in cbp.layer_names}
    cbp.multiplier_step()
    for name, lam in cbp.multipliers.items():
        if optimizer == "sgd":  # paper text: lambda += lr * cs
            expected = 0.01 * cs[name]
        else:  # Adam's first step moves every multiplier with cs > 0 by lr
            expected = 0.01 * cs[name] / (cs[name] + 1e-8)
        assert torch.allclose(lam, expected, atol=1e-7)
    assert (cs["net.2"] > 0).any() and (cbp.multipliers["net.2"] > 0).any()
    # a second step never decreases a multiplier
    before = {n: lam.clone() for n, lam in cbp.multipliers.items()}
    cbp.multiplier_step()
    assert all((cbp.multipliers[n] >= before[n]).all() for n in before)


def test_constraint_gradient_is_added_to_the_weight_gradient():
    module = pretrained()
    cbp = CBPCallback(levels="ternary")
    cbp.attach(module)
    cbp.schedule.g = 3
    cbp.on_train_epoch_start(None, module)
    task_grad = {}
    for name in cbp.layer_names:
        w = cbp.latent(name)
        w.grad = torch.randn_like(w)
        task_grad[name] = w.grad.clone()
        cbp.multipliers[name].uniform_(0, 2)
    cbp.on_before_optimizer_step(None, module, None)
    term = 0.0
    for name in cbp.layer_names:
        cs, dcs = constraint(cbp.latent(name), cbp.levels(name), 3)
        lam = cbp.multipliers[name]
        assert torch.allclose(cbp.latent(name).grad, task_grad[name] + lam * dcs)
        term += (lam * cs).sum().item()
    assert cbp._constraint_sum.item() == pytest.approx(term, rel=1e-5)


def test_decoupled_constraint_step_moves_the_latent_by_lambda_times_the_schedule_and_keeps_the_gradient():
    module = pretrained()
    cbp = CBPCallback(levels="ternary", constraint_step="decoupled")
    cbp.attach(module)
    cbp.schedule.g = 3  # bands |w - a/2| < a/6 around the medians +-a/2
    cbp.on_train_epoch_start(None, module)
    w2, w4 = cbp.latent("net.2"), cbp.latent("net.4")
    a = cbp.levels("net.2")[-1].item()
    with torch.no_grad():  # hand-picked weights of net.2, lambda 0.5 on each
        w2[0, :4] = torch.tensor([0.8 * a, 0.55 * a, 1.2 * a, -0.1 * a])
    for w in (w2, w4):
        w.grad = torch.randn_like(w)
    cbp.multipliers["net.2"].fill_(0.5)
    cbp.multipliers["net.4"].uniform_(0, 2)
    task_grad = {n: cbp.latent(n).grad.clone() for n in cbp.layer_names}
    before = {n: cbp.latent(n).detach().clone() for n in cbp.layer_names}
    others = [p for n, p in module.named_parameters() if "original" not in n]
    # net.2's LR decayed to a fifth of its initial one (schedule factor 0.2); net.4 has no schedule
    optimizer = torch.optim.Adam([{"params": [w2], "lr": 0.02, "initial_lr": 0.1},
                                  {"params": [w4, *others], "lr": 0.01}])
    cbp.on_before_optimizer_step(None, module, optimizer)
    # by hand, factor 0.2, lambda 0.5: dcs/dw is -2 at 0.8a (below its level a, outside the band),
    # 0 at 0.55a (inside the band), +2 at 1.2a (above the top level), -2 at -0.1a (below level 0)
    expected = [0.8 * a + 0.2, 0.55 * a, 1.2 * a - 0.2, -0.1 * a + 0.2]  # 0.2 * 0.5 * 2
    assert w2[0, :4].tolist() == pytest.approx(expected, abs=1e-7)
    for name, lr in (("net.2", 0.2), ("net.4", 1.0)):
        _, dcs = constraint(before[name], cbp.levels(name), 3)
        assert torch.allclose(cbp.latent(name), before[name] - lr * cbp.multipliers[name] * dcs, atol=1e-7)
        assert torch.equal(cbp.latent(name).grad, task_grad[name])  # the gradient stays the task's


def test_pull_cap_caps_each_multiplier_at_cap_times_the_initial_lr_over_two():
    module = pretrained()
    cbp = CBPCallback(levels="binary", constraint_step="decoupled", pull_cap=0.3)
    cbp.attach(module)
    cbp.on_train_epoch_start(None, module)
    w2 = cbp.latent("net.2")
    a = cbp.levels("net.2")[-1].item()
    with torch.no_grad():
        w2[0, :2] = torch.tensor([0.5 * a, -3.0 * a])
    cbp.schedule.g = 4  # the band |w| < a/4 is free; 0.5a and -3a are pulled (towards +a and -a)
    cbp.multipliers["net.2"][0, :2] = torch.tensor([1e-5, 1.0])  # under and over the cap 1.5e-4
    cbp.multipliers["net.4"].fill_(1.0)
    others = [p for n, p in module.named_parameters() if "original" not in n]
    # LR decayed to half its initial 1e-3 (factor 0.5): cap 0.3 * 1e-3 / 2 = 1.5e-4
    optimizer = torch.optim.Adam([{"params": [w2], "lr": 5e-4, "initial_lr": 1e-3},
                                  {"params": [cbp.latent("net.4"), *others], "lr": 1e-3}])
    cbp.on_before_optimizer_step(None, module, optimizer)
    assert cbp.multipliers["net.2"][0, :2].tolist() == pytest.approx([1e-5, 1.5e-4])
    # by hand: w -= factor * lambda * dcs/dw, dcs/dw = -2 below the level +a, -2 below -a
    expected = [0.5 * a + 0.5 * 1e-5 * 2, -3.0 * a + 0.5 * 1.5e-4 * 2]
    assert w2[0, :2].tolist() == pytest.approx(expected, abs=2e-8)  # float32 near 0.06-0.4
    # net.4's group has no schedule: its LR 1e-3 is its initial one, the cap 0.3 * 1e-3 / 2
    assert torch.allclose(cbp.multipliers["net.4"], torch.tensor(1.5e-4))
    with pytest.raises(ValueError, match="constraint_step='decoupled'"):
        CBPCallback(pull_cap=0.3)  # the coupled step


def test_decoupled_constraint_step_needs_the_quantized_weights_in_the_optimizer():
    module = pretrained()
    cbp = CBPCallback(levels="binary", constraint_step="decoupled")
    cbp.attach(module)
    cbp.on_train_epoch_start(None, module)
    optimizer = torch.optim.SGD(module.net[0].parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="net.2"):
        cbp.on_before_optimizer_step(None, module, optimizer)
    with pytest.raises(ValueError, match="valid choices"):
        CBPCallback(constraint_step="decoupeld")


class AdamMLP(MLP):
    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


@pytest.mark.parametrize("step", ["coupled", "decoupled"])
def test_under_adam_only_the_decoupled_step_lets_the_multiplier_set_the_pull(tmp_path, step):
    """Adam divides the coupled constraint gradient by its own size, so a 1000x larger multiplier
    pulls no faster; the decoupled step moves the weights by lambda itself (docs/algorithm.md
    section 6)."""
    final = {}
    for lr in (1e-6, 1e-3):
        torch.manual_seed(0)
        module = AdamMLP(lr=1e-3)
        cbp = CBPCallback(levels="binary", p_max=1, multiplier_lr=lr, constraint_step=step)
        fit(module, [cbp], 4, tmp_path / f"{step}{lr}")
        final[lr] = cbp.history["cfs"][-1]
    ratio = final[1e-6] / final[1e-3]
    assert ratio > 2 if step == "decoupled" else 0.5 < ratio < 2, final


def test_constraint_gradient_reaches_bf16_weights_from_float32_multipliers():
    """Pure half precision: the term is formed in float32 and cast to the weight's dtype."""
    module = pretrained()
    cbp = CBPCallback(levels="ternary")
    cbp.attach(module)
    module.to(torch.bfloat16)  # as Lightning's bf16-true converts the module after setup
    cbp.on_train_epoch_start(None, module)
    for name in cbp.layer_names:
        cbp.multipliers[name].uniform_(0, 2)
        w = cbp.latent(name)
        w.grad = None if name == cbp.layer_names[0] else torch.ones_like(w)
    cbp.on_before_optimizer_step(None, module, None)
    for i, name in enumerate(cbp.layer_names):
        w, lam = cbp.latent(name), cbp.multipliers[name]
        _, dcs = constraint(w, cbp.levels(name), 1)
        expected = (lam * dcs).to(torch.bfloat16) + (0 if i == 0 else 1)
        assert w.grad.dtype == torch.bfloat16 and lam.dtype == torch.float32
        assert torch.equal(w.grad, expected) and w.grad.abs().sum() > 0


def test_ste_algorithm_has_no_constraint_and_no_multipliers():
    module = pretrained()
    cbp = CBPCallback(levels="binary", algorithm="ste")
    cbp.attach(module)
    assert cbp.multipliers == {} and cbp.multiplier_opt is None
    w = cbp.latent("net.2")
    w.grad = torch.ones_like(w)
    cbp.on_train_epoch_start(None, module)
    cbp.on_before_optimizer_step(None, module, None)
    assert torch.equal(w.grad, torch.ones_like(w))


def test_training_clamps_latents_and_bake_gives_exactly_a_times_factors(tmp_path):
    module = pretrained()
    module.lr = 2.0  # large steps push latents against the clamp
    shift2 = level_factors("shift2")  # frozen by shift2's default rule, the MSE clip
    scales = {n: layer_scale(module.net[i].weight, shift2, "mse") for n, i in (("net.2", 2), ("net.4", 4))}
    cbp = CBPCallback(levels="shift2", p_max=1, latent_clamp=0.3, multiplier_lr=0.05,
                      bake_at_end=False)
    fit(module, [cbp], 3, tmp_path)
    for name in cbp.layer_names:
        assert cbp.latent(name).abs().max() <= 0.3
    assert cbp.schedule.g == 4 and cbp.history["g"] == [2, 3, 4]
    assert cbp.cfs() > 0
    cbp.bake()
    factors = torch.tensor([-1, -0.5, -0.25, 0, 0.25, 0.5, 1])
    for name, scale in scales.items():
        layer = cbp.modules[name]
        assert not hasattr(layer, "parametrizations") and isinstance(layer.weight, nn.Parameter)
        allowed = (scale * factors).tolist()
        assert set(layer.weight.detach().unique().tolist()) <= set(allowed)
    assert cbp.cfs() == 0.0 and cbp.levels_ok()
    assert set(module.state_dict()) == set(MLP().state_dict())  # a plain module again


def test_lr_drop_when_g_reaches_the_configured_value(tmp_path):
    module = pretrained()
    cbp = CBPCallback(levels="binary", p_max=1, lr_drop_at_g=3, lr_drop_factor=0.1)
    trainer = fit(module, [cbp], 3, tmp_path)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.005)


def _snapshot(module, cbp):
    return {
        "weights": {k: v.clone() for k, v in module.state_dict().items()},
        "multipliers": {k: v.clone() for k, v in cbp.multipliers.items()},
        "schedule": cbp.schedule.state_dict(),
        "history": copy.deepcopy(cbp.history),
    }


RESUME_OPTIONS = dict(levels="ternary", p_max=2, lr_drop_at_g=3, multiplier_lr=0.01, bake_at_end=False)


def fit_with_epoch_checkpoints(epochs, folder):
    """A CBP stage from the pretrained MLP with a checkpoint after every epoch in ``folder``."""
    module, cbp = pretrained(), CBPCallback(**RESUME_OPTIONS)
    every_epoch = ModelCheckpoint(dirpath=str(folder), filename="{epoch}", save_top_k=-1,
                                  save_on_train_epoch_end=True)
    fit(module, [cbp, every_epoch], epochs, folder)
    return module, cbp


def test_resume_from_checkpoint_continues_exactly_like_an_uninterrupted_run(tmp_path):
    module_a, cbp_a = fit_with_epoch_checkpoints(5, tmp_path / "a")  # uninterrupted
    # interrupted after epoch index 2, resumed in a fresh process-like setup
    module_b, cbp_b = pretrained(), CBPCallback(**RESUME_OPTIONS)
    fit(module_b, [cbp_b], 5, tmp_path / "b", ckpt_path=str(tmp_path / "a" / "epoch=2.ckpt"))
    a, b = _snapshot(module_a, cbp_a), _snapshot(module_b, cbp_b)
    assert a["schedule"] == b["schedule"] and a["history"] == b["history"]
    assert a["schedule"]["g"] >= 3  # the schedule moved and the LR drop happened in this window
    for key in a["weights"]:
        assert torch.equal(a["weights"][key], b["weights"][key]), key
    for key in a["multipliers"]:
        assert torch.equal(a["multipliers"][key], b["multipliers"][key]), key


def test_checkpoint_holds_the_whole_cbp_state(tmp_path):
    module, cbp = pretrained(), CBPCallback(levels="binary", p_max=1, bake_at_end=False)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path), filename="cbp", save_on_train_epoch_end=True)
    fit(module, [cbp, ckpt], 2, tmp_path)
    saved = torch.load(tmp_path / "cbp.ckpt", weights_only=False)
    (state,) = [v for k, v in saved["callbacks"].items() if k.startswith("CBPCallback")]
    assert state["schedule"]["g"] == cbp.schedule.g == 3
    assert state["layers"] == ["net.2", "net.4"]
    assert set(state["scales"]) == {"net.2", "net.4"}
    assert state["multiplier_optimizer"]["state"]  # Adam moments saved
    assert torch.equal(state["multipliers"]["net.2"], cbp.multipliers["net.2"])
    with pytest.raises(ValueError, match="level_set"):
        CBPCallback(levels="ternary").load_state_dict(state)


class ZeroTaskLoss(L.LightningModule):
    """Task gradient 0: the only weight update is the constraint term."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))

    def training_step(self, batch, batch_idx):
        return (self.net(batch[0]) * 0).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


def test_mixed_precision_adds_the_constraint_gradient_to_unscaled_gradients():
    from lightning.pytorch.plugins.precision import MixedPrecision

    torch.manual_seed(0)
    module = ZeroTaskLoss()
    with torch.no_grad():
        module.net[1].weight.mul_(5)  # many weights beyond the outer levels
    cbp = CBPCallback(levels="binary", multiplier_optimizer="sgd", multiplier_lr=0.5,
                      bake_at_end=False)
    cbp.attach(module)
    w0 = cbp.latent("net.1").detach().clone()
    cs, dcs = constraint(w0, cbp.levels("net.1"), 1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[cbp],
                        plugins=[MixedPrecision("16-mixed", "cpu", scaler)])
    trainer.fit(module, DataLoader(TensorDataset(torch.randn(4, 4)), batch_size=4))
    # the scaler ran: one unskipped scaled step (a scaler that never scaled reports 0 here)
    assert scaler.state_dict()["_growth_tracker"] == 1 and scaler.get_scale() == 1024.0
    # one SGD step (lr 1) on lambda * dcs with lambda = 0.5 * cs from the initial multiplier step;
    # had the term been added to scaled gradients it would be 1024x too small after unscaling
    expected = (w0 - 0.5 * cs * dcs).clamp(-1, 1)
    assert (w0 - expected).abs().max() > 0.1
    assert torch.allclose(cbp.latent("net.1").detach(), expected, atol=1e-6)


class Recorder(L.Callback):
    """Per micro-batch: the raw task loss (recomputed before the forward) and the loss Lightning
    hands the callbacks; per optimizer step (before CBP adds its term): the constraint term
    ``sum lambda cs(w; g)`` recomputed from the weights and multipliers."""

    def __init__(self, cbp):
        self.cbp, self.batches, self.steps = cbp, [], []

    @torch.no_grad()
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        x, y = batch
        self.batches.append({"epoch": trainer.current_epoch,
                             "raw": float(nn.functional.cross_entropy(module(x), y))})

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.batches[-1]["handed"] = float(outputs["loss"])

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer, module, optimizer):
        cbp = self.cbp
        g = cbp.schedule.g
        term = sum(float((cbp.multipliers[n] * constraint(cbp.latent(n), cbp.levels(n), g)[0]).sum())
                   for n in cbp.layer_names)
        self.steps.append({"epoch": trainer.current_epoch, "constraint": term})

    def per_epoch(self, records, key, epoch):
        return [r[key] for r in records if r["epoch"] == epoch]


def replay_schedule(lagrangians, p_max):
    """docs/algorithm.md section 6, written again: g after each epoch."""
    g, p, previous, gs = 1, 0, float("inf"), []
    for value in lagrangians:
        p += 1
        if value >= previous or p >= p_max:
            g, p, previous = (g + 1 if g < 10 else g + 10), 0, float("inf")
        else:
            previous = value
        gs.append(g)
    return gs


def test_epoch_lagrangian_is_the_sum_of_every_steps_task_and_constraint_and_a_rise_moves_g(tmp_path):
    module = pretrained()
    module.lr = 0.3  # noisy steps: the epoch Lagrangian rises now and then
    cbp = CBPCallback(levels="ternary", p_max=50, lr_drop_at_g=None, multiplier_lr=0.05,
                      bake_at_end=False)
    recorder = Recorder(cbp)  # before cbp: it reads the weights before CBP touches the grads
    fit(module, [recorder, cbp], 8, tmp_path)
    for e in cbp.history["epoch"]:
        tasks = recorder.per_epoch(recorder.batches, "raw", e)
        terms = recorder.per_epoch(recorder.steps, "constraint", e)
        assert len(tasks) == len(terms) == 4
        assert cbp.history["lagrangian"][e] == pytest.approx(sum(tasks) + sum(terms), rel=1e-5)
        assert cbp.history["task_loss"][e] == pytest.approx(sum(tasks) / 4, rel=1e-5)
    assert sum(s["constraint"] for s in recorder.steps) > sum(b["raw"] for b in recorder.batches)
    # p_max = 50 never fires in 8 epochs: every g update is a Lagrangian that did not fall
    assert cbp.history["g"] == replay_schedule(cbp.history["lagrangian"], 50)
    assert cbp.history["g"][-1] >= 3


def test_gradient_accumulation_takes_the_step_mean_task_loss_and_the_constraint_once(tmp_path):
    """accumulate_grad_batches=2: the L_sum of one device at twice the batch."""
    module = pretrained()
    cbp = CBPCallback(levels="ternary", multiplier_lr=0.05, bake_at_end=False)
    recorder = Recorder(cbp)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[recorder, cbp], accumulate_grad_batches=2,
                        default_root_dir=str(tmp_path))
    trainer.fit(module, train_dataloaders=loader())
    for e in cbp.history["epoch"]:
        raw = recorder.per_epoch(recorder.batches, "raw", e)
        terms = recorder.per_epoch(recorder.steps, "constraint", e)
        assert len(raw) == 4 and len(terms) == 2  # 4 micro-batches, 2 optimizer steps
        step_means = [(raw[0] + raw[1]) / 2, (raw[2] + raw[3]) / 2]
        assert cbp.history["lagrangian"][e] == pytest.approx(sum(step_means) + sum(terms), rel=1e-5)
        assert cbp.history["task_loss"][e] == pytest.approx(sum(step_means) / 2, rel=1e-5)
        assert sum(terms) > 0


def test_pure_bf16_completes_a_cbp_stage_with_float32_multipliers(tmp_path):
    module = pretrained()
    cbp = CBPCallback(levels="ternary", p_max=1, multiplier_lr=0.05, bake_at_end=False)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", precision="bf16-true", logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, callbacks=[cbp], default_root_dir=str(tmp_path))
    trainer.fit(module, train_dataloaders=loader())
    assert cbp.latent("net.2").dtype == torch.bfloat16 and cbp.levels("net.2").dtype == torch.bfloat16
    assert all(lam.dtype == torch.float32 and lam.abs().sum() > 0 for lam in cbp.multipliers.values())
    assert cbp.history["g"] == [2, 3] and all(map(math.isfinite, cbp.history["lagrangian"]))
    assert cbp.history["cfs"][-1] < cbp.cfs_start  # the constraint pulled the latents in
    cbp.bake()
    assert cbp.levels_ok() and module.net[2].weight.dtype == torch.bfloat16


def test_resume_takes_the_settings_given_now_and_warns_about_the_change(tmp_path):
    _, cbp_a = fit_with_epoch_checkpoints(2, tmp_path / "a")
    changed = {**RESUME_OPTIONS, "p_max": 7, "lr_drop_at_g": 5, "multiplier_lr": 0.002}
    module_b, cbp_b = pretrained(), CBPCallback(**changed)
    with pytest.warns(UserWarning) as caught:
        fit(module_b, [cbp_b], 3, tmp_path / "b", ckpt_path=str(tmp_path / "a" / "epoch=1.ckpt"))
    text = " ".join(str(w.message) for w in caught)
    assert "p_max 2 -> 7" in text and "lr_drop_at_g 3 -> 5" in text and "lr 0.01 -> 0.002" in text
    assert (cbp_b.schedule.p_max, cbp_b.schedule.lr_drop_at_g) == (7, 5)
    assert cbp_b.multiplier_opt.param_groups[0]["lr"] == 0.002
    assert cbp_b.multiplier_opt.state  # the moments came from the checkpoint
    assert cbp_b.history["epoch"] == [0, 1, 2] and cbp_b.cfs_start == cbp_a.cfs_start


def test_level_changes_count_the_weights_whose_level_changed_since_the_epoch_began():
    module = pretrained()
    cbp = CBPCallback(levels="binary")
    cbp.attach(module)
    cbp.on_train_epoch_start(None, module)
    with torch.no_grad():  # 5 of net.2's 256 weights and 3 of net.4's 256 change sign
        cbp.latent("net.2").view(-1)[:5].neg_()
        cbp.latent("net.4").view(-1)[10:13].neg_()
        cbp.latent("net.4").view(-1)[20:30].mul_(0.5)  # moved, on the same level
    assert cbp.level_changes() == pytest.approx(8 / 512)


def test_a_stage_records_its_level_changes_per_epoch_and_resumes_a_checkpoint_without_them(tmp_path):
    module, cbp = pretrained(), CBPCallback(levels="binary", p_max=1, bake_at_end=False)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path), filename="cbp", save_on_train_epoch_end=True)
    fit(module, [cbp, ckpt], 2, tmp_path)
    assert len(cbp.history["changed"]) == 2 and 0 < cbp.history["changed"][0] < 1
    saved = torch.load(tmp_path / "cbp.ckpt", weights_only=False)
    (state,) = [v for k, v in saved["callbacks"].items() if k.startswith("CBPCallback")]
    del state["history"]["changed"]  # a checkpoint written before the count existed
    resumed = CBPCallback(levels="binary", p_max=1, bake_at_end=False)
    resumed.attach(pretrained())
    resumed._apply_state(state)
    assert resumed.history["changed"] == [None, None]
    assert resumed.history["cfs"] == cbp.history["cfs"]
