"""Loggers for one stage of a run: CSV always; W&B offline by default, online by one override.

A W&B run that cannot start (online without an API key, no network) stops the run before its
stage trains, with :class:`LoggerError` naming the other choices; closing W&B runs never raises
(a failure there is reported as a warning, so it cannot mask the error that ended a stage).

A resumed stage keeps its CSV rows: Lightning's CSVLogger deletes an existing ``metrics.csv`` when it
starts, so the rows of the epochs the checkpoint holds are read first and written back."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig, OmegaConf

WANDB_MODES = ("offline", "online", "disabled")
OTHER_CHOICES = ("log offline instead (WANDB_MODE=offline; `wandb sync` uploads the run later) or to "
                 "CSV only (logger=csv); online needs `wandb login` or WANDB_API_KEY")
log = logging.getLogger(__name__)


class LoggerError(RuntimeError):
    """A logger the config asks for could not start; the message says what to choose instead."""


def run_tags(cfg: DictConfig) -> list[str]:
    """W&B tags that line runs up in a dashboard: method, data, model, quant, algorithm (and the
    variant, where the run has one)."""
    variant = cfg.get("variant")
    return [f"method:{cfg.method.name}", f"data:{cfg.data.name}", f"model:{cfg.model.name}",
            f"quant:{cfg.quant.name}", f"algorithm:{cfg.quant.algorithm}",
            *([f"variant:{variant}"] if variant else [])]


def _wandb_mode(cfg: DictConfig) -> str | None:
    """The W&B mode of this run (``WANDB_MODE`` wins over the config), None when W&B is off."""
    if not cfg.logger.wandb.enabled:
        return None
    mode = os.environ.get("WANDB_MODE", cfg.logger.wandb.mode)
    if mode not in WANDB_MODES:
        raise ValueError(f"unknown W&B mode {mode!r}; valid choices: {list(WANDB_MODES)}")
    return None if mode == "disabled" else mode


def _wandb_run_args(cfg: DictConfig, job: str) -> dict[str, Any]:
    """What every W&B run of this experiment shares (one run per stage, one for the result)."""
    wandb_cfg = cfg.logger.wandb
    return {"project": wandb_cfg.project, "entity": wandb_cfg.entity, "name": f"{cfg.run_name}-{job}",
            "group": wandb_cfg.group or cfg.row, "job_type": job, "tags": run_tags(cfg),
            "config": flat_config(cfg), "settings": _wandb_settings()}


def make_loggers(cfg: DictConfig, run_dir: Path, stage: str,
                 resumed_epochs: int | None = None) -> list[Logger]:
    """The stage's loggers; ``resumed_epochs``: the number of epochs the checkpoint a resumed stage
    continues from has finished (their CSV rows are kept, later ones were not saved)."""
    loggers: list[Logger] = []
    if cfg.logger.csv:
        loggers.append(_csv_logger(run_dir, stage, resumed_epochs))
    mode = _wandb_mode(cfg)
    if mode is not None:
        from lightning.pytorch.loggers import WandbLogger

        wandb_logger = WandbLogger(mode=mode, save_dir=str(run_dir), **_wandb_run_args(cfg, stage))
        try:
            _ = wandb_logger.experiment  # start the W&B run now (rank 0), not inside trainer.fit
        except Exception as err:  # noqa: BLE001 - W&B fails in many ways (key, network, server)
            finish_loggers(loggers)
            raise LoggerError(f"W&B ({mode}) could not start: {type(err).__name__}: {str(err).rstrip('.')}. "
                              f"Either {OTHER_CHOICES}") from err
        loggers.append(wandb_logger)
    return loggers


def _csv_logger(run_dir: Path, stage: str, resumed_epochs: int | None) -> CSVLogger:
    logger = CSVLogger(save_dir=str(run_dir), name="csv", version=stage)
    path = Path(logger.log_dir) / "metrics.csv"
    if resumed_epochs is None or not path.is_file():
        return logger
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        header = list(reader.fieldnames or [])
        kept = [row for row in reader if row.get("epoch") and int(row["epoch"]) < resumed_epochs]
    writer = logger.experiment  # starting it deletes the file (rank 0; a no-op elsewhere)
    if hasattr(writer, "metrics"):
        writer.metrics_keys = sorted(header)
        writer.metrics = kept + writer.metrics
    return logger


def log_result(cfg: DictConfig, run_dir: Path, summary: dict[str, Any]) -> None:
    """The run's final numbers (every scalar of ``summary.json``: accuracies, delta, latent
    accuracy, memory ratio, bits, CFS, ...) as the summary of one W&B run (job type ``result``),
    with the row, level set, algorithm and seed as top-level config keys, so that a W&B table or
    parallel-coordinates view of a sweep compares what ``src/report.py`` compares; and the run's
    ``environment`` (PyTorch, threads, CPU, GPU: what reproducing it needs) as config too."""
    mode = _wandb_mode(cfg)
    if mode is None:
        return
    import wandb

    args = _wandb_run_args(cfg, "result")
    args["config"] = {**args["config"], "row": cfg.row, "level_set": cfg.quant.name,
                      "levels": summary.get("levels"), "algorithm": cfg.quant.algorithm,
                      "variant": cfg.get("variant"), "seed": int(cfg.seed),
                      "environment": summary.get("environment")}
    try:
        run = wandb.init(mode=mode, dir=str(run_dir), **args)
        try:
            run.summary.update({k: v for k, v in summary.items()
                                if isinstance(v, (int, float, str, bool)) or v is None})
        finally:
            run.finish()
    except Exception as err:  # noqa: BLE001 - summary.json is written; W&B only mirrors it
        log.warning("W&B did not receive the result (%s: %s); summary.json holds it. Next time %s",
                    type(err).__name__, err, OTHER_CHOICES)


def finish_loggers(loggers: list[Logger]) -> None:
    """Close the stage's W&B run so the next stage (or multirun job) starts a fresh one. Only a
    run that started is closed, and a failure is a warning: this runs in a ``finally`` block,
    where raising would mask the error that ended the stage."""
    for logger in loggers:
        run = getattr(logger, "_experiment", None)
        if type(logger).__name__ == "WandbLogger" and run is not None:
            try:
                run.finish()
            except Exception as err:  # noqa: BLE001
                log.warning("W&B run did not close cleanly (%s: %s)", type(err).__name__, err)


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}/")
        else:
            flat[prefix.rstrip("/")] = node

    walk(container, "")
    return flat


def _wandb_settings() -> Any:
    import wandb

    # never block on the console or an account prompt
    return wandb.Settings(silent=True, console="off")
