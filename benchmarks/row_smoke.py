"""Does every paper row learn? Each row's exact network, neuron constants, loss, optimizer and LR
(``conf/experiment/<row>.yaml``, composed as ``train.py`` would) trained for a short budget on the
real data that is here, then tested.

    .venv/bin/python benchmarks/row_smoke.py [--rows stbp_cifar10,calib_cifar10,...]
        [--shared ../shared/data] [--out logs/row_smoke] [--scale 1.0] [--report-every 100]

Real data (unpacked from ``--shared`` into ``data/`` on first use):

- CIFAR rows (``tsslbp_cifar10``, ``stbp_cifar10/100``, ``calib_cifar10/100``): the CIFAR-10 JPEG
  copy, a stratified 10,000-image training subset (1,000 per class, fixed seed) and the test
  images (a stratified subset where the row's forward is too heavy for a CPU: the table says how
  many; the converted SNNs at T = 32 on a smaller one). The CIFAR-100 rows keep their 100-way head
  and CIFAR-100 normalization, on CIFAR-10 labels (chance is still 1/10).
- DVS rows (``sg_dvs128_gesture``, ``sg_cifar10dvs``): real N-MNIST recordings (1,000 train /
  100 test) as the rows' T = 16 equal-event-count frames, placed on the rows' 128x128 sensor grid
  by nearest-neighbour upsampling of the 34x34 frames (each sensor pixel becomes a block of 3-4
  pixels, so a digit fills the grid as a gesture fills the DVS128 sensor; 7B-Net's seven 2x2
  max-pools need the 128-pixel side). The gesture row keeps its 11-way head (chance 1/10).

Per row: the FP32 (pretraining) stage's optimizer, scheduler and clipping from the row config,
for a fixed training time (``BUDGETS``) (Lightning ``Trainer.fit`` on the row's module, so
method hooks such as TSSL-BP's weight clamp run as in a real run); then test accuracy. ``calib``
rows: the ANN stage, then the row's own conversion (``prepare_stage("cbp")``: thresholds,
calibration at the row's T = 32; the threshold search on 5 batches of 32 images, not 128) and the
converted SNN's accuracy per calibration level. Rows
named ``<row>@torch_init`` are the calib rows with PyTorch's default init (``model.init=torch``),
the network before the reference init.

Before that, on a fresh copy of the row's module: ``fit_steps`` steps on one fixed batch
(``fit_fixed_batch``: one stratified draw of the budget's batch, dropout off, the row's optimizer
and clipping), the loss per step and the batch's accuracy before and after -- whether the row's
network, neuron, loss and optimizer can fit anything at all, whatever the budget.

Recorded: training loss over the steps (mean of the first and last fifth; ``loss_curve``: the mean
of each tenth of the steps, in the JSON), |grad| / |w| of the
first layer (first and last fifth), median step time, test accuracy, chance level, and the steps
of the full published pretraining (``steps_full``) with the hours they would take at the measured
CPU step. Writes ``<out>/row_smoke.json`` and ``<out>/row_smoke.md`` (the table), row by row; rows
already in ``<out>/row_smoke.json`` and not run again keep their result.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tarfile
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import lightning as L  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from cbpqsnn.builders import build_datamodule, build_module  # noqa: E402
from cbpqsnn.deploy.metrics import hardware_metrics  # noqa: E402
from cbpqsnn.nets.sew import SEWBlock  # noqa: E402


@dataclass(frozen=True)
class Budget:
    """How much of a row runs here: ``minutes`` of FP32-stage training (Lightning ``max_time``;
    the steps it reaches are recorded) at ``batch`` images per step (None: the row's own batch
    size), then ``test`` test images (None: the whole test set); calib rows: ``snn_test`` images
    for each converted-SNN level at T = 32."""

    minutes: float
    batch: int | None = None
    test: int | None = None
    snn_test: int = 100
    fit_steps: int = 40


# The seven rows run in about an hour on 2 CPU cores, fixed-batch fits and evaluation included
# (docs/paper-rows.md); the two PyTorch-init comparison rows run with --rows. A training step of the
# heavy rows takes seconds on a CPU (7Conv3FC at T = 8: about 50 GFLOP per image; TSSL-BP's net at
# T = 5: about 18; the SEW nets at 128 x 128 x 16 frames), so they run smaller batches than published -- the
# optimizer, its learning rate, the network, neuron, loss and everything else are the row's -- to
# fit more steps in the budget.
BUDGETS: dict[str, Budget] = {
    "tsslbp_cifar10": Budget(minutes=5, batch=10, test=500),
    "stbp_cifar10": Budget(minutes=5, batch=8, test=200),
    "stbp_cifar100": Budget(minutes=5, batch=8, test=200),
    "sg_dvs128_gesture": Budget(minutes=6, batch=8),
    "sg_cifar10dvs": Budget(minutes=4, batch=4),
    "calib_cifar10": Budget(minutes=11, batch=32, test=1000),
    "calib_cifar100": Budget(minutes=11, batch=32, test=1000),
    "calib_cifar10@torch_init": Budget(minutes=6, batch=32, test=1000),
    "calib_cifar100@torch_init": Budget(minutes=6, batch=32, test=1000),
    # TSSL-BP diagnostics: which of the budget's two departures keeps the stream loss from falling?
    "tsslbp_cifar10@no_dropout": Budget(minutes=5, batch=10, test=500),
    "tsslbp_cifar10@batch50": Budget(minutes=5, batch=50, test=500),
    # Recipe diagnostics at the published batch: the row's init, neuron, loss and optimizer on its
    # network with every width / N (``@widthN``): the same depth and the same per-layer statistics
    # at init (both rows' inits scale with 1 / sqrt(fan-in)), N^2 times cheaper per step, so
    # thousands of steps fit. STBP: does the silent 7Conv3FC wake up? TSSL-BP: does the stream
    # loss fall at batch 50?
    "stbp_cifar10@width16": Budget(minutes=20, batch=None, test=1000),
    "stbp_cifar100@width16": Budget(minutes=20, batch=None, test=1000),
    "tsslbp_cifar10@width4": Budget(minutes=20, batch=None, test=1000),
    # ... and a longer run on a narrower net: does the stream learn after thousands of steps?
    "tsslbp_cifar10@width8": Budget(minutes=40, batch=None, test=1000),
    # ... with plain BPTT through the same neuron (sigmoid surrogate): is it the TSSL-BP backward?
    "tsslbp_cifar10@width8+surrogate": Budget(minutes=20, batch=None, test=1000),
    # ... with the target filtered once, as the paper's text (the code filters it twice)
    "tsslbp_cifar10@width8+single_target": Budget(minutes=20, batch=None, test=1000),
    # ... with the reference code's cross-entropy loss (loss_f.py spike_soft_max) instead of the
    # kernel loss: does the same network learn under another loss?
    "tsslbp_cifar10@width8+softmax": Budget(minutes=20, batch=None, test=1000),
    # ... and with its spike-count loss (loss_f.py spike_count: one-sided, desired 5 / undesired 1)
    "tsslbp_cifar10@width8+count": Budget(minutes=20, batch=None, test=1000),
    # ... the row's whole recipe (network / 8, kernel loss, AdamW 2e-4) on mnist5k: does it learn
    # an easy task?
    "tsslbp_cifar10@width8+mnist5k": Budget(minutes=15, batch=None),
    # ... at 8x the LR (2e-4 -> 1.6e-3): at width / N the hidden layers move less per step at the
    # same LR (see row_config; width_step.py measures by how much), so @widthN runs may train
    # too slowly; 8x is an upper bound on the difference
    "tsslbp_cifar10@width8+lrx8": Budget(minutes=20, batch=None, test=1000),
    "stbp_cifar10@width16+lrx16": Budget(minutes=20, batch=None, test=1000),
    # ... with TSSL-BP's later backward (method.module.backward=tssl_rising)
    "tsslbp_cifar10@width4+tssl_rising": Budget(minutes=20, batch=None, test=1000),
    # ... and with an init that keeps every layer firing (model.init=kaiming_normal)
    "stbp_cifar10@width16+kaiming_init": Budget(minutes=20, batch=None, test=1000),
    "stbp_cifar10@kaiming_init": Budget(minutes=5, batch=8, test=200),
    # ... and at a tenth of the published SGD LR (0.3 drives the output layer silent, where the
    # rectangular surrogate passes no gradient)
    "stbp_cifar10@width16+kaiming_init+lr0.03": Budget(minutes=12, batch=None, test=1000),
    "sg_cifar10dvs@width4": Budget(minutes=15, batch=None),
    "sg_dvs128_gesture@width4": Budget(minutes=15, batch=None),
    # ... at 10x its published SGD lr (0.001 -> 0.01, the CIFAR10-DVS row's): is the gesture row's
    # stall its low LR or its network?
    "sg_dvs128_gesture@width4+lrx10": Budget(minutes=15, batch=None),
    # ... without the zero-initialised residuals (each SEW block's last BN weight 1, not 0): with
    # them the blocks start as identities and the 7B-Net is its stem conv, 7 max pools to 1 x 1 and
    # the classifier; the CIFAR10-DVS row, which learns, has none
    "sg_dvs128_gesture@width4+no_zero_init": Budget(minutes=15, batch=None),
}
DEFAULT_ROWS = [row for row in BUDGETS if "@" not in row]
VARIANTS = {"torch_init": ["model.init=torch"], "no_dropout": ["model.dropout=0.0"],
            "kaiming_init": ["model.init=kaiming_normal"],
            "lr0.03": ["method.pretrain.optimizer.lr=0.03"],
            "tssl_rising": ["method.module.backward=tssl_rising"],
            "surrogate": ["method.module.backward=surrogate"],
            "single_target": ["method.module.double_filtered_target=false"],
            "softmax": ["method.module.loss=softmax"], "count": ["method.module.loss=count"],
            "no_zero_init": ["model.zero_init_residual=false"]}
CIFAR_TRAIN_SUBSET = 10_000
DVS_SIDE = 128
CIFAR_FOLDER = "cifar10-jpeg"
ARCHIVES = {CIFAR_FOLDER: "cifar10-jpeg.tar.gz", "NMNIST": "nmnist-1k.tar.gz"}


# -- data ----------------------------------------------------------------------------------------
def unpack(shared: Path, data_dir: Path) -> None:
    """``data/cifar10-jpeg/{train,test}`` and ``data/NMNIST/{Train,Test}`` from the shared copies."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / CIFAR_FOLDER / "test").is_dir():
        with tarfile.open(shared / ARCHIVES[CIFAR_FOLDER]) as tar:
            tar.extractall(data_dir / CIFAR_FOLDER, filter="data")
    if not (data_dir / "NMNIST" / "Test").is_dir():
        with tarfile.open(shared / ARCHIVES["NMNIST"]) as tar:
            tar.extractall(data_dir, filter="data")


