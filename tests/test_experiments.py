"""Every experiment config composes and carries the published settings of its matrix row."""

from pathlib import Path

import pytest

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


def test_stbp_rows_neurons_and_pretraining():
    for row, decay in (("stbp_cifar10", 0.25), ("stbp_cifar100", 0.8)):
        cfg = compose([f"experiment={row}"])
        module = cfg.method.module
        assert (module.v_threshold, module.decay, module.surrogate_width) == (0.5, decay, 1.0)
        pre = cfg.method.pretrain
        optimizer = (pre.optimizer._target_, pre.optimizer.lr, pre.optimizer.momentum)
        assert optimizer == ("torch.optim.SGD", 0.3, 0.9)
        assert (pre.scheduler._target_, pre.scheduler.step_size, pre.scheduler.gamma) == (
            "torch.optim.lr_scheduler.StepLR", 45, 0.1)
        assert pre.epochs == 100


def test_sg_rows_train_on_12_of_16_frames():
    for row in ("sg_dvs128_gesture", "sg_cifar10dvs"):
        module = compose([f"experiment={row}"]).method.module
        assert (module.train_time_steps, module.tau0, module.v_threshold, module.surrogate) == (
            12, 2.0, 1.0, "atan")


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
