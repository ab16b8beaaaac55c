"""Compare quantization algorithms from one FP32 network per seed (protocol: cbpqsnn/comparison.py):

    python src/compare.py [hydra overrides, e.g. experiment=sg_nmnist] --out logs/compare/<name>
        [--seeds 1,2,3] [--levels binary,ternary] [--algorithms ptq,ste,scaled_ste,lsq,cbp]
        [--parallel N] [--threads N] [--variant NAME=KEY=VALUE ...] [--reference]
        [--tune conf/tuning/<grid>.yaml]
    python src/report.py logs/compare/<name>      # the table, the side-by-side table, the plots

Runs, per seed, ``quant=fp32`` and then every (level set, algorithm) pair from its checkpoint, each
as a ``src/train.py`` process; finished jobs are kept when the command runs again. ``--parallel N``
runs up to N jobs side by side (a seed's fine-tuning jobs wait for its FP32 job): on 2 cores, two
1-thread jobs did 1.2x the work of one 2-thread job. Every job, the FP32 one too, gets ``--threads``
threads (default: ``OMP_NUM_THREADS`` if set, else cores / N): a seed's FP32 network is reproduced
bit for bit only at the thread count it was trained with (``summary.json``: ``environment``).
``--variant slow_window=method.cbp.callback.p_max=4`` runs the pairs with that setting instead,
as ``cbp@slow_window`` beside the plain jobs already in the folder.
``--reference`` adds, per seed, the FP32 network fine-tuned as long with nothing quantized
(``fp32_finetune``): the report then gives every algorithm's accuracy against it, paired by seed.
``--tune GRID`` runs the fair tuning protocol (cbpqsnn/tuning.py): every algorithm tries the same
number of settings on the first seed's validation split, and only each one's chosen setting runs on
every seed (``<out>/tuning.json`` records the choice).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CBPQSNN_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from cbpqsnn.comparison import check_checkpoints, check_jobs, job_threads, parse_variants, plan, run_jobs
    from cbpqsnn.config_check import ConfigError
    from cbpqsnn.tuning import (
        check_validation_split,
        choose,
        final_jobs,
        load_grid,
        reuse_tuning_runs,
        split_tuned,
        tuning_jobs,
        write_choice,
    )

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides shared by every job")
    parser.add_argument("--out", type=Path, required=True, help="the comparison folder")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--levels", default="binary,ternary")
    parser.add_argument("--algorithms", default="ptq,ste,scaled_ste,lsq,cbp")
    parser.add_argument("--parallel", type=int, default=1, help="jobs run side by side (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of every job (default: OMP_NUM_THREADS, else cores / --parallel)")
    parser.add_argument("--reference", action="store_true",
                        help="also fine-tune each seed's FP32 network as long, unquantized: the "
                             "equal-training reference the report compares every algorithm with")
    parser.add_argument("--tune", type=Path, default=None, metavar="GRID",
                        help="tune every algorithm on the validation split over the settings of this "
                             "grid file first, then run each one's chosen setting on every seed")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE",
                        help="fine-tune every pair with these settings instead, from the same FP32 "
                             "networks, as <algorithm>@NAME (repeatable; see cbpqsnn/comparison.py)")
    args = parser.parse_args(argv)
    try:
        if args.parallel < 1:
            raise ValueError(f"--parallel must be at least 1, got {args.parallel}")
        threads = job_threads(args.parallel, args.threads)
        seeds = [int(s) for s in _list(args.seeds)]
        algorithms, out = _list(args.algorithms), args.out.resolve()
        if args.tune and args.variant:
            raise ValueError("--tune chooses each algorithm's setting itself; drop --variant")
        tuned, untuned = split_tuned(algorithms) if args.tune else ([], algorithms)
        grid = load_grid(args.tune, tuned) if args.tune else None
        jobs, skipped = plan(args.overrides, seeds, _list(args.levels), untuned, out,
                             parse_variants(args.variant), args.reference)
        tuning = tuning_jobs(args.overrides, seeds[0], _list(args.levels), grid, out) if grid else []
        check_checkpoints([*jobs, *tuning])
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            check_jobs([*jobs, *tuning], lambda overrides: compose("train", overrides=overrides))
            if tuning:
                check_validation_split(compose("train", overrides=list(tuning[0].overrides)))
    except (ValueError, ConfigError, HydraException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in skipped:
        print(f"skipped {line}")
    print(f"{threads} thread(s) per job")
    train_py = ROOT / "src" / "train.py"
    if grid:
        run_jobs([*jobs, *tuning], train_py, parallel=args.parallel, threads=threads)
        chosen = write_choice(choose(tuning), out)
        final = final_jobs(args.overrides, seeds, chosen, grid, out)
        reuse_tuning_runs(final, tuning)
        jobs = [*jobs, *final]
    run_jobs(jobs, train_py, parallel=args.parallel, threads=threads)
    print(f"{len(jobs)} jobs in {args.out}; report: python src/report.py {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
