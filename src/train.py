"""Hydra entry point: ``python src/train.py [group=option ...] [key=value ...]``.

Composes ``conf/train.yaml`` with the command-line overrides and runs the pipeline
(pretrain -> FP32 eval -> CBP -> bake -> quantized eval -> summary) in the Hydra run folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CBPQSNN_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # runs from a plain checkout too (no `pip install -e .`)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

if TYPE_CHECKING:
    from cbpqsnn.pipeline import RunInterrupted


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
    from lightning.pytorch.utilities import rank_zero_only
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from cbpqsnn import stopping
    from cbpqsnn.config_check import ConfigError
    from cbpqsnn.loggers import LoggerError
    from cbpqsnn.pipeline import RunInterrupted, run
    from cbpqsnn.reporting import print_summary

    stopping.install()
    try:
        summary = run(cfg, HydraConfig.get().runtime.output_dir)
    except ConfigError as err:  # the message says what to write instead; no traceback needed
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except LoggerError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except RunInterrupted as stop:
        if rank_zero_only.rank == 0:  # under DDP every rank stops; one message
            print(f"\n{stop}.\n{resume_advice(stop)}", file=sys.stderr)
        sys.exit(stopping.SIGTERM_EXIT if stop.signal == "SIGTERM" else 130)
    except (SIGTERMException, KeyboardInterrupt) as stop:  # between training stages
        if rank_zero_only.rank == 0:
            print(f"\nstopped by {'SIGTERM' if isinstance(stop, SIGTERMException) else 'Ctrl-C'} "
                  "outside a training stage; checkpoints/ of the run folder holds the stages that "
                  "finished (pretrained=<its fp32.ckpt> skips pretraining)", file=sys.stderr)
        sys.exit(stopping.SIGTERM_EXIT if isinstance(stop, SIGTERMException) else 130)

    if rank_zero_only.rank == 0:  # under DDP every rank runs this; one table
        print_summary(summary, HydraConfig.get().runtime.output_dir)
        logging.getLogger(__name__).info("summary: %s", json.dumps(summary))
    return summary["quant_acc"]


def resume_advice(stop: RunInterrupted) -> str:
    """The command that continues an interrupted run: this run's overrides, with the stage's
    checkpoint as ``resume=`` (and ``pretrained=`` for the CBP stage)."""
    import shlex

    if stop.resume is None:
        return "Nothing to resume from: run the same command again."
    kept = [o for o in HydraConfig.get().overrides.task if not o.startswith(("pretrained=", "resume="))]
    script = os.path.relpath(__file__)
    return "To continue it:\n  " + shlex.join(["python", script, *kept, *stop.resume])


if __name__ == "__main__":
    main()
