"""Before a run starts: the config check (:func:`cbpqsnn.config_check.check_config`) plus what only
this machine can answer -- is the dataset on disk, can the run folder be written, is there the
accelerator and the precision the trainer asks for. :class:`Preflight` runs it as a Hydra callback
(``conf/hydra/default.yaml``) before Hydra creates a run folder: a single run is refused with exit
code 2 and nothing left on disk, and every job of a ``--multirun`` sweep is composed and checked
before the first one starts.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from cbpqsnn.config_check import ConfigError, check_config
from cbpqsnn.data.files import MissingDataError

# Lightning's precisions that need a CUDA GPU (it runs "16-mixed" as bf16-mixed on a CPU, silently)
GPU_PRECISIONS = ("16-mixed", "16")
GPU_ACCELERATORS = ("gpu", "cuda")
# launchers that run the jobs on other machines: their accelerator is not this machine's
REMOTE_LAUNCHERS = ("SlurmLauncher",)


def device_problems(trainer: dict[str, Any]) -> list[str]:
    """``trainer.accelerator`` / ``devices`` / ``precision`` this machine cannot run."""
    accelerator = str(trainer.get("accelerator", "auto"))
    devices = trainer.get("devices", 1)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    count = int(devices) if str(devices).lstrip("-").isdigit() else None
    if accelerator in GPU_ACCELERATORS and not gpus:
        return [f"trainer.accelerator={accelerator}: this machine has no GPU (torch.cuda.is_available() "
                "is false); run on the CPU with trainer=cpu"]
    on_gpu = accelerator in GPU_ACCELERATORS or (accelerator == "auto" and gpus > 0)
    problems = []
    if on_gpu and count is not None and count > gpus:
        problems.append(f"trainer.devices={devices}: this machine has {gpus} GPU(s); "
                        f"set trainer.devices={gpus} or fewer")
    if not on_gpu and count is not None and count > (cores := len(os.sched_getaffinity(0))):
        problems.append(f"trainer.devices={devices} starts {count} training processes on the CPU, "
                        f"which has {cores} core(s) for this run: they would crowd each other out; "
                        f"set trainer.devices={cores} or fewer")
    precision = str(trainer.get("precision"))
    if not on_gpu and precision in GPU_PRECISIONS:
        problems.append(f"trainer.precision={precision} needs a GPU (float16 autocast); on the CPU "
                        "Lightning would run bf16-mixed instead. Use trainer.precision=bf16-mixed or "
                        "32-true")
    return problems


def writable_problem(key: str, value: Any, folder: Path) -> str | None:
    """Why ``folder`` (set by ``key=value``) cannot be created, or None: a trial folder is made
    (and removed) in its nearest existing parent, which also catches a read-only file system."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        why = f"{existing} is not a folder"
    else:
        try:
            tempfile.TemporaryDirectory(dir=existing).cleanup()
            return None
        except OSError as err:
            why = f"cannot write in {existing}: {err.strerror}"
    return (f"{key}={value}: cannot create the run folder {folder} ({why}); set {key} to a "
            f"folder you can write, e.g. {key}={Path.home() / 'cbpqsnn-logs'}")


def data_problems(cfg: DictConfig) -> list[str]:
    """The datamodule's own message when its files are not where ``data.datamodule.root`` says
    (nothing to check when ``data.datamodule.download=true``: the run fetches them)."""
    if cfg.data.datamodule.get("download"):
        return []
    try:
        instantiate(cfg.data.datamodule).build_sets()
    except MissingDataError as err:
        return [str(err)]
    return []


def job_problems(cfg: DictConfig, run_dir: Path | None = None, run_dir_key: str = "hydra.run.dir",
                 devices: bool = True, data: bool = True,
                 data_seen: dict[str, list[str]] | None = None) -> list[str]:
    """Everything wrong with one composed job (no ``hydra`` node): its config, then -- once the
    config is valid -- the run folder (``run_dir``, set by ``run_dir_key`` unless it lies in
    ``paths.log_dir``), the devices and the data (probed once per data config in ``data_seen``)."""
    try:
        check_config(cfg)
    except ConfigError as err:
        return str(err).splitlines()[1:]
    problems = []
    if run_dir is not None:
        log_dir = Path(str(cfg.paths.log_dir))
        inside = run_dir.absolute().is_relative_to(log_dir.absolute())
        key, value = ("paths.log_dir", log_dir) if inside else (run_dir_key, run_dir)
        problems += filter(None, [writable_problem(key, value, run_dir)])
    if devices:
        problems += device_problems(OmegaConf.to_container(cfg.trainer, resolve=True))
    if data:
        seen = {} if data_seen is None else data_seen
        key = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True, default=str)
        if key not in seen:
            seen[key] = data_problems(cfg)
        problems += seen[key]
    return problems


def check_run(cfg: DictConfig, run_dir: Path | None = None, devices: bool = True,
              data: bool = True) -> None:
    """Raise :class:`ConfigError` listing every problem of one job (see :func:`job_problems`)."""
    problems = job_problems(cfg, run_dir, devices=devices, data=data)
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(_bullets(problems)))


def _bullets(problems: list[str]) -> list[str]:
    return [p if p.startswith("  - ") else f"  - {p}" for p in problems]


def _task_config(config: DictConfig) -> DictConfig:
    """The job's config as the task sees it: without the ``hydra`` node."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def _refuse(text: str) -> None:
    print(f"error: {text}", file=sys.stderr)
    sys.exit(2)


def _is_launched_rank() -> bool:
    """A DDP rank Lightning started as a copy of the command (rank 0 checked the run already)."""
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank != 0


class Preflight(Callback):
    """Hydra callback: check the run (or every job of a sweep) before any folder is made."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _is_launched_rank():
            return
        try:
            check_run(_task_config(config), Path(str(config.hydra.run.dir)))
        except ConfigError as err:
            _refuse(str(err))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return  # another sweeper draws its jobs as it goes: each is checked when it runs
        loader = GlobalHydra.instance().config_loader()
        params = config.hydra.sweeper.get("params") or {}
        arguments = [f"{k}={v}" for k, v in params.items()]
        arguments += list(config.hydra.overrides.task)
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        local = not str(config.hydra.launcher.get("_target_", "")).endswith(REMOTE_LAUNCHERS)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        lines, data_seen = [], {}
        for number, overrides in enumerate(jobs):
            task = _task_config(loader.load_sweep_config(config, list(overrides)))
            problems = job_problems(task, sweep_dir if number == 0 else None, "hydra.sweep.dir",
                                    devices=local, data_seen=data_seen)
            if problems:
                lines.append(f"  job {number} ({' '.join(overrides) or 'no overrides'}):")
                lines += [f"  {p}" for p in _bullets(problems)]
        if lines:
            _refuse(f"{len(jobs)} job(s) composed, none started; fix these:\n" + "\n".join(lines))
