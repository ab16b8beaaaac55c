"""Turn a sweep folder into a results table and plots:

    python src/report.py logs/multirun/<date>/<time> [--out DIR] [--no-plots]

Writes ``report.md``, ``report.csv`` (row, quant, algorithm, seeds, FP32 / quantized accuracy,
delta, pre-bake (latent-weight) accuracy, bake cost, memory ratio; mean and std over seeds; where
several algorithms ran on one row and level set, a side-by-side table of them), ``accuracy.png``,
``cbp_curves.png``, ``cfs_by_algorithm.png`` (several algorithms) and one ``weights_<run>.png`` per
quantized run into the sweep folder (or ``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runs from a plain checkout too


def main(argv: list[str] | None = None) -> int:
    from cbpqsnn.reporting import report_sweep

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (or any folder of runs)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: sweep_dir)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    try:
        result = report_sweep(args.sweep_dir, args.out, plots=not args.no_plots)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(result["markdown"].read_text())
    print(f"{result['runs']} runs -> {result['markdown']}, {result['csv']}, {len(result['plots'])} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
