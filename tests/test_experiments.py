"""Every experiment config composes and carries the published settings of its matrix row."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import ROOT, compose

# row: (method, data, model, T, cbp weight optimizer, lr, multiplier lr, cbp epochs, batch, lr drop)
PUBLISHED = {
    "stbp_cifar10": ("stbp", "cifar10", "7conv3fc", 8, "torch.optim.SGD", 5e-3, 5e-4, 100, 50, 20),
    "stbp_cifar100": ("stbp", "cifar100", "7conv3fc", 8, "torch.optim.SGD", 5e-3, 5e-4, 100, 50, 20),
    "sg_dvs128_gesture": ("sg", "dvs128_gesture", "7bnet", 16, "torch.optim.SGD", 0.1, 1e-2, 200, 16, 20),
    "sg_cifar10dvs": ("sg", "cifar10dvs", "wide_7bnet", 16, "torch.optim.SGD", 0.1, 1e-2, 64, 16, 20),
    "calib_cifar10": ("calib", "cifar10", "vgg16_cifar", 32, "torch.optim.SGD", 1e-2, 1e-3, 100, 128, 20),
    "calib_cifar100": ("calib", "cifar100", "vgg16_cifar", 32, "torch.optim.SGD", 1e-2, 1e-3, 100, 128, 20),
}


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", experiment_names())
def test_every_experiment_composes_and_names_its_row(name):
    cfg = compose([f"experiment={name}"])
    assert cfg.row == name
    assert name.startswith(cfg.method.name)
    assert (ROOT / "conf" / "model" / f"{cfg.model.name}.yaml").is_file()


@pytest.mark.parametrize("row", sorted(PUBLISHED))
def test_paper_rows_carry_the_published_settings(row):
    method, data, model, T, optimizer, lr, lambda_lr, epochs, batch, lr_drop = PUBLISHED[row]
    cfg = compose([f"experiment={row}"])
    assert (cfg.method.name, cfg.data.name, cfg.model.name) == (method, data, model)
    assert cfg.method.module.T == T
    if "T" in cfg.data.datamodule:  # event frames: data and network agree on T
        assert cfg.data.datamodule.T == T
    cbp = cfg.method.cbp
    assert (cbp.optimizer._target_, cbp.optimizer.lr) == (optimizer, lr)
    assert cbp.optimizer.get("momentum") == 0.9
    assert cbp.callback.multiplier_optimizer == "adam" and cbp.callback.multiplier_lr == lambda_lr
    assert (cbp.epochs, cbp.batch_size, cbp.callback.lr_drop_at_g) == (epochs, batch, lr_drop)
    assert cbp.callback.p_max == 20 and cbp.callback.skip_first_last


def stbp_reference_lrs(lr: float, epochs: int, lr_decay_epoch: int = 45) -> list[float]:
    """LR of every training epoch in CBP-QSNN-STBP/main_train_fp32.py: after training epoch index
    ``e`` its ``lr_scheduler`` multiplies the LR by 0.1 when ``e % 45 == 0 and e > 1``."""
    lrs = []
    for epoch in range(epochs):
        lrs.append(lr)
        if epoch % lr_decay_epoch == 0 and epoch > 1:
            lr *= 0.1
    return lrs


def scheduled_lrs(stage, epochs: int) -> list[float]:
    """LR of every training epoch when the stage's scheduler steps after each epoch (Lightning's
    ``interval: epoch``, checked in tests/test_nets.py)."""
    optimizer = instantiate(stage.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    scheduler = instantiate(stage.scheduler)(optimizer)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(("row", "decay"), [("stbp_cifar10", 0.25), ("stbp_cifar100", 0.8)])
def test_stbp_rows_neurons_and_pretraining(row, decay):
    cfg = compose([f"experiment={row}"])
    module = cfg.method.module
    assert (module.v_threshold, module.decay, module.surrogate_width) == (0.5, decay, 1.0)
    pre = cfg.method.pretrain
    optimizer = (pre.optimizer._target_, pre.optimizer.lr, pre.optimizer.momentum)
    assert optimizer == ("torch.optim.SGD", 0.3, 0.9)
    assert pre.optimizer.get("weight_decay", 0.0) == 0.0
    assert (pre.epochs, pre.batch_size) == (100, 50)
    assert (pre.scheduler._target_, list(pre.scheduler.milestones), pre.scheduler.gamma) == (
        "torch.optim.lr_scheduler.MultiStepLR", [46, 91], 0.1)
    lrs = scheduled_lrs(pre, pre.epochs)
    assert lrs == pytest.approx(stbp_reference_lrs(0.3, 100), rel=1e-9)
    assert lrs[45] == pytest.approx(0.3) and lrs[46] == pytest.approx(0.03)  # 46 epochs at 0.3
    assert lrs[90] == pytest.approx(0.03) and lrs[91] == pytest.approx(0.003)


# row: (epochs, batch, lr, scheduler, its arguments, train_time_steps, zero_init_residual);
# SGD m0.9 without weight decay, from the SEW repository's origin_logs/*/args.txt
SEW_PRETRAINING = {
    "sg_dvs128_gesture": (192, 16, 1e-3, "StepLR", {"step_size": 64, "gamma": 0.1}, 12, True),
    "sg_cifar10dvs": (64, 16, 1e-2, "CosineAnnealingLR", {"T_max": 64}, None, False),
}


@pytest.mark.parametrize("row", sorted(SEW_PRETRAINING))
def test_sg_rows_pretrain_as_the_published_sew_runs(row):
    epochs, batch, lr, scheduler, arguments, train_steps, zero_init = SEW_PRETRAINING[row]
    cfg = compose([f"experiment={row}"])
    pre = cfg.method.pretrain
    assert (pre.epochs, pre.batch_size) == (epochs, batch)
    assert (pre.optimizer._target_, pre.optimizer.lr, pre.optimizer.momentum) == (
        "torch.optim.SGD", lr, 0.9)
    assert pre.optimizer.get("weight_decay", 0.0) == 0.0
    assert pre.scheduler._target_ == f"torch.optim.lr_scheduler.{scheduler}"
    assert {key: pre.scheduler[key] for key in arguments} == arguments
    module = cfg.method.module
    assert (module.T, cfg.data.datamodule.T, module.train_time_steps) == (16, 16, train_steps)
    assert cfg.model.zero_init_residual is zero_init
    assert (module.tau0, module.v_threshold, module.surrogate) == (2.0, 1.0, "atan")


def test_sg_cifar10dvs_row_uses_spikingjelly_split():
    data = compose(["experiment=sg_cifar10dvs"]).data.datamodule
    assert (data.split, data.file_order, data.test_per_class) == ("ordered", "lexicographic", 100)


@pytest.mark.parametrize("row", sorted(SEW_PRETRAINING))
def test_sg_rows_train_in_mixed_precision_on_a_gpu_and_fp32_on_a_cpu(row):
    gpu = compose([f"experiment={row}", "trainer=gpu"]).trainer
    assert (gpu.accelerator, gpu.precision) == ("gpu", "16-mixed")
    cpu = compose([f"experiment={row}", "trainer=cpu"]).trainer
    assert (cpu.accelerator, cpu.precision) == ("cpu", "32-true")
    assert compose([f"experiment={row}"]).trainer.precision == "32-true"


def test_mnist_rows_exist_for_every_method():
    methods = {p.stem for p in (ROOT / "conf" / "method").glob("*.yaml")}
    assert {f"{m}_mnist5k" for m in methods} <= set(experiment_names())
    assert Path(ROOT / "conf" / "experiment" / "stbp_mnist5k.yaml").is_file()


def test_calib_rows_vgg16_without_bn_and_ann_training():
    for row in ("calib_cifar10", "calib_cifar100"):
        cfg = compose([f"experiment={row}"])
        assert cfg.model.batch_norm is False and cfg.model.conv_dropout == 0.25
        assert cfg.data.datamodule.augment == "autoaugment_cutout"
        assert cfg.method.module.finetune_T is None and cfg.method.cbp.optimizer.weight_decay == 1e-4
        pre = cfg.method.pretrain
        assert (pre.epochs, pre.optimizer.lr, pre.optimizer.weight_decay) == (300, 0.01, 1e-4)
        assert pre.scheduler._target_.endswith("CosineAnnealingLR") and pre.scheduler.T_max == 300


def test_tsslbp_row_trains_only_quantized_layers_without_lr_drop():
    cfg = compose(["experiment=tsslbp_cifar10"])
    assert (cfg.method.name, cfg.data.name, cfg.model.name, cfg.method.module.T) == (
        "tsslbp", "cifar10", "tssl_cifar10", 5)
    assert (cfg.method.module.tau_m, cfg.method.module.tau_s) == (5.0, 3.0)
    cbp = cfg.method.cbp
    assert (cbp.optimizer._target_, cbp.optimizer.lr, cbp.epochs, cbp.batch_size) == (
        "torch.optim.AdamW", 2e-4, 200, 50)
    assert (cbp.callback.multiplier_optimizer, cbp.callback.multiplier_lr) == ("adamw", 1e-4)
    assert cbp.callback.lr_drop_at_g is None and cbp.callback.train_only_quantized
    assert cbp.gradient_clip_algorithm == "norm"
    pre = cfg.method.pretrain
    assert (pre.optimizer.lr, pre.epochs, pre.batch_size, pre.gradient_clip_algorithm) == (
        2e-4, 150, 50, "norm")
    assert cfg.model.dropout == 0.2 and cfg.model.bias is False
