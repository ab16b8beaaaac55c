"""Command line, quiet set-up and trainer shared by the step-timing benchmarks (``cbp_step.py``,
``data_vs_compute.py``, ``setting_step.py``)."""

from __future__ import annotations

import argparse
import logging
import warnings

import lightning as L
import torch


def parse_step_args(doc: str, extra: dict[str, str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """``--batches``, ``--rounds``, ``--threads``, the ``extra`` string options (name: default) and
    the Hydra overrides after them; sets the thread count and silences warnings and Lightning's
    info lines."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    for name, default in (extra or {}).items():
        parser.add_argument(name, default=default)
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    return args, overrides


def step_trainer(cfg, stage, batches: int, callbacks: list) -> L.Trainer:
    """A quiet one-epoch CPU trainer of ``batches`` steps with the run's precision
    (``trainer.precision``) and the stage's gradient clipping, as ``src/train.py`` trains."""
    return L.Trainer(max_epochs=1, limit_train_batches=batches, limit_val_batches=0,
                     accelerator="cpu", precision=cfg.trainer.precision, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, callbacks=callbacks,
                     gradient_clip_val=stage.gradient_clip_val,
                     gradient_clip_algorithm=stage.gradient_clip_algorithm)
