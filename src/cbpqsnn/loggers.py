"""Loggers for one stage of a run: CSV always; W&B offline by default, online by one override."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig, OmegaConf

WANDB_MODES = ("offline", "online", "disabled")


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


def make_loggers(cfg: DictConfig, run_dir: Path, stage: str) -> list[Logger]:
    loggers: list[Logger] = []
    if cfg.logger.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=stage))
    mode = _wandb_mode(cfg)
    if mode is not None:
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(mode=mode, save_dir=str(run_dir),
                                   **_wandb_run_args(cfg, stage)))
    return loggers


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
                      "algorithm": cfg.quant.algorithm, "variant": cfg.get("variant"),
                      "seed": int(cfg.seed), "environment": summary.get("environment")}
    run = wandb.init(mode=mode, dir=str(run_dir), **args)
    try:
        run.summary.update({k: v for k, v in summary.items()
                            if isinstance(v, (int, float, str, bool)) or v is None})
    finally:
        run.finish()


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
