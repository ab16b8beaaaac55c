"""One run: pretrain (or load) -> FP32 eval -> CBP stage -> bake -> quantized eval -> summary.

Artifacts in the run folder: ``checkpoints/fp32.ckpt``, ``checkpoints/cbp.ckpt`` (with the CBP
callback state), ``quantized.pt`` (plain baked ``state_dict``), ``quantized_packed.pt`` (packed
level codes + scales), ``summary.json`` (written last, atomically: a run that fails leaves none).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig, OmegaConf

from cbpqsnn.callbacks import FiniteLossGuard
from cbpqsnn.checkpoints import load_pretrained
from cbpqsnn.loggers import finish_loggers, make_loggers
from cbpqsnn.methods.base import SpikingClassifier
from cbpqsnn.quant.callback import CBPCallback
from cbpqsnn.quant.export import pack_state_dict, packed_payload_bytes
from cbpqsnn.quant.memory import weight_memory

NO_QUANT = ("none",)


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    return instantiate(cfg.data.datamodule)


def build_module(cfg: DictConfig, datamodule: L.LightningDataModule) -> SpikingClassifier:
    method_cfg = OmegaConf.to_container(cfg.method.module, resolve=True)
    frames = getattr(getattr(datamodule, "spec", None), "T", None)
    if frames is not None and int(method_cfg["T"]) != int(frames):
        raise ValueError(
            f"the event data gives T = {frames} frames per sample but method.module.T = "
            f"{method_cfg['T']}; set both to the same value (e.g. data.datamodule.T={method_cfg['T']} "
            "or method.module.T=" f"{frames}; to train on a subset of the frames use "
            "method.module.train_time_steps)"
        )
    cls = get_class(method_cfg.pop("_target_"))
    return cls(model=OmegaConf.to_container(cfg.model, resolve=True),
               in_shape=tuple(datamodule.in_shape), num_classes=int(datamodule.num_classes),
               **method_cfg)


def make_trainer(cfg: DictConfig, run_dir: Path, stage: str, max_epochs: int,
                 callbacks: list[L.Callback], loggers: list | bool = False,
                 gradient_clip_val: float | None = None,
                 gradient_clip_algorithm: str | None = None) -> L.Trainer:
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    progress = trainer_cfg.pop("enable_progress_bar", True)
    callbacks = list(callbacks)
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
    )


def evaluate(cfg: DictConfig, run_dir: Path, module: L.LightningModule,
             datamodule: L.LightningDataModule) -> float:
    """Test accuracy in percent."""
    trainer = make_trainer(cfg, run_dir, "test", 1, [], loggers=False)
    (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False)
    return 100.0 * float(metrics["test/acc"])


def _set_batch_size(datamodule: L.LightningDataModule, batch_size: int | None) -> None:
    if batch_size:
        datamodule.batch_size = int(batch_size)


def _fit_stage(cfg: DictConfig, run_dir: Path, stage: str, module: L.LightningModule,
               datamodule: L.LightningDataModule, stage_cfg: DictConfig,
               extra_callbacks: list[L.Callback], ckpt_name: str,
               ckpt_path: str | None = None) -> None:
    _set_batch_size(datamodule, stage_cfg.get("batch_size"))
    optimizer = instantiate(stage_cfg.optimizer)
    scheduler = instantiate(stage_cfg.scheduler) if stage_cfg.get("scheduler") else None
    module.set_optimization(optimizer, scheduler, stage_cfg.get("weight_decay_on_bias", True))
    checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename=ckpt_name,
                                 save_top_k=1, monitor=None, save_on_train_epoch_end=True,
                                 enable_version_counter=False)
    loggers = make_loggers(cfg, run_dir, stage)
    try:
        trainer = make_trainer(cfg, run_dir, stage, int(stage_cfg.epochs),
                               [*extra_callbacks, FiniteLossGuard(stage), checkpoint], loggers,
                               stage_cfg.get("gradient_clip_val"),
                               stage_cfg.get("gradient_clip_algorithm"))
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:
        finish_loggers(loggers)


def make_cbp_callback(cfg: DictConfig) -> CBPCallback:
    options = OmegaConf.to_container(cfg.method.cbp.callback, resolve=True)
    return CBPCallback(levels=cfg.quant.levels, algorithm=cfg.quant.algorithm, **options)


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run the whole pipeline for a composed config; returns the summary written to disk."""
    start = time.time()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    quantize = cfg.quant.algorithm not in NO_QUANT
    if cfg.get("resume") and not cfg.get("pretrained"):
        raise ValueError("resume=<cbp checkpoint> also needs pretrained=<the FP32 checkpoint the "
                         "CBP stage started from> (the FP32 accuracy is measured on it)")
    if cfg.get("resume") and not quantize:
        raise ValueError("resume=<cbp checkpoint> needs a quantized run; quant=fp32 has no CBP stage")
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)

    # -- stage 1: FP32 pretraining (or a given checkpoint)
    if cfg.get("pretrained"):
        load_pretrained(module, cfg.pretrained)
        fp32_ckpt, epochs_pretrain = str(cfg.pretrained), 0
    else:
        _fit_stage(cfg, run_dir, "pretrain", module, datamodule, cfg.method.pretrain, [], "fp32")
        fp32_ckpt = str(run_dir / "checkpoints" / "fp32.ckpt")
        epochs_pretrain = int(cfg.method.pretrain.epochs)
    method_summary = module.on_pretraining_end(datamodule)
    fp32_acc = evaluate(cfg, run_dir, module, datamodule)
    fp32_bytes = 4 * sum(p.numel() for p in module.parameters())

    summary: dict[str, Any] = {
        "row": cfg.row, "method": cfg.method.name, "data": cfg.data.name, "model": cfg.model.name,
        "quant": cfg.quant.name, "algorithm": cfg.quant.algorithm, "seed": int(cfg.seed),
        "fp32_acc": fp32_acc, "epochs_pretrain": epochs_pretrain, "fp32_checkpoint": fp32_ckpt,
        **method_summary,
    }
    if not quantize:
        summary.update(quant_acc=fp32_acc, acc_delta=0.0, cfs_final=0.0, levels_ok=True,
                       bits_per_weight=32, weight_memory_bytes=fp32_bytes,
                       fp32_weight_memory_bytes=fp32_bytes, memory_ratio=1.0, g_final=None,
                       epochs_cbp=0, quantized_layers=[])
    else:
        # -- stage 2: CBP (or STE) fine-tuning, bake at the end
        cbp = make_cbp_callback(cfg)
        _fit_stage(cfg, run_dir, "cbp", module, datamodule, cfg.method.cbp, [cbp], "cbp",
                   ckpt_path=cfg.get("resume"))
        cbp.bake()
        quant_acc = evaluate(cfg, run_dir, module, datamodule)
        memory = weight_memory(module, cbp.layer_names, cbp.bits)
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        _atomic_torch_save(state, run_dir / "quantized.pt")
        packed = pack_state_dict(state, {n: lv.cpu() for n, lv in cbp.baked_levels().items()},
                                 cbp.bits)
        _atomic_torch_save(packed, run_dir / "quantized_packed.pt")
        parameters = {n for n, _ in module.named_parameters()}
        summary.update(
            quant_acc=quant_acc, acc_delta=quant_acc - fp32_acc, cfs_final=cbp.cfs(),
            levels_ok=cbp.levels_ok(), bits_per_weight=cbp.bits,
            weight_memory_bytes=memory.bytes, fp32_weight_memory_bytes=memory.fp32_bytes,
            memory_ratio=memory.ratio, packed_payload_bytes=packed_payload_bytes(packed, parameters),
            g_final=cbp.schedule.g, epochs_cbp=int(cfg.method.cbp.epochs),
            quantized_layers=cbp.layer_names, cbp_checkpoint=str(run_dir / "checkpoints" / "cbp.ckpt"),
            history=cbp.history,
        )
    summary["wall_time_s"] = time.time() - start
    _atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
