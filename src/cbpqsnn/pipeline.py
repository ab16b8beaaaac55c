"""One run: pretrain (or load) -> FP32 eval -> CBP stage -> bake -> quantized eval -> summary.

``quant.algorithm=ptq`` has no second stage: the pretrained weights are rounded onto their levels.
``quant=fp32 quant.algorithm=finetune`` runs the second stage (``method.cbp``: epochs, optimizer,
schedule, clipping) on the FP32 weights with no quantization: the FP32 network trained as long as
the fine-tuned ones, a comparison's equal-training reference (``quant_acc`` is its accuracy after
the stage, ``fp32_acc`` the one it started from; its weights are ``checkpoints/cbp.ckpt``).
``latent_acc`` in the summary is the accuracy of the latent FP32 weights at the end of the stage
(before the bake), ``quant_acc`` that of the baked weights on their levels. With a validation split
(``data.datamodule.val_per_class``) the summary also gives ``fp32_val_acc`` and ``val_acc`` (the
network the run leaves behind) on it: the numbers settings are tuned on.

``resume=<checkpoint>``: with ``pretrained=`` it continues an interrupted CBP (fine-tuning) stage
from its ``cbp.ckpt``; without, it continues an interrupted FP32 stage from its ``fp32.ckpt`` (the
epoch, optimizer and scheduler state, and the data order, as if never stopped).

Artifacts in the run folder: ``checkpoints/fp32.ckpt``, ``checkpoints/cbp.ckpt`` (with the CBP
callback state), ``quantized.pt`` (plain baked ``state_dict``), ``quantized_packed.pt`` (packed
level codes + scales), ``model.nir`` and ``model_int.npz`` (deployment: ``cbpqsnn.deploy``, where
the network has a mapping; ``summary["deploy"]`` says what was written), ``summary.json`` (written
last, atomically: a run that fails leaves none).

Under data parallelism (``trainer.strategy=ddp``) every rank runs this function (Lightning starts
the other ranks as copies of the command); the stages train together, the test evaluations run on
the whole test set on every rank (no distributed sampler: no padding, the same number on every
rank), and only global rank 0 writes the artifacts.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from cbpqsnn.builders import build_datamodule, build_module, evaluate, has_validation_split, make_trainer
from cbpqsnn.checkpoints import check_stage_checkpoint, load_pretrained, read_checkpoint
from cbpqsnn.deploy.artifacts import network_levels, write_deployment
from cbpqsnn.deploy.metrics import first_test_inputs, hardware_metrics
from cbpqsnn.guards import FiniteLossGuard, FiringRateMonitor
from cbpqsnn.loggers import finish_loggers, log_result, make_loggers
from cbpqsnn.preflight import check_run
from cbpqsnn.quant.callback import FP32_ALGORITHMS, FP32_FINETUNE, CBPCallback
from cbpqsnn.quant.export import pack_state_dict, packed_payload_bytes
from cbpqsnn.quant.levels import level_factors
from cbpqsnn.quant.memory import weight_memory


def _set_batch_size(datamodule: L.LightningDataModule, batch_size: int | None) -> None:
    if batch_size:
        datamodule.batch_size = int(batch_size)


class RunInterrupted(Exception):
    """A stage stopped by Ctrl-C (SIGINT) or SIGTERM. ``resume``: the overrides that continue the
    run from the stage's last epoch-end checkpoint, or from the finished pretraining when no epoch
    of the CBP stage had finished (``None``: nothing to continue from)."""

    def __init__(self, signal: str, stage: str, resume: list[str] | None) -> None:
        self.signal, self.stage, self.resume = signal, stage, resume
        saved = ("its last finished epoch is saved" if resume and resume[-1].startswith("resume=")
                 else "no epoch of it had finished")
        super().__init__(f"stopped by {signal} during the {stage} stage; {saved}")


def _finished_epochs(ckpt_path: str | None) -> int | None:
    """How many epochs the checkpoint a stage resumes from has finished (None: a fresh stage)."""
    return None if not ckpt_path else int(read_checkpoint(ckpt_path)["epoch"]) + 1


def _fit_stage(cfg: DictConfig, run_dir: Path, stage: str, module: L.LightningModule,
               datamodule: L.LightningDataModule, stage_cfg: DictConfig,
               extra_callbacks: list[L.Callback], ckpt_name: str,
               ckpt_path: str | None = None, resume_with: tuple[str, ...] = ()) -> str:
    """Train one stage; returns the precision it ran at. ``resume_with``: the overrides that go
    with ``resume=<this stage's checkpoint>`` in the command that continues an interrupted stage."""
    _set_batch_size(datamodule, stage_cfg.get("batch_size"))
    optimizer = instantiate(stage_cfg.optimizer)
    scheduler = instantiate(stage_cfg.scheduler) if stage_cfg.get("scheduler") else None
    module.set_optimization(optimizer, scheduler, stage_cfg.get("weight_decay_on_bias", True))
    checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename=ckpt_name,
                                 save_top_k=1, monitor=None, save_on_train_epoch_end=True,
                                 enable_version_counter=False)
    loggers = make_loggers(cfg, run_dir, stage, _finished_epochs(ckpt_path))
    trainer = None
    try:
        trainer = make_trainer(cfg, run_dir, stage, int(stage_cfg.epochs),
                               [*extra_callbacks, FiniteLossGuard(stage), FiringRateMonitor(stage),
                                checkpoint], loggers,
                               stage_cfg.get("gradient_clip_val"),
                               stage_cfg.get("gradient_clip_algorithm"))
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except (KeyboardInterrupt, SystemExit) as stop:  # Lightning: sys.exit(1) after Ctrl-C,
        if trainer is None or not trainer.interrupted:  # SIGTERMException after SIGTERM
            raise
        saved = run_dir / "checkpoints" / f"{ckpt_name}.ckpt"
        last = str(saved) if saved.is_file() else ckpt_path
        signal = "SIGTERM" if isinstance(stop, SIGTERMException) else "Ctrl-C (SIGINT)"
        resume = [*resume_with, f"resume={last}"] if last else list(resume_with) or None
        raise RunInterrupted(signal, stage, resume) from None
    finally:
        finish_loggers(loggers)
    return str(trainer.precision)


