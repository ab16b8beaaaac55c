"""Loggers for one stage of a run: CSV always; W&B offline by default, online by one override."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig, OmegaConf

WANDB_MODES = ("offline", "online", "disabled")


def run_tags(cfg: DictConfig) -> list[str]:
    """W&B tags that line runs up in a dashboard: method, data, model, quant (and algorithm)."""
    return [f"method:{cfg.method.name}", f"data:{cfg.data.name}", f"model:{cfg.model.name}",
            f"quant:{cfg.quant.name}", f"algorithm:{cfg.quant.algorithm}"]


def make_loggers(cfg: DictConfig, run_dir: Path, stage: str) -> list[Logger]:
    loggers: list[Logger] = []
    if cfg.logger.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=stage))
    wandb_cfg = cfg.logger.wandb
    if wandb_cfg.enabled:
        mode = os.environ.get("WANDB_MODE", wandb_cfg.mode)
        if mode not in WANDB_MODES:
            raise ValueError(f"unknown W&B mode {mode!r}; valid choices: {list(WANDB_MODES)}")
        if mode != "disabled":
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(
                project=wandb_cfg.project, entity=wandb_cfg.entity, mode=mode,
                name=f"{cfg.run_name}-{stage}", group=wandb_cfg.group or cfg.row,
                job_type=stage, tags=run_tags(cfg), save_dir=str(run_dir),
                config=flat_config(cfg), settings=_wandb_settings(),
            ))
    return loggers


def finish_loggers(loggers: list[Logger]) -> None:
    """Close the stage's W&B run so the next stage (or multirun job) starts a fresh one."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()


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
