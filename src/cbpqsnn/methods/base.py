"""The LightningModule every pretraining method (backbone) derives from.

A backbone = network + neuron + readout + loss + default optimizer. Subclasses implement
``build_net`` (network with the method's neuron), ``readout`` (network output -> class scores)
and ``loss``. Nothing here knows about quantization: CBP is attached from outside as a callback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from cbpqsnn.nets.layout import channels_innermost
from cbpqsnn.neurons.kernels import set_kernels

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


STAGES = ("pretrain", "cbp")


MEMORY_FORMATS = ("contiguous", "channels_last")


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid: {list(STAGES)}")


class SpikingClassifier(L.LightningModule):
    """Classifier backbone: ``net`` maps a batch to time-first outputs ``[T, B, classes]``;
    ``readout`` turns them into class scores ``[B, classes]`` (argmax = prediction).

    A backbone names every method argument in its ``__init__`` (``method.module`` in the config:
    an unknown key is an error; the base's own: ``T``, ``train_time_steps`` (event frames kept in
    training), ``neuron_kernels`` (``eager`` | ``compiled``, :mod:`cbpqsnn.neurons.kernels`),
    ``memory_format`` (``contiguous`` | ``channels_last``: feature maps with the channels innermost,
    see :meth:`time_first`)) and
    lists the ``model`` options it reads, with their defaults, in
    ``MODEL_OPTIONS`` (besides ``name`` and ``spec``; see :meth:`model_options`)."""

    MODEL_OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        model: Mapping[str, Any],
        in_shape: Sequence[int],
        num_classes: int,
        T: int,
        train_time_steps: int | None = None,
        neuron_kernels: str = "eager",
        memory_format: str = "contiguous",
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__()
        # collects the arguments of every __init__ in the call chain (the backbone's own too)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.num_classes = int(num_classes)
        self.in_shape = tuple(in_shape)
        self.train_time_steps = train_time_steps
        self.net = self.build_net(self.model_options(model), tuple(in_shape), self.num_classes, int(T))
        set_kernels(self.net, neuron_kernels or "eager")
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(f"unknown memory_format {memory_format!r}; "
                             f"valid choices: {list(MEMORY_FORMATS)}")
        if memory_format == "channels_last" and len(self.in_shape) != 3:
            raise ValueError(f"memory_format='channels_last' needs feature-map inputs (C, H, W); this "
                             f"network's input is {self.in_shape}. Use memory_format=contiguous")
        self.channels_last = memory_format == "channels_last"
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.weight_decay_on_bias = True
        self.train_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(self.num_classes, average="micro")

    @classmethod
    def model_options(cls, model: Mapping[str, Any]) -> dict[str, Any]:
        """``model`` with this backbone's ``MODEL_OPTIONS`` defaults filled in. A key the backbone
        does not read is an error naming the valid ones (a typo would otherwise be ignored)."""
        valid = ["name", "spec", *cls.MODEL_OPTIONS]
        unknown = sorted(set(model) - set(valid))
        if unknown:
            raise ValueError(f"unknown model key(s) {unknown} for {cls.__name__}; valid keys: {valid}")
        if "spec" not in model:
            raise ValueError("the model config has no 'spec' (the layer list, e.g. [C16, P2, FC64])")
        return {**cls.MODEL_OPTIONS, **model}

    # -- what a method defines ------------------------------------------------------------
    def build_net(self, model: dict[str, Any], in_shape: tuple[int, ...], num_classes: int,
                  T: int) -> nn.Module:
        raise NotImplementedError

    def readout(self, out: Tensor) -> Tensor:
        """Class scores ``[B, classes]`` from the network output ``[T, B, classes]``."""
        raise NotImplementedError

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def prepare_stage(self, stage: str,
                      datamodule: L.LightningDataModule | None = None) -> dict[str, Any]:
        """Put the network in the state ``stage`` (``"pretrain"`` or ``"cbp"``) trains it in.

        The one place a method says how its network changes between stages, used by the
        pipeline (``"cbp"`` once the FP32 stage is done, trained or loaded, before the FP32
        evaluation), ``src/eval.py`` (FP32 weights) and the benchmarks. A method whose pretrained
        network is not yet the SNN to fine-tune (ANN-to-SNN conversion) converts it here, with
        ``datamodule`` for its data; without one (cost measurements) only the structure changes.
        Returns extra entries for ``summary.json``. Spiking backbones train one network in both
        stages: nothing to do."""
        check_stage(stage)
        return {}

    # -- shared training logic ------------------------------------------------------------
    def set_optimization(self, optimizer: OptimizerFactory,
                         scheduler: SchedulerFactory | None = None,
                         weight_decay_on_bias: bool = True) -> None:
        """Choose the optimizer (and scheduler) the next ``Trainer.fit`` uses (one per stage).

        ``weight_decay_on_bias=False`` exempts the biases from the optimizer's weight decay (see
        :meth:`parameter_groups`); true (default) hands every parameter to it alike.
        """
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.weight_decay_on_bias = bool(weight_decay_on_bias)

    def parameter_groups(self) -> list[nn.Parameter] | list[dict[str, Any]]:
        """What the optimizer factory receives: the trainable parameters as one list, or, with
        ``weight_decay_on_bias`` false, two groups -- every parameter not named ``*.bias`` (it keeps
        the optimizer's ``weight_decay``) and every bias (conv, linear, BN) with ``weight_decay``
        0 (the SNN-Calibration CBP stage's grouping, yoees/CBP-QSNN
        CBP-QSNN-SNN-Calibration/main_calibration_quantize_cbp.py)."""
        named = [(name, p) for name, p in self.named_parameters() if p.requires_grad]
        if self.weight_decay_on_bias:
            return [p for _, p in named]
        decayed = [p for name, p in named if not name.endswith(".bias")]
        biases = [p for name, p in named if name.endswith(".bias")]
        groups = [{"params": decayed}, {"params": biases, "weight_decay": 0.0}]
        return [group for group in groups if group["params"]]

    def time_first(self, x: Tensor, training: bool = False) -> Tensor:
        """Batches of event frames arrive batch-first ``[B, T, C, H, W]``; the network runs
        time-first. In training, ``train_time_steps`` (if set) keeps a random ordered subset of
        the frames (e.g. 12 of 16); static inputs ``[B, C, H, W]`` pass unchanged.

        ``memory_format=channels_last``: the feature maps are laid out channels-innermost (values
        unchanged). The convolutions then run channels-last, and so do their outputs, the neurons
        (the compiled kernels keep any layout, :func:`cbpqsnn.neurons.kernels.flat`) and the pools,
        which CPU kernels vectorize over the channels when they are innermost (the saving:
        docs/performance.md). The weights keep PyTorch's default layout."""
        if x.dim() == len(self.in_shape) + 2:
            x = x.transpose(0, 1)
            keep = self.train_time_steps
            if training and keep is not None and keep < x.shape[0]:
                index = torch.randperm(x.shape[0], device=x.device)[:keep].sort().values
                x = x.index_select(0, index)
        if self.channels_last:  # [..., C, H, W] with C innermost
            x = channels_innermost(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.net(self.time_first(x)))

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        out = self.net(self.time_first(x, training=stage == "train"))
        loss = self.loss(out, y)
        metric = getattr(self, f"{stage}_acc")
        metric(self.readout(out).detach(), y)
        self.log(f"{stage}/loss", loss.detach(), on_step=False, on_epoch=True,
                 prog_bar=stage != "test", batch_size=y.shape[0])
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("no optimizer set: call set_optimization(...) before fit")
        optimizer = self.optimizer_factory(self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
