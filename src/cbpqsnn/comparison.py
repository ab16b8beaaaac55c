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

The equal-training reference (``--reference``): per seed, one more job, ``fp32_finetune``
(``quant=fp32 quant.algorithm=finetune``), fine-tunes the FP32 network itself for the same stage
(epochs, optimizer, schedule) with nothing quantized. Where the FP32 checkpoint is not converged,
every algorithm's delta to FP32 mixes quantization with the stage's extra training; the report
gives each algorithm's accuracy against this reference too, paired by seed.

Each job is a ``src/train.py`` process in ``<out>/seed<s>/<level set>_<algorithm>/`` (``fp32`` for
the FP32 run); a job whose ``summary.json`` exists is not run again, and a job stopped mid-stage
resumes from its last epoch's checkpoint, so an interrupted comparison continues where it
stopped. Every job's config is composed and checked before the first one runs.
Every job runs with the same number of threads (``job_threads``), so that a seed's FP32 network
does not depend on what ran beside it (made again on the same machine, it is the same network).

Variants (``--variant NAME=OVERRIDE``, repeatable; one name may collect several overrides) try
other settings of the fine-tuning from the same FP32 networks: each (level set, algorithm) pair
runs once per variant, in ``<level set>_<algorithm>@<NAME>/``, with ``variant=NAME`` and the
variant's overrides after the protocol's (so a variant may switch CBP's LR drop back on). The report
shows ``<algorithm>@<NAME>`` as an algorithm of its own. A variant may not change what the FP32
network or the pairing depends on (the seed, experiment, model, data, T, level set, pretraining).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from cbpqsnn.config_check import check_config
from cbpqsnn.quant.baselines import ALGORITHMS, algorithm_label, check_algorithm
from cbpqsnn.quant.callback import FP32_FINETUNE
from cbpqsnn.quant.levels import level_factors

FAIR = ["method.cbp.callback.lr_drop_at_g=null"]  # the protocol's one override (docstring)
REFERENCE = f"fp32_{FP32_FINETUNE}"  # the equal-training reference's job (docstring)
# keys a variant's overrides may not set: they decide the FP32 network, the level set or the pairing
NOT_IN_VARIANTS = ("seed", "experiment", "model", "data", "T", "quant", "method.pretrain",
                   "method.module", "pretrained", "resume", "variant", "row", "hydra")


def parse_variants(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["slow=method.cbp.callback.p_max=4", "slow=...", ...]`` -> ``{"slow": [overrides]}`` (in
    order), with a clear error for a malformed spec or an override a variant may not set."""
    from cbpqsnn.config_check import VARIANT_NAME

    variants: dict[str, list[str]] = {}
    for spec in specs:
        name, _, override = spec.partition("=")
        if not VARIANT_NAME.fullmatch(name) or "=" not in override:
            raise ValueError(f"--variant {spec!r}: write NAME=KEY=VALUE, e.g. --variant "
                             "slow_window=method.cbp.callback.p_max=4 (NAME: letters, digits, _ -)")
        key = override.split("=", 1)[0].lstrip("+~")
        if any(key == k or key.startswith(k + ".") or key.startswith(k + "@") for k in NOT_IN_VARIANTS):
            raise ValueError(f"--variant {spec!r}: a variant may not set {key!r} (it decides the FP32 "
                             f"network or the pairing; not allowed: {', '.join(NOT_IN_VARIANTS)}); "
                             "give it to every job as a shared override instead")
        variants.setdefault(name, []).append(override)
    return variants


@dataclass(frozen=True)
class Job:
    seed: int
    name: str  # "fp32" or "<level set>_<algorithm>[@<variant>]"
    overrides: tuple[str, ...]  # without pretrained= (the FP32 job writes that checkpoint)
    run_dir: Path
    fp32_run: Path | None = None  # the seed's FP32 run folder (default: ``fp32`` beside this one)

    @property
    def fp32_checkpoint(self) -> Path:
        return (self.fp32_run or self.run_dir.parent / "fp32") / "checkpoints" / "fp32.ckpt"

    @property
    def stage_checkpoint(self) -> Path:
        """The checkpoint the job's own training stage writes at every epoch's end."""
        return self.run_dir / "checkpoints" / ("fp32.ckpt" if self.name == "fp32" else "cbp.ckpt")

    def command(self, train_py: Path) -> list[str]:
        """The ``src/train.py`` command; a job stopped mid-stage (its stage checkpoint exists, its
        summary not) continues from that checkpoint (``resume=``)."""
        pretrained = [] if self.name == "fp32" else [f"pretrained={self.fp32_checkpoint}"]
        resume = [f"resume={self.stage_checkpoint}"] if self.stage_checkpoint.is_file() else []
        return [sys.executable, str(train_py), *self.overrides, *pretrained, *resume,
                f"hydra.run.dir={self.run_dir}"]


def plan(overrides: Sequence[str], seeds: Sequence[int], level_sets: Sequence[str],
         algorithms: Sequence[str], out: Path,
         variants: Mapping[str, Sequence[str]] | None = None,
         reference: bool = False) -> tuple[list[Job], list[str]]:
    """The jobs of a comparison (FP32 first in every seed, then with ``reference`` the FP32
    network fine-tuned as long) and the skipped pairs, with why. With ``variants`` (name ->
    overrides), every pair runs once per variant instead of plainly."""
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown:
        raise ValueError(f"unknown algorithm(s) {unknown}; valid choices: {list(ALGORITHMS)}")
    jobs, skipped = [], []
    for seed in seeds:
        folder = out / f"seed{seed}"
        jobs.append(Job(seed, "fp32", (*overrides, "quant=fp32", f"seed={seed}"), folder / "fp32"))
        if reference:
            jobs.append(Job(seed, REFERENCE, (*overrides, "quant=fp32", f"quant.algorithm={FP32_FINETUNE}",
                                              f"seed={seed}", *FAIR), folder / REFERENCE))
        for level_set in level_sets:
            for algorithm in algorithms:
                try:
                    check_algorithm(algorithm, level_factors(level_set))
                except ValueError as err:
                    if seed == seeds[0]:
                        skipped.append(f"{level_set} / {algorithm}: {err}")
                    continue
                for variant, extra in (variants or {None: []}).items():
                    name = f"{level_set}_{algorithm_label(algorithm, variant)}"
                    tried = (f"variant={variant}", *extra) if variant else ()
                    jobs.append(Job(seed, name, (*overrides, f"quant={level_set}",
                                                 f"quant.algorithm={algorithm}", f"seed={seed}",
                                                 *FAIR, *tried), folder / name))
    return jobs, skipped


def check_jobs(jobs: Sequence[Job], compose: Callable[[list[str]], DictConfig]) -> None:
    """Compose and check every job's config (``compose(overrides) -> DictConfig``) before any
    training: a typo fails here, not after the first FP32 run."""
    for job in jobs:
        check_config(compose(list(job.overrides)))


def check_checkpoints(jobs: Sequence[Job]) -> None:
    """Before any job runs: a seed whose FP32 job is kept (its ``summary.json`` exists) but whose
    checkpoint is gone cannot start its other jobs; say so, and how to make the network again."""
    for job in jobs:
        if job.name == "fp32" or (job.run_dir / "summary.json").is_file():
            continue
        kept_fp32 = job.fp32_checkpoint.parents[1]
        if (kept_fp32 / "summary.json").is_file() and not job.fp32_checkpoint.is_file():
            recorded = json.loads((kept_fp32 / "summary.json").read_text()).get("environment", {})
            threads = recorded.get("threads")
            raise ValueError(
                f"seed {job.seed}: its FP32 run {kept_fp32} is finished but its checkpoint "
                f"{job.fp32_checkpoint} is gone, so {job.name} cannot start from it; move that folder "
                "away to train the seed's FP32 network again (the same network only at the thread "
                f"count it was trained with: {threads or 'not recorded'}; --threads)")


def job_threads(parallel: int, threads: int | None = None) -> int:
    """Threads of every job in a comparison: ``threads`` if given, else ``OMP_NUM_THREADS`` if set,
    else cores / ``parallel``. The same for every job, whatever runs beside it: a float sum's order
    depends on the thread count (a conv's weight gradient differs between 1 and 2 threads), so a
    seed's FP32 network is only reproduced, bit for bit, at the count it was trained with
    (``summary.json``'s ``environment.threads`` records it)."""
    if threads is None:
        threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // parallel))
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return threads


def job_environment(threads: int) -> dict[str, str]:
    """A job's environment: ours, with ``OMP_NUM_THREADS`` = ``threads``."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads)}


def run_jobs(jobs: Sequence[Job], train_py: Path, log: Callable[[str], None] = print,
             parallel: int = 1, threads: int | None = None) -> list[Path]:
    """Run the jobs (skipping finished ones), up to ``parallel`` at a time, each with
    ``job_threads(parallel, threads)`` threads, each seed's fine-tuning jobs only once its FP32 job
    has finished; returns the run folders. A failed job stops the launching of new ones; the
    running ones finish, then the failure is raised."""
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    env = job_environment(job_threads(parallel, threads))
    pending: list[tuple[int, Job]] = []
    for i, job in enumerate(jobs, 1):
        if (job.run_dir / "summary.json").is_file():
            log(f"[{i}/{len(jobs)}] seed {job.seed} {job.name}: done before, kept")
        else:
            pending.append((i, job))
    waiting_fp32 = {job.seed for _, job in pending if job.name == "fp32"}
    running: dict[subprocess.Popen, Job] = {}
    failures: list[str] = []
    while pending or running:
        ready = [(i, job) for i, job in pending if job.name == "fp32" or job.seed not in waiting_fp32]
        while ready and len(running) < parallel and not failures:
            i, job = ready.pop(0)
            pending.remove((i, job))
            log(f"[{i}/{len(jobs)}] seed {job.seed} {job.name} -> {job.run_dir}")
            job.run_dir.mkdir(parents=True, exist_ok=True)
            with (job.run_dir / "stdout.log").open("w") as stdout:
                running[subprocess.Popen(job.command(train_py), stdout=stdout,
                                         stderr=subprocess.STDOUT, env=env)] = job
        if not running:
            break  # nothing runs and nothing can start: a failure, or an FP32 job that failed
        finished = _wait_any(running)
        job = running.pop(finished)
        if finished.returncode != 0:
            failures.append(f"job seed {job.seed} {job.name} failed (exit {finished.returncode}); "
                            f"its output: {job.run_dir / 'stdout.log'}")
        elif job.name == "fp32":
            waiting_fp32.discard(job.seed)
    if failures:
        raise RuntimeError("; ".join(failures))
    return [job.run_dir for job in jobs]


def _wait_any(running: Mapping[subprocess.Popen, Job], poll_s: float = 1.0) -> subprocess.Popen:
    """The first of the running processes to exit."""
    while True:
        for process in running:
            if process.poll() is not None:
                return process
        time.sleep(poll_s)
