"""Is CBP worth it? Every quantization algorithm fine-tuned from the same FP32 network, side by side.

The protocol (``src/compare.py``; report with ``src/report.py <out>``):

- per seed, one FP32 run (``quant=fp32``) of the experiment; every (level set, algorithm) job of
  that seed starts from its checkpoint (``pretrained=``), so all algorithms see the same weights;
- every algorithm fine-tunes for the experiment's CBP-stage epochs with the same weight optimizer,
  learning rate, scheduler, batch size and clipping (``method.cbp.*``);
- CBP's own LR drop when its window reaches ``lr_drop_at_g`` is switched off for every job
  (``method.cbp.callback.lr_drop_at_g=null``): it is driven by CBP's state, which the baselines
  do not have, so the stage's scheduler alone sets the learning rate of every algorithm. (Mirroring
  it instead would make each baseline depend on a CBP run of the same seed.) Where the experiment's
  stage is short enough that g never reaches ``lr_drop_at_g`` -- the ``*_mnist5k`` rows -- this
  changes nothing; for the paper rows it is a departure from the published CBP recipe, so a
  comparison's CBP row is not the paper number;
- pairs an algorithm does not define (``lsq`` on binary or the shift sets, ``scaled_ste`` above
  three levels) are skipped, and said so.

Each job is a ``src/train.py`` process in ``<out>/seed<s>/<level set>_<algorithm>/`` (``fp32`` for
the FP32 run); a job whose ``summary.json`` exists is not run again, so an interrupted comparison
continues where it stopped. Every job's config is composed and checked before the first one runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from cbpqsnn.config_check import check_config
from cbpqsnn.quant.baselines import ALGORITHMS, check_algorithm
from cbpqsnn.quant.levels import level_factors

FAIR = ["method.cbp.callback.lr_drop_at_g=null"]  # the protocol's one override (docstring)


@dataclass(frozen=True)
class Job:
    seed: int
    name: str  # "fp32" or "<level set>_<algorithm>"
    overrides: tuple[str, ...]  # without pretrained= (the FP32 job writes that checkpoint)
    run_dir: Path

    @property
    def fp32_checkpoint(self) -> Path:
        return self.run_dir.parent / "fp32" / "checkpoints" / "fp32.ckpt"

    def command(self, train_py: Path) -> list[str]:
        pretrained = [] if self.name == "fp32" else [f"pretrained={self.fp32_checkpoint}"]
        return [sys.executable, str(train_py), *self.overrides, *pretrained,
                f"hydra.run.dir={self.run_dir}"]


def plan(overrides: Sequence[str], seeds: Sequence[int], level_sets: Sequence[str],
         algorithms: Sequence[str], out: Path) -> tuple[list[Job], list[str]]:
    """The jobs of a comparison (FP32 first in every seed) and the skipped pairs, with why."""
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown:
        raise ValueError(f"unknown algorithm(s) {unknown}; valid choices: {list(ALGORITHMS)}")
    jobs, skipped = [], []
    for seed in seeds:
        folder = out / f"seed{seed}"
        jobs.append(Job(seed, "fp32", (*overrides, "quant=fp32", f"seed={seed}"), folder / "fp32"))
        for level_set in level_sets:
            for algorithm in algorithms:
                try:
                    check_algorithm(algorithm, level_factors(level_set))
                except ValueError as err:
                    if seed == seeds[0]:
                        skipped.append(f"{level_set} / {algorithm}: {err}")
                    continue
                name = f"{level_set}_{algorithm}"
                jobs.append(Job(seed, name, (*overrides, f"quant={level_set}",
                                             f"quant.algorithm={algorithm}", f"seed={seed}", *FAIR),
                                folder / name))
    return jobs, skipped


def check_jobs(jobs: Sequence[Job], compose: Callable[[list[str]], DictConfig]) -> None:
    """Compose and check every job's config (``compose(overrides) -> DictConfig``) before any
    training: a typo fails here, not after the first FP32 run."""
    for job in jobs:
        check_config(compose(list(job.overrides)))


def run_jobs(jobs: Sequence[Job], train_py: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Run the jobs in order (skipping finished ones); returns the run folders."""
    for i, job in enumerate(jobs, 1):
        if (job.run_dir / "summary.json").is_file():
            log(f"[{i}/{len(jobs)}] seed {job.seed} {job.name}: done before, kept")
            continue
        log(f"[{i}/{len(jobs)}] seed {job.seed} {job.name} -> {job.run_dir}")
        job.run_dir.mkdir(parents=True, exist_ok=True)
        with (job.run_dir / "stdout.log").open("w") as stdout:
            code = subprocess.call(job.command(train_py), stdout=stdout, stderr=subprocess.STDOUT,
                                   env=os.environ.copy())
        if code != 0:
            raise RuntimeError(f"job seed {job.seed} {job.name} failed (exit {code}); its output: "
                               f"{job.run_dir / 'stdout.log'}")
    return [job.run_dir for job in jobs]