def stratified_subset(dataset: Dataset, labels: list[int], per_class: int, seed: int = 0) -> Subset:
    """``per_class`` samples of every class, drawn with a fixed seed."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
    taken: dict[int, int] = {}
    keep = []
    for i in order:
        if taken.get(labels[i], 0) < per_class:
            taken[labels[i]] = taken.get(labels[i], 0) + 1
            keep.append(i)
    return Subset(dataset, sorted(keep))


class UpsampledFrames(Dataset):
    """Event frames ``[T, 2, h, w]`` placed on a ``side x side`` grid (nearest neighbour)."""

    def __init__(self, frames: Dataset, side: int) -> None:
        self.frames, self.side = frames, side
        self.labels = frames.labels

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x, y = self.frames[index]
        return F.interpolate(x, size=(self.side, self.side), mode="nearest"), y


def row_config(row: str, data_dir: Path) -> DictConfig:
    name, _, variant = row.partition("@")
    overrides = [f"experiment={name}", f"paths.data_dir={data_dir}", "logger=csv",
                 "trainer.enable_progress_bar=false"]
    if name.startswith("sg_"):  # the DVS rows' networks on N-MNIST frames
        overrides += ["data=nmnist", "T=16", "data.datamodule.num_workers=2",
                      "data.datamodule.eval_batch_size=8"]  # 128 x 128 x 16 frames: 256 would OOM
    else:  # CIFAR-10 images; CIFAR-100 rows keep their normalization and their 100-way head
        overrides += ["data.datamodule.dataset=cifar10", "data.datamodule.layout=folders",
                      f"data.datamodule.folders_subdir={CIFAR_FOLDER}", "data.datamodule.num_workers=1"]
    if name.startswith("calib_"):  # conversion on the CPU, two levels (each costs a T=32 test);
        # the threshold search's 5 batches of 32 instead of 128 images (its grid of 95 candidates
        # over every activation is most of the conversion's CPU time)
        overrides += ["method.module.conversion_device=cpu", "method.module.report_levels=[none,light]",
                      "method.module.calibration_batch_size=32"]
    variants = variant.split("+") if variant else []
    overrides += [o for v in variants for o in VARIANTS.get(v, [])]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    if "mnist5k" in variants:
        # ``@mnist5k``: a static-image row's whole recipe on the 4,000 mnist5k digits (an easy
        # task): does the recipe learn where the row's own data is not learned in a budget?
        if name.startswith("sg_"):
            raise ValueError(f"{row}: @mnist5k is for the static-image rows")
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            data = compose("train", overrides=["data=mnist5k", f"paths.data_dir={data_dir}"]).data
        with open_dict(cfg):
            cfg.data = data
    for width in [v for v in variants if v.startswith("width")]:
        with open_dict(cfg):
            cfg.model.spec = narrowed(list(cfg.model.spec), int(width.removeprefix("width")))
    for factor in [v for v in variants if re.fullmatch(r"lrx\d+", v)]:
        # ``widthN+lrxN``: the LR times N. Under the standard parametrization a layer with N
        # times fewer inputs moves its pre-activations less per step at the same LR (the change
        # of u = sum_i w_i x_i adds up over the fan-in), so ``widthN`` alone is partly the full
        # net at a smaller LR. Measured with ``width_step.py``: not N times less (docs/notes.md),
        # so ``lrxN`` over-compensates; a bound, not a match (the first layer, whose fan-in did
        # not shrink, moves N times faster than at full width)
        with open_dict(cfg):
            cfg.method.pretrain.optimizer.lr = float(cfg.method.pretrain.optimizer.lr) * int(factor[3:])
    if name.startswith("sg_"):  # drop the row dataset's own keys (e.g. CIFAR10-DVS's split)
        nmnist_keys = OmegaConf.load(ROOT / "conf" / "data" / "nmnist.yaml").datamodule.keys()
        with open_dict(cfg):
            for key in [k for k in cfg.data.datamodule if k not in nmnist_keys]:
                del cfg.data.datamodule[key]
    return cfg


def narrowed(spec: list[str], divisor: int) -> list[str]:
    """``spec`` with every conv / FC / SEW-block width divided by ``divisor`` (C256s2 -> C16s2 for
    16)."""
    def narrow(item: str) -> str:
        match = re.fullmatch(r"(C|FC|SEW)(\d+)(.*)", item)
        if not match:
            return item
        kind, width, rest = match.groups()
        return f"{kind}{max(1, int(width) // divisor)}{rest}"
    return [narrow(item) for item in spec]


def head_classes(row: str) -> int:
    """The row's own number of classes (its head), whatever data feeds it here."""
    return 100 if "cifar100" in row else 11 if "dvs128_gesture" in row else 10


