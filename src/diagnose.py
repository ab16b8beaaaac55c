"""Where a quantized run's fine-tuning left its weights: per quantized layer, the latents' size
against the level scale, the task's Adam step, CBP's multipliers, the share of weights the
constraint holds against the task, and the share whose level changed since the start
(``cbpqsnn.diagnostics``):

    python src/diagnose.py <run folder> [--start FP32 weights] [--json]

Reads ``<run>/checkpoints/cbp.ckpt`` and the run's ``.hydra/config.yaml`` (the constraint step,
and the FP32 checkpoint it started from, unless ``--start`` names another).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runs from a plain checkout too


def main(argv: list[str] | None = None) -> int:
    from omegaconf import OmegaConf
    from rich.console import Console
    from rich.table import Table

    from cbpqsnn.diagnostics import diagnose

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a quantized run's folder (holds checkpoints/cbp.ckpt)")
    parser.add_argument("--start", type=Path, default=None,
                        help="the FP32 weights the stage started from (default: the run's pretrained)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    checkpoint = args.run / "checkpoints" / "cbp.ckpt"
    config_path = args.run / ".hydra" / "config.yaml"
    if not checkpoint.is_file() or not config_path.is_file():
        print(f"error: {args.run} is not a quantized run's folder (it needs checkpoints/cbp.ckpt "
              f"and .hydra/config.yaml, as src/train.py writes them)", file=sys.stderr)
        return 1
    config = OmegaConf.load(config_path)
    step = OmegaConf.select(config, "method.cbp.callback.constraint_step", default="coupled")
    start = args.start or OmegaConf.select(config, "pretrained", default=None)
    if start is not None and not Path(start).is_file():
        print(f"note: the start weights {start} are gone; 'changed' is left out", file=sys.stderr)
        start = None
    try:
        rows = diagnose(checkpoint, start, constraint_step=step)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    table = Table(title=f"{args.run} (constraint step: {step})")
    columns = ("layer", "latent_mean_abs", "scale", "task_step", "multiplier_mean",
               "multiplier_max", "held", "held_pulled", "changed")
    for column in columns:
        table.add_column(column.replace("_", " "), no_wrap=True)
    for row in rows:
        values = row.as_dict()
        table.add_row(*(values[c] if isinstance(values[c], str) else
                        "-" if values[c] is None else f"{values[c]:.4g}" for c in columns))
    Console(width=max(Console().width, 120)).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
