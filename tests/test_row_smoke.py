"""The paper-row smoke benchmark composes every row on the real data that is here."""

import importlib.util
import sys

import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import Dataset

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("row_smoke", ROOT / "benchmarks" / "row_smoke.py")
row_smoke = importlib.util.module_from_spec(spec)
sys.modules["row_smoke"] = row_smoke  # dataclasses look their module up
spec.loader.exec_module(row_smoke)


def test_every_budgeted_row_composes_its_experiment_on_the_local_data(tmp_path):
    for row in row_smoke.BUDGETS:
        cfg = row_smoke.row_config(row, tmp_path)
        name, _, variant = row.partition("@")
        assert cfg.row == name
        if name.startswith("sg_"):
            assert cfg.data.name == "nmnist" and cfg.data.datamodule.T == cfg.method.module.T == 16
        elif "mnist5k" in variant.split("+"):
            assert cfg.data.name == "mnist5k"
        else:
            data = cfg.data.datamodule
            assert (data.dataset, data.layout, data.folders_subdir) == ("cifar10", "folders", "cifar10-jpeg")
        variants = variant.split("+")
        if name.startswith("calib_"):  # the reference init unless the variant asks for PyTorch's
            assert (cfg.model.init == "torch") == ("torch_init" in variants)
        if name.startswith("stbp_"):   # PyTorch's init (the authors') unless the variant says
            assert (cfg.model.init == "kaiming_normal") == ("kaiming_init" in variants)
        if name == "sg_dvs128_gesture":  # the published run's zero-init unless the variant drops it
            assert cfg.model.zero_init_residual == ("no_zero_init" not in variants)
        for width in [v for v in variants if v.startswith("width")]:
            divisor = int(width.removeprefix("width"))
            full = row_smoke.row_config(name, tmp_path).model.spec
            assert [w for w in cfg.model.spec] == row_smoke.narrowed(list(full), divisor) != list(full)
        published = row_smoke.row_config(name, tmp_path).method.pretrain.optimizer.lr
        for factor in [int(v[3:]) for v in variants if v.startswith("lrx")]:  # widthN+lrxN
            assert cfg.method.pretrain.optimizer.lr == published * factor
        instantiate(cfg.data.datamodule)  # the row's own data keys do not leak into nmnist's
    assert "@" not in ",".join(row_smoke.DEFAULT_ROWS) and len(row_smoke.DEFAULT_ROWS) == 7
    assert row_smoke.head_classes("stbp_cifar100") == 100
    assert row_smoke.head_classes("sg_dvs128_gesture") == 11


class Frames(Dataset):
    labels = [0, 1]

    def __len__(self):
        return 2

    def __getitem__(self, i):
        x = torch.zeros(3, 2, 34, 34)
        x[:, :, 0, 0] = 1.0
        return x, i


def test_event_frames_are_placed_on_the_128_pixel_grid_by_nearest_neighbour():
    x, y = row_smoke.UpsampledFrames(Frames(), 128)[1]
    assert x.shape == (3, 2, 128, 128) and y == 1
    assert x[:, :, :3, :3].eq(1).all() and x.sum() == 3 * 2 * 16  # the corner pixel -> 4x4 block


def test_stratified_subset_takes_the_same_count_of_every_class():
    labels = [i % 3 for i in range(30)]
    subset = row_smoke.stratified_subset(list(range(30)), labels, 4)
    assert sorted(labels[i] for i in subset.indices) == [0] * 4 + [1] * 4 + [2] * 4


def test_narrowed_divides_every_conv_fc_and_sew_width_and_keeps_the_rest():
    spec = ["C128", "C256s2", "P2", "D", "SEW64", "M2", "FC1024"]
    assert row_smoke.narrowed(spec, 16) == ["C8", "C16s2", "P2", "D", "SEW4", "M2", "FC64"]


def test_step_recorder_prints_the_window_mean_every_n_steps(capsys):
    layer = torch.nn.Linear(2, 2)
    recorder = row_smoke.StepRecorder(layer, report_every=2)
    for loss in (4.0, 2.0, 1.0, 3.0, 5.0):
        layer.weight.grad = torch.full_like(layer.weight, loss)  # |grad| / |w| follows the loss
        recorder.on_train_batch_start(None, None, None, 0)
        recorder.on_before_optimizer_step(None, None, None)
        recorder.on_train_batch_end(None, None, {"loss": torch.tensor(loss)}, None, 0)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["[row_smoke] step 2", "[row_smoke] step 4"]
    assert "loss 3," in lines[0] and "loss 2," in lines[1]  # means of (4, 2) and (1, 3)
    assert recorder.loss == [4.0, 2.0, 1.0, 3.0, 5.0]


def test_step_recorder_reports_the_zero_initialised_residual_gain(capsys):
    from cbpqsnn.nets.sew import SEWBlock, zero_init_residuals
    from cbpqsnn.neurons import ParametricLIF

    net = torch.nn.Sequential(SEWBlock(2, ParametricLIF), SEWBlock(2, ParametricLIF))
    zero_init_residuals(net)
    net[1].last_norm.weight.data[1] = -0.25  # the largest |w| of any block's last BN
    layer = torch.nn.Linear(2, 2)
    recorder = row_smoke.StepRecorder(layer, report_every=1, net=net)
    layer.weight.grad = torch.ones_like(layer.weight)
    recorder.on_train_batch_start(None, None, None, 0)
    recorder.on_before_optimizer_step(None, None, None)
    recorder.on_train_batch_end(None, None, {"loss": torch.tensor(1.0)}, None, 0)
    assert "residual BN |w| max 0.25," in capsys.readouterr().out


def test_mnist5k_variant_puts_the_row_recipe_on_mnist5k(tmp_path):
    cfg = row_smoke.row_config("tsslbp_cifar10@width8+mnist5k", tmp_path)
    assert cfg.data.name == "mnist5k" and "augment" not in cfg.data.datamodule
    assert cfg.model.spec[0] == "C12" and cfg.method.module.loss == "kernel"
    assert float(cfg.method.pretrain.optimizer.lr) == 2.0e-4
    with pytest.raises(ValueError, match="static-image rows"):
        row_smoke.row_config("sg_cifar10dvs@mnist5k", tmp_path)
