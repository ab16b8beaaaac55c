"""Shared test helpers: compose the project's Hydra config without running Hydra's CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ["WANDB_MODE"] = "disabled"  # tests never talk to W&B
os.environ.setdefault("CBPQSNN_ROOT", str(ROOT))

# settings that make a pipeline run tiny: a few batches per stage, no progress bar, CSV only
TINY = [
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "method.pretrain.epochs=1",
    "method.cbp.epochs=2",
    "hardware.samples=32",  # the spike-rate / SynOps pass: 512 test inputs cost more than the training
    "data.datamodule.eval_batch_size=100",  # limit_*_batches=1: one batch of 100 inputs per evaluation
]


def compose(overrides: list[str] | None = None):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides or []))


@pytest.fixture
def tiny_cfg():
    def make(*overrides: str):
        return compose([*TINY, *overrides])

    return make