def full_train_size(row: str) -> int:
    """Training samples of the row's real dataset (for the full-recipe step count)."""
    return 1176 if "dvs128_gesture" in row else 9000 if "cifar10dvs" in row else 50_000


def labels_of(dataset: Dataset) -> list[int]:
    if isinstance(dataset, Subset):
        labels = labels_of(dataset.dataset)
        return [labels[i] for i in dataset.indices]
    if isinstance(dataset, torch.utils.data.TensorDataset):  # mnist5k
        return dataset.tensors[1].tolist()
    return list(dataset.targets)


def prepare(cfg: DictConfig, budget: Budget, head: int) -> L.LightningDataModule:
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    train, test = datamodule.train_set, datamodule.test_set
    if hasattr(train, "targets"):  # CIFAR ImageFolder
        train = stratified_subset(train, labels_of(train), CIFAR_TRAIN_SUBSET // 10)
        if budget.test is not None:
            test = stratified_subset(test, labels_of(test), budget.test // 10)
    elif cfg.data.name != "mnist5k":  # event frames on the 128 x 128 grid (``@mnist5k``: as it is)
        train, test = UpsampledFrames(train, DVS_SIDE), UpsampledFrames(test, DVS_SIDE)
        datamodule.in_shape = (2, DVS_SIDE, DVS_SIDE)
    datamodule.train_set, datamodule.test_set = train, test
    datamodule.num_classes = head
    return datamodule


# -- training ------------------------------------------------------------------------------------
class StepRecorder(L.Callback):
    """Per optimizer step: the training loss, |grad| / |w| of the first layer, the wall time.
    Every ``report_every`` steps (0: never) a progress line with the window's mean loss and
    gradient ratio, so a long run that is cut off still leaves its curve in the log; in a net with
    SEW blocks also the largest |weight| of their last BNs (:func:`residual_gain`: 0 right after
    the zero-init, when every block is the identity)."""

    def __init__(self, first: nn.Module, report_every: int = 0, net: nn.Module | None = None) -> None:
        self.first = first
        self.report_every = report_every
        blocks = [m for m in net.modules() if isinstance(m, SEWBlock)] if net is not None else []
        self.norms = [b.last_norm for b in blocks if b.last_norm is not None]
        self.loss: list[float] = []
        self.grad_ratio: list[float] = []
        self.step_time: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._start = time.perf_counter()

    def on_before_optimizer_step(self, trainer: L.Trainer, module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        w = self.first.weight.detach()
        grad = self.first.weight.grad
        self.grad_ratio.append(float(grad.norm() / w.norm()) if grad is not None else 0.0)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self.step_time.append(time.perf_counter() - self._start)
        self.loss.append(float(outputs["loss"]))
        steps, every = len(self.loss), self.report_every
        if every and steps % every == 0:
            print(f"[row_smoke] step {steps}: loss {statistics.fmean(self.loss[-every:]):.4g}, "
                  f"first-layer grad/w {statistics.fmean(self.grad_ratio[-every:]):.2e}, "
                  + (f"residual BN |w| max {residual_gain(self.norms):.3g}, " if self.norms else "")
                  + f"{sum(self.step_time):.0f} s", flush=True)


def residual_gain(norms: list[nn.BatchNorm2d]) -> float:
    """The largest |weight| of the SEW blocks' last BNs: a zero-initialised block adds nothing to
    its input until this grows far enough for its second neuron to fire."""
    return max(float(norm.weight.detach().abs().max()) for norm in norms)


def first_layer(module: nn.Module) -> nn.Module:
    return next(m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                and m.weight.requires_grad)


def stage_trainer(stage: DictConfig, callbacks: list[L.Callback], **limits: Any) -> L.Trainer:
    """A CPU trainer for the row's FP32 stage (its clipping), no logging or checkpoints; ``limits``:
    ``max_steps`` / ``max_time``."""
    return L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_epochs=-1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                     callbacks=callbacks, gradient_clip_val=stage.get("gradient_clip_val"),
                     gradient_clip_algorithm=stage.get("gradient_clip_algorithm"), **limits)


def train(cfg: DictConfig, module: L.LightningModule, datamodule: L.LightningDataModule,
          minutes: float, batch: int, max_steps: int = -1, report_every: int = 0) -> StepRecorder:
    stage = cfg.method.pretrain
    datamodule.batch_size = int(batch)
    scheduler = instantiate(stage.scheduler) if stage.get("scheduler") else None
    module.set_optimization(instantiate(stage.optimizer), scheduler)
    recorder = StepRecorder(first_layer(module), report_every, module)
    trainer = stage_trainer(stage, [recorder], max_steps=max_steps,
                            max_time={"seconds": round(60 * minutes)})
    trainer.fit(module, datamodule=datamodule)
    return recorder


def fit_fixed_batch(cfg: DictConfig, module: L.LightningModule, datamodule: L.LightningDataModule,
                    batch: int, steps: int) -> tuple[list[float], float, float, list[list[float]]]:
    """Can the row's network, loss and optimizer fit one fixed batch? ``steps`` optimizer steps on
    the same ``batch`` training samples (one stratified draw, one augmentation, dropout off), as
    in a real run otherwise (the row's optimizer, clipping and method hooks). Returns the loss per
    step, the batch's accuracy before and after, and the firing rate of every neuron layer on the
    batch before and after (in order; empty for a network without spiking neurons, e.g. calib's
    ANN): where the activity dies, the layers above get no weight gradient."""
    train = datamodule.train_set
    labels = list(train.labels) if hasattr(train, "labels") else labels_of(train)
    picked = stratified_subset(list(range(len(labels))), labels, max(1, batch // 10)).indices[:batch]
    samples = [train[i] for i in picked]
    x = torch.stack([s[0] for s in samples])
    y = torch.tensor([int(s[1]) for s in samples])

    @torch.inference_mode()
    def accuracy() -> float:
        module.eval()
        return 100.0 * float((module(x).argmax(1) == y).float().mean())

    before, rates_before = accuracy(), layer_rates(cfg, module, x)
    module.train()  # Lightning keeps the modes it finds: dropout stays off, BN trains
    for m in module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) or "Dropout" in type(m).__name__:
            m.eval()
    stage = cfg.method.pretrain
    module.set_optimization(instantiate(stage.optimizer), None)
    recorder = StepRecorder(first_layer(module))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(y))
    stage_trainer(stage, [recorder], max_steps=steps).fit(module, train_dataloaders=loader)
    return recorder.loss, before, accuracy(), [rates_before, layer_rates(cfg, module, x)]


def layer_rates(cfg: DictConfig, module: L.LightningModule, x: Tensor) -> list[float]:
    """The firing rate of every neuron layer on ``x``, in order (empty without spiking neurons)."""
    module.eval()
    return list(hardware_metrics(module.net, [x], cfg.hardware.energy_pj)["spike_rate"].values())


@torch.inference_mode()
def test_accuracy(module: L.LightningModule, datamodule: L.LightningDataModule) -> float:
    module.eval()
    correct = total = 0
    for x, y in datamodule.test_dataloader():
        correct += int((module(x).argmax(1) == y).sum())
        total += y.numel()
    return 100.0 * correct / total


def fifth_means(values: list[float]) -> tuple[float, float]:
    n = max(1, len(values) // 5)
    return statistics.fmean(values[:n]), statistics.fmean(values[-n:])


def curve(values: list[float], parts: int = 10) -> list[float]:
    """Mean of each of ``parts`` consecutive, equal slices of ``values`` (the loss curve)."""
    bounds = [round(i * len(values) / parts) for i in range(parts + 1)]
    return [statistics.fmean(values[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


@dataclass
class RowResult:
    row: str
    steps: int
    batch: int
    train_samples: int
    test_samples: int
    chance: float
    test_acc: float
    loss_first: float
    loss_last: float
    grad_ratio_first: float
    grad_ratio_last: float
    step_s: float
    steps_full: int
    cpu_hours_full: float
    wall_s: float
    snn_acc: dict[str, float] = field(default_factory=dict)
    snn_test_samples: int = 0
    loss_curve: list[float] = field(default_factory=list)
    fit_loss: list[float] = field(default_factory=list)  # fixed-batch fit: loss per step
    fit_acc: tuple[float, float] = (0.0, 0.0)             # ... its accuracy before, after
    fit_rates: list[list[float]] = field(default_factory=list)  # ... neuron-layer rates before, after
    train_rates: list[float] = field(default_factory=list)  # neuron-layer rates after the budget


def run_row(row: str, budget: Budget, data_dir: Path, max_steps: int = -1,
            report_every: int = 0) -> RowResult:
    start = time.time()
    cfg = row_config(row, data_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = prepare(cfg, budget, head_classes(row))
    batch = budget.batch or int(cfg.method.pretrain.batch_size)
    fit_steps = min(budget.fit_steps, max_steps) if max_steps > 0 else budget.fit_steps
    fit_loss, *fit_acc, fit_rates = fit_fixed_batch(cfg, build_module(cfg, datamodule), datamodule,
                                                     batch, fit_steps)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_module(cfg, datamodule)
    recorder = train(cfg, module, datamodule, budget.minutes, batch, max_steps, report_every)
    acc = test_accuracy(module, datamodule)
    train_rates = layer_rates(cfg, module, next(iter(datamodule.test_dataloader()))[0][:batch])
    test_samples = len(datamodule.test_set)
    snn_acc: dict[str, float] = {}
    if cfg.method.name == "calib":  # the row's own conversion at its T, on a test subset
        test = datamodule.test_set
        datamodule.test_set = stratified_subset(test, labels_of(test), budget.snn_test // 10)
        snn_acc = module.prepare_stage("cbp", datamodule)["snn_acc"]
    loss_first, loss_last = fifth_means(recorder.loss)
    grad_first, grad_last = fifth_means(recorder.grad_ratio)
    step_s = statistics.median(recorder.step_time)
    published_batch = int(cfg.method.pretrain.batch_size)
    steps_full = math.ceil(full_train_size(row) / published_batch) * int(cfg.method.pretrain.epochs)
    return RowResult(row=row, steps=len(recorder.loss), batch=batch,
                     train_samples=len(datamodule.train_set), test_samples=test_samples,
                     chance=100.0 / 10, test_acc=acc, loss_first=loss_first, loss_last=loss_last,
                     grad_ratio_first=grad_first, grad_ratio_last=grad_last, step_s=step_s,
                     steps_full=steps_full,
                     cpu_hours_full=steps_full * step_s * published_batch / batch / 3600,
                     wall_s=time.time() - start, snn_acc=snn_acc,
                     snn_test_samples=len(datamodule.test_set) if snn_acc else 0,
                     loss_curve=curve(recorder.loss), fit_loss=fit_loss, fit_acc=tuple(fit_acc),
                     fit_rates=fit_rates, train_rates=train_rates)


# -- report --------------------------------------------------------------------------------------
def markdown(results: list[RowResult]) -> str:
    lines = ["| row | steps x batch | train / test images | test acc (chance) | converted SNN "
             "none / light (test images) | train loss first -> last fifth | first-layer "
             "grad/w first -> last | step s | full pretraining: steps at the published batch, "
             "CPU h | fixed batch: steps, loss first -> last (acc before -> after) | fixed batch: "
             "firing rate per neuron layer, before / after | firing rates after the budget (test batch) "
             "| wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        snn = (" / ".join(f"{r.snn_acc[k]:.1f}" for k in ("none", "light") if k in r.snn_acc)
               + f" ({r.snn_test_samples})") if r.snn_acc else "--"
        fit = (f"{len(r.fit_loss)}, {r.fit_loss[0]:.4g} -> {r.fit_loss[-1]:.4g} "
               f"({r.fit_acc[0]:.0f} -> {r.fit_acc[1]:.0f})") if r.fit_loss else "--"
        rates = " / ".join(_rates(per_layer) for per_layer in r.fit_rates
                           ) if r.fit_rates and r.fit_rates[0] else "--"
        lines.append(
            f"| `{r.row}` | {r.steps} x {r.batch} | {r.train_samples} / {r.test_samples} | "
            f"{r.test_acc:.1f} ({r.chance:.0f}) | {snn} | {r.loss_first:.4g} -> {r.loss_last:.4g} | "
            f"{r.grad_ratio_first:.1e} -> {r.grad_ratio_last:.1e} | {r.step_s:.2f} | "
            f"{r.steps_full:,}, {r.cpu_hours_full:,.0f} | {fit} | {rates} | "
            f"{_rates(r.train_rates) or '--'} | {r.wall_s:.0f} |")
    return "\n".join(lines) + "\n"


def _rates(values: list[float]) -> str:
    return " ".join(f"{v:.2g}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS),
                        help=f"comma-separated rows (default: the seven paper rows); "
                             f"all: {', '.join(BUDGETS)}")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "row_smoke")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every time budget")
    parser.add_argument("--fit-steps", type=int, default=None,
                        help="steps of the fixed-batch fit (default: each row's budget)")
    parser.add_argument("--report-every", type=int, default=100,
                        help="print the mean loss and first-layer grad/w every N training steps "
                             "(0: never)")
    parser.add_argument("--probe", action="store_true",
                        help="3 steps and 50 / 20 test images per row: does every row run, how fast")
    args = parser.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in BUDGETS]
    if unknown:
        parser.error(f"unknown rows {unknown}; valid: {', '.join(BUDGETS)}")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    unpack(args.shared, args.data_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "row_smoke.json"  # rows run before keep their result unless run again
    previous = {r["row"]: r for r in json.loads(saved.read_text())} if saved.is_file() else {}
    results = [RowResult(**r) for name, r in previous.items() if name not in rows]
    for row in rows:
        budget = BUDGETS[row]
        budget = replace(budget, minutes=budget.minutes * args.scale)
        if args.fit_steps is not None:
            budget = replace(budget, fit_steps=args.fit_steps)
        if args.probe:
            budget = replace(budget, test=50, snn_test=20)
        print(f"[row_smoke] {row}: {budget}", flush=True)
        results.append(run_row(row, budget, args.data_dir, max_steps=3 if args.probe else -1,
                               report_every=args.report_every))
        print(f"[row_smoke] {json.dumps(asdict(results[-1]))}", flush=True)
        saved.write_text(json.dumps([asdict(r) for r in results], indent=2))
        (args.out / "row_smoke.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
