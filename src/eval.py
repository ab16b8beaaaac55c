"""Evaluate a finished run: ``python src/eval.py <run_dir> [--weights quantized|fp32|packed]
[--batches N]``.

Rebuilds the datamodule and network from ``<run_dir>/.hydra/config.yaml``, loads the chosen
weights of the run folder and prints the test accuracy next to the one in ``summary.json``.
The logic lives in :mod:`cbpqsnn.run_folder`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CBPQSNN_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # runs from a plain checkout too (no `pip install -e .`)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the tool."""
    parser = argparse.ArgumentParser(
        prog="src/eval.py",
        description="Test accuracy of a finished run folder of src/train.py.")
    parser.add_argument("run_dir", type=Path,
                        help="the Hydra run folder (holds .hydra/config.yaml)")
    parser.add_argument("--weights", choices=("quantized", "fp32", "packed"), default="quantized",
                        help="quantized.pt (default), checkpoints/fp32.ckpt or quantized_packed.pt")
    parser.add_argument("--batches", type=int, default=None, metavar="N",
                        help="evaluate only N test batches (default: as the run did)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args(argv)
    if args.batches is not None and args.batches < 1:
        parser.error("--batches must be a positive integer")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit status (0 ok, 1 on a missing or unusable run/weights)."""
    import logging

    # Lightning's startup tips and device lines are noise next to one accuracy line
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    args = parse_args(argv)
    from cbpqsnn.run_folder import evaluate_run, load_run_config, recorded_accuracy, weights_path

    try:
        cfg = load_run_config(args.run_dir)
        source = weights_path(args.run_dir, args.weights, cfg)
        acc = evaluate_run(args.run_dir, args.weights, args.batches, progress_bar=args.progress)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    run_batches = cfg.trainer.get("limit_test_batches")
    batches = args.batches if args.batches is not None else run_batches
    scope = "all test batches" if batches is None else f"limit_test_batches={batches}"
    print(f"weights:       {args.weights} ({source})")
    print(f"test accuracy: {acc:.2f} %  ({scope})")
    recorded = recorded_accuracy(args.run_dir, args.weights)
    if recorded is None:
        print("summary.json:  none in the run folder (the run did not finish)")
    else:
        note = ""
        if batches != run_batches:
            run_scope = "all" if run_batches is None else run_batches
            note = f"  (measured with limit_test_batches={run_scope}: not the same test subset)"
        print(f"summary.json:  {recorded:.2f} %  (difference {acc - recorded:+.2f} points){note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
