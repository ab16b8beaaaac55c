"""What a run is built from, below the orchestrator (:mod:`cbpqsnn.pipeline`) and shared with
the run-folder tools (:mod:`cbpqsnn.run_folder`) and the benchmarks: the datamodule, the backbone,
the Lightning trainer of a stage, and a test evaluation."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig, OmegaConf

from cbpqsnn.config_check import frames_mismatch
from cbpqsnn.methods.base import SpikingClassifier
from cbpqsnn.stopping import StopOnSigterm


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    return instantiate(cfg.data.datamodule)


def build_module(cfg: DictConfig, datamodule: L.LightningDataModule) -> SpikingClassifier:
    method_cfg = OmegaConf.to_container(cfg.method.module, resolve=True)
    frames = getattr(getattr(datamodule, "spec", None), "T", None)
    if frames is not None and int(method_cfg["T"]) != int(frames):
        raise ValueError(frames_mismatch(frames, method_cfg["T"]))
    cls = get_class(method_cfg.pop("_target_"))
    return cls(model=OmegaConf.to_container(cfg.model, resolve=True),
               in_shape=tuple(datamodule.in_shape), num_classes=int(datamodule.num_classes),
               **method_cfg)


def make_trainer(cfg: DictConfig, run_dir: Path, stage: str, max_epochs: int,
                 callbacks: list[L.Callback], loggers: list | bool = False,
                 gradient_clip_val: float | None = None,
                 gradient_clip_algorithm: str | None = None,
                 use_distributed_sampler: bool = True) -> L.Trainer:
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    progress = trainer_cfg.pop("enable_progress_bar", True)
    callbacks = [*callbacks, StopOnSigterm()]
    if progress:
        callbacks.append(RichProgressBar(leave=False))
    return L.Trainer(
        **trainer_cfg,
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=loggers,
        enable_progress_bar=progress,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        gradient_clip_val=gradient_clip_val,
        gradient_clip_algorithm=gradient_clip_algorithm,
        use_distributed_sampler=use_distributed_sampler,
    )


def evaluate(cfg: DictConfig, run_dir: Path, module: L.LightningModule,
             datamodule: L.LightningDataModule, split: str = "test") -> float:
    """Accuracy in percent on the test split (``split="val"``: the validation split). Under data
    parallelism every rank evaluates the whole split (no distributed sampler: it would pad the set
    to a multiple of the ranks and count samples twice), so the number is that of a single process
    and the same on every rank."""
    trainer = make_trainer(cfg, run_dir, split, 1, [], loggers=False,
                           use_distributed_sampler=False)
    if split == "val":
        (metrics,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    elif split == "test":
        (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False)
    else:
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    return 100.0 * float(metrics[f"{split}/acc"])


def has_validation_split(datamodule: L.LightningDataModule) -> bool:
    """Whether the datamodule holds a validation split out of its training data."""
    return bool(getattr(datamodule, "val_per_class", 0))
