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
    import json
    import logging
    import warnings

    # Lightning's startup tips, device lines and two harmless warnings (an internal deprecation;
    # fp32.ckpt and cbp.ckpt sharing checkpoints/) are noise next to the run's own table
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    from cbpqsnn.config_check import ConfigError
    from cbpqsnn.pipeline import run
    from cbpqsnn.reporting import print_summary

    try:
        summary = run(cfg, HydraConfig.get().runtime.output_dir)
    except ConfigError as err:  # the message says what to write instead; no traceback needed
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:  # under DDP every rank runs this; one table
        print_summary(summary, HydraConfig.get().runtime.output_dir)
        logging.getLogger(__name__).info("summary: %s", json.dumps(summary))
    return summary["quant_acc"]


if __name__ == "__main__":
    main()
