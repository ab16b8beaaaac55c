"""Hydra entry point: ``python src/train.py [group=option ...] [key=value ...]``.

Composes ``conf/train.yaml`` with the command-line overrides and runs the pipeline
(pretrain -> FP32 eval -> CBP -> bake -> quantized eval -> summary) in the Hydra run folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CBPQSNN_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # runs from a plain checkout too (no `pip install -e .`)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="train")
def main(cfg: DictConfig) -> float:
    import logging

    # Lightning's startup tips and device lines are noise next to the run's own table
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    from cbpqsnn.pipeline import run
    from cbpqsnn.report import print_summary

    summary = run(cfg, HydraConfig.get().runtime.output_dir)
    print_summary(summary, HydraConfig.get().runtime.output_dir)
    return summary["quant_acc"]


if __name__ == "__main__":
    main()