def make_cbp_callback(cfg: DictConfig) -> CBPCallback:
    options = OmegaConf.to_container(cfg.method.cbp.callback, resolve=True)
    return CBPCallback(levels=cfg.quant.levels, algorithm=cfg.quant.algorithm,
                       scale=cfg.quant.get("scale"), **options)


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run the whole pipeline for a composed config; returns the summary written to disk.
    The config and the devices are checked first (:func:`cbpqsnn.preflight.check_run`; ``src/train.py``
    checks the data too, before Hydra makes the run folder): a bad key or value fails here, before
    any data is read. Ctrl-C or SIGTERM during a stage raises :class:`RunInterrupted`."""
    start = time.time()
    check_run(cfg, data=False)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    quantize = cfg.quant.algorithm not in FP32_ALGORITHMS
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)

    # -- stage 1: FP32 pretraining (or a given checkpoint)
    module.prepare_stage("pretrain", datamodule)
    # resume= continues the CBP stage when the FP32 weights are given (pretrained=), else pretraining
    resume_stage = ("cbp" if cfg.get("pretrained") else "pretrain") if cfg.get("resume") else None
    if resume_stage:
        check_stage_checkpoint(cfg.resume, resume_stage)
    cbp_resume = cfg.resume if resume_stage == "cbp" else None
    precision = str(cfg.trainer.precision)  # what evaluation runs at, unless a stage trains
    if cfg.get("pretrained"):
        load_pretrained(module, cfg.pretrained)
        fp32_ckpt, epochs_pretrain = str(cfg.pretrained), 0
    else:
        precision = _fit_stage(cfg, run_dir, "pretrain", module, datamodule, cfg.method.pretrain, [],
                               "fp32", ckpt_path=cfg.get("resume"))
        fp32_ckpt = str(run_dir / "checkpoints" / "fp32.ckpt")
        epochs_pretrain = int(cfg.method.pretrain.epochs)
    method_summary = module.prepare_stage("cbp", datamodule)
    fp32_acc = evaluate(cfg, run_dir, module, datamodule)
    validate = has_validation_split(datamodule)
    fp32_val_acc = evaluate(cfg, run_dir, module, datamodule, "val") if validate else None
    fp32_bytes = 4 * sum(p.numel() for p in module.parameters())
    hardware = {"fp32": _hardware(cfg, module, datamodule, None)}

    summary: dict[str, Any] = {
        "row": cfg.row, "method": cfg.method.name, "data": cfg.data.name, "model": cfg.model.name,
        "quant": cfg.quant.name, "algorithm": cfg.quant.algorithm, "variant": cfg.get("variant"),
        "levels": list(level_factors(cfg.quant.levels)) if quantize else None,
        "seed": int(cfg.seed), "fp32_acc": fp32_acc, "fp32_val_acc": fp32_val_acc,
        "epochs_pretrain": epochs_pretrain, "resumed_from": cfg.get("resume"),
        "fp32_checkpoint": fp32_ckpt,
        **method_summary,
    }
    if not quantize:
        final_acc, epochs, stage_ckpt = fp32_acc, 0, None
        if cfg.quant.algorithm == FP32_FINETUNE:  # the fine-tuning stage, nothing quantized
            precision = _fit_stage(cfg, run_dir, "cbp", module, datamodule, cfg.method.cbp, [], "cbp",
                                   ckpt_path=cbp_resume, resume_with=(f"pretrained={fp32_ckpt}",))
            final_acc = evaluate(cfg, run_dir, module, datamodule)
            epochs, stage_ckpt = int(cfg.method.cbp.epochs), str(run_dir / "checkpoints" / "cbp.ckpt")
        summary.update(quant_acc=final_acc, acc_delta=final_acc - fp32_acc, latent_acc=final_acc,
                       scale=None, cfs_final=0.0, levels_ok=True,
                       bits_per_weight=32, weight_memory_bytes=fp32_bytes,
                       fp32_weight_memory_bytes=fp32_bytes, memory_ratio=1.0, g_final=None,
                       epochs_cbp=epochs, quantized_layers=[], cbp_checkpoint=stage_ckpt)
        summary["deploy"] = _write_deployment(cfg, module, None, run_dir)
    else:
        # -- stage 2: CBP (or a baseline's) fine-tuning, bake at the end; ptq: bake only
        cbp = make_cbp_callback(cfg)
        fine_tune = cfg.quant.algorithm != "ptq"
        if fine_tune:
            precision = _fit_stage(cfg, run_dir, "cbp", module, datamodule, cfg.method.cbp, [cbp],
                                   "cbp", ckpt_path=cbp_resume,
                                   resume_with=(f"pretrained={fp32_ckpt}",))
            with cbp.latent_weights():
                latent_acc = evaluate(cfg, run_dir, module, datamodule)
        else:
            cbp.quantize_post_training(module)
            latent_acc = fp32_acc  # ptq's latent weights are the pretrained ones
        cbp_result = cbp.result()  # baked
        quant_acc = evaluate(cfg, run_dir, module, datamodule)
        memory = weight_memory(module, cbp_result.layer_names, cbp_result.bits)
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        packed = pack_state_dict(state, cbp_result.levels, cbp_result.bits)
        _write_rank_zero(lambda path: torch.save(state, path), run_dir / "quantized.pt")
        _write_rank_zero(lambda path: torch.save(packed, path), run_dir / "quantized_packed.pt")
        levels = network_levels(cbp_result.levels)
        summary["deploy"] = _write_deployment(cfg, module, levels, run_dir)
        hardware["quantized"] = _hardware(cfg, module, datamodule, dict.fromkeys(levels, cbp_result.bits))
        parameters = {n for n, _ in module.named_parameters()}
        summary.update(
            quant_acc=quant_acc, acc_delta=quant_acc - fp32_acc, latent_acc=latent_acc,
            scale=cbp.scale_rule, cfs_final=cbp_result.cfs,
            cfs_start=cbp_result.cfs_start,
            levels_ok=cbp_result.levels_ok, bits_per_weight=cbp_result.bits,
            weight_memory_bytes=memory.bytes, fp32_weight_memory_bytes=memory.fp32_bytes,
            memory_ratio=memory.ratio, packed_payload_bytes=packed_payload_bytes(packed, parameters),
            g_final=cbp_result.g_final, epochs_cbp=int(cfg.method.cbp.epochs) if fine_tune else 0,
            quantized_layers=cbp_result.layer_names,
            cbp_checkpoint=str(run_dir / "checkpoints" / "cbp.ckpt") if fine_tune else None,
            history=cbp_result.history,
            trace=cbp_result.trace,
        )
    unchanged = not quantize and cfg.quant.algorithm != FP32_FINETUNE  # the FP32 network itself
    summary["val_acc"] = (fp32_val_acc if unchanged or not validate
                          else evaluate(cfg, run_dir, module, datamodule, "val"))
    final = hardware.get("quantized", hardware["fp32"])  # the network the run leaves behind
    summary.update(synops=final["synops"], energy_uj_fp32=hardware["fp32"]["energy_uj"],
                   energy_uj=final["energy_uj"], hardware=hardware)
    summary["precision"] = precision  # as Lightning ran it (the last stage that trained)
    summary["wall_time_s"] = time.time() - start
    summary["environment"] = run_environment()
    text = json.dumps(summary, indent=2)
    _write_rank_zero(lambda path: path.write_text(text), run_dir / "summary.json")
    if rank_zero_only.rank == 0:
        log_result(cfg, run_dir, summary)
    return summary


def run_environment() -> dict[str, Any]:
    """What a run's numbers depend on beyond its config: the PyTorch version, its thread count (a
    float sum's order, so the trained weights, change with it: a run is reproduced bit for bit
    only at the same count), the CPU and the GPU if there is one."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def _hardware(cfg: DictConfig, module: L.LightningModule, datamodule: L.LightningDataModule,
              bits: dict[str, int] | None) -> dict[str, Any]:
    """Spike rates, SynOps, energy per inference (``cbpqsnn.deploy.metrics``) on the first
    ``hardware.samples`` test inputs, time-first as the network runs them (event batches arrive
    batch-first); ``bits``: the quantized layers (inside ``module.net``)."""
    inputs = [module.time_first(x) for x in first_test_inputs(datamodule, int(cfg.hardware.samples))]
    return hardware_metrics(module.net, inputs, cfg.hardware.energy_pj, bits)


def _write_deployment(cfg: DictConfig, module: L.LightningModule, levels: dict[str, torch.Tensor] | None,
                      run_dir: Path) -> dict[str, Any]:
    """``model.nir`` / ``model_int.npz`` where the network has a mapping (global rank 0 only)."""
    if rank_zero_only.rank != 0:
        return {}
    return write_deployment(module.net, levels, int(getattr(module.net, "T", cfg.T)), run_dir)


def _write_rank_zero(write: Callable[[Path], Any], path: Path) -> None:
    """``write`` to a temporary name next to ``path``, then rename (atomic); global rank 0 only."""
    if rank_zero_only.rank != 0:
        return
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
