"""Re-evaluating a finished run of ``src/train.py`` from its run folder.

A run folder holds ``.hydra/config.yaml`` (the composed config) and the artifacts written by
:func:`cbpqsnn.pipeline.run`. :func:`evaluate_run` rebuilds the datamodule and the network from
that config, loads one set of weights and measures the test accuracy with
:func:`cbpqsnn.builders.evaluate`:

* ``quantized``: ``quantized.pt``, the plain baked ``state_dict`` (strict load);
* ``packed``: ``quantized_packed.pt``, restored with :func:`cbpqsnn.quant.export.unpack_state_dict`;
* ``fp32``: ``checkpoints/fp32.ckpt`` via :func:`cbpqsnn.checkpoints.load_pretrained` (a run that
  started from ``pretrained=<ckpt>`` has no own ``fp32.ckpt``: that checkpoint is used instead),
  then the method's ``prepare_stage("cbp")`` as in the pipeline, so a calib run's FP32 accuracy is
  the converted SNN's (its ``fp32_acc``), not the ANN's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from cbpqsnn.builders import build_datamodule, build_module, evaluate
from cbpqsnn.checkpoints import load_pretrained, read_checkpoint
from cbpqsnn.quant.callback import FP32_ALGORITHMS, FP32_FINETUNE
from cbpqsnn.quant.export import unpack_state_dict

WEIGHTS = ("quantized", "fp32", "packed")
CONFIG_FILE = Path(".hydra") / "config.yaml"
WEIGHT_FILES = {
    "quantized": Path("quantized.pt"),
    "packed": Path("quantized_packed.pt"),
    "fp32": Path("checkpoints") / "fp32.ckpt",
}
# summary.json key holding the accuracy the run measured for each kind of weights
SUMMARY_KEYS = {"quantized": "quant_acc", "packed": "quant_acc", "fp32": "fp32_acc"}


def load_run_config(run_dir: str | Path) -> DictConfig:
    """The composed config of a run folder (``<run_dir>/.hydra/config.yaml``), unresolved.

    Raises ``FileNotFoundError`` naming the path if the folder or its config does not exist.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} does not exist: {run_dir} is not a run folder of src/train.py "
            "(expected the Hydra run folder, e.g. logs/runs/<date>/<time>_<run_name>)"
        )
    cfg = OmegaConf.load(config_path)
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{config_path} is not a mapping config")
    return cfg


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """``<run_dir>/summary.json`` as a dict, or ``None`` if the run wrote none (it failed)."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def recorded_accuracy(run_dir: str | Path, weights: str = "quantized") -> float | None:
    """The test accuracy (percent) ``summary.json`` records for ``weights``, if there is one."""
    summary = read_summary(run_dir)
    if summary is None:
        return None
    value = summary.get(SUMMARY_KEYS[_check_weights(weights)])
    return None if value is None else float(value)


def weights_path(run_dir: str | Path, weights: str, cfg: DictConfig | None = None) -> Path:
    """The file that holds ``weights`` for a run folder; raises ``FileNotFoundError`` naming it."""
    weights = _check_weights(weights)
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir) if cfg is None else cfg
    path = run_dir / WEIGHT_FILES[weights]
    if path.is_file():
        return path
    fp32_only = cfg.quant.algorithm in FP32_ALGORITHMS
    if weights == "fp32":
        pretrained = cfg.get("pretrained")
        if pretrained:
            # the run loaded this checkpoint instead of pretraining, so it wrote no fp32.ckpt
            if Path(pretrained).is_file():
                return Path(pretrained)
            raise FileNotFoundError(
                f"weights file not found: {path}, nor the checkpoint the run started from "
                f"(pretrained={pretrained})"
            )
        raise FileNotFoundError(
            f"weights file not found: {path} (the run may have failed before the end of its "
            "pretraining stage)"
        )
    if fp32_only:
        hint = (f"this run is fp32-only (quant={cfg.quant.name}); fp32-only runs have no "
                f"{WEIGHT_FILES[weights]}: use weights='fp32' (--weights fp32)")
        if cfg.quant.algorithm == FP32_FINETUNE:
            hint += (" for the network it started from; its fine-tuned FP32 weights are "
                     "checkpoints/cbp.ckpt, their accuracy summary.json's quant_acc (not re-evaluated here)")
    else:
        hint = ("the run may have failed or been interrupted before baking; fp32-only runs "
                f"have no {WEIGHT_FILES[weights]}")
    raise FileNotFoundError(f"weights file not found: {path}; {hint}")


def load_weights(module: torch.nn.Module, run_dir: str | Path, weights: str,
                 cfg: DictConfig | None = None) -> Path:
    """Load ``weights`` of the run folder into ``module``; returns the file it came from."""
    weights = _check_weights(weights)
    path = weights_path(run_dir, weights, cfg)
    if weights == "fp32":
        load_pretrained(module, path)
        return path
    payload = read_checkpoint(path)  # weights only; says plainly what a foreign file is
    if weights == "packed":
        try:
            state = unpack_state_dict(payload)
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a packed export of pack_state_dict: {err!r}") from err
    else:
        state = payload
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state_dict of tensors")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{path} does not match the network the run config builds:\n{err}") from err
    return path


def evaluate_run(run_dir: str | Path, weights: str = "quantized",
                 limit_test_batches: int | float | None = None, *,
                 progress_bar: bool = False) -> float:
    """Test accuracy (percent) of a finished run folder of ``src/train.py`` with ``weights``.

    ``weights`` is ``"quantized"`` (``quantized.pt``), ``"packed"`` (``quantized_packed.pt``) or
    ``"fp32"`` (``checkpoints/fp32.ckpt``, or the run's ``pretrained`` checkpoint when it had
    none of its own). ``limit_test_batches`` overrides ``trainer.limit_test_batches`` of the
    run's config; ``None`` keeps the run's value, so the result is comparable with the accuracy
    in ``summary.json``. Raises ``FileNotFoundError`` naming the missing folder/config/weights
    file and ``ValueError`` for an unknown ``weights`` or weights that do not fit the network.
    """
    cfg, datamodule, module = load_run_module(run_dir, weights)
    cfg.trainer.enable_progress_bar = bool(progress_bar)
    if limit_test_batches is not None:
        cfg.trainer.limit_test_batches = limit_test_batches
    return evaluate(cfg, Path(run_dir), module, datamodule)


def load_run_module(run_dir: str | Path, weights: str = "quantized"
                    ) -> tuple[DictConfig, L.LightningDataModule, L.LightningModule]:
    """The run's config (set to one process), datamodule and network with ``weights`` loaded, in
    eval mode, as the pipeline measured it (see :func:`evaluate_run` for ``weights``)."""
    weights = _check_weights(weights)
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    weights_path(run_dir, weights, cfg)  # fail on a missing file before building anything
    # one process, whatever the run trained on (a DDP run's config would start more processes)
    cfg.trainer.devices, cfg.trainer.strategy, cfg.trainer.num_nodes = 1, "auto", 1
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    load_weights(module, run_dir, weights, cfg)
    if weights == "fp32":
        # as the pipeline does before measuring fp32_acc (calib: ANN -> calibrated SNN)
        module.prepare_stage("cbp", datamodule)
    module.eval()
    return cfg, datamodule, module


def _check_weights(weights: str) -> str:
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; valid choices: {list(WEIGHTS)}")
    return weights
