"""A fair tuning protocol for the comparison (``src/compare.py --tune GRID``).

Every algorithm gets the same budget of settings, tried on the validation split, and only the
chosen setting is run on the other seeds and read on the test set:

1. the grid (a YAML file, e.g. ``conf/tuning/stbp_cifar10_cpu.yaml``) names, per algorithm, the
   settings to try, each a list of Hydra overrides of the fine-tuning stage (its optimizer, LR,
   CBP's multiplier LR and window period...); every algorithm must have the same number of
   settings (the equal budget), and the stage length is the experiment's, the same for all;
2. on the tuning seed (the first of ``--seeds``) every (level set, algorithm, setting) fine-tunes
   the seed's FP32 network, in ``<out>/tuning/seed<s>/<level set>_<algorithm>@<setting>/``;
3. per (level set, algorithm) the setting with the highest validation accuracy (``val_acc``;
   ties: the first in the grid) is chosen, and the choice, with every setting's validation
   accuracy, is written to ``<out>/tuning.json``;
4. the chosen setting then runs on every other seed, in
   ``<out>/seed<s>/<level set>_<algorithm>@<setting>/``, from the same FP32 networks as the rest of
   the comparison; on the tuning seed its tuning run is copied there (the same command at the same
   thread count gives the same run). ``src/report.py <out>`` reports these folders and leaves the
   tuning runs out (``src/report.py <out>/tuning`` reports those).

The experiment must hold a validation split out of its training data
(``data.datamodule.val_per_class``): tuning on the test set is refused before any job runs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cbpqsnn.comparison import FAIR, Job, parse_variants
from cbpqsnn.config_check import VARIANT_NAME
from cbpqsnn.quant.baselines import ALGORITHMS, check_algorithm
from cbpqsnn.quant.levels import level_factors

Grid = dict[str, dict[str, list[str]]]  # algorithm -> setting name -> overrides
UNTUNED = ("ptq",)  # trains nothing, so it has no setting to choose: it runs as an ordinary job


def split_tuned(algorithms: Sequence[str]) -> tuple[list[str], list[str]]:
    """``algorithms`` as (those tuned over the grid, those run once as they are: ``UNTUNED``)."""
    return [a for a in algorithms if a not in UNTUNED], [a for a in algorithms if a in UNTUNED]


def load_grid(path: str | Path, algorithms: Sequence[str]) -> Grid:
    """The grid file's settings for ``algorithms``, checked: each algorithm present, each setting a
    valid variant (name and overrides, as ``--variant``), the same number of settings for all."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--tune {path}: no such file (a grid file such as "
                         "conf/tuning/stbp_cifar10_cpu.yaml)")
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    settings = (raw or {}).get("algorithms") if isinstance(raw, dict) else None
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: write 'algorithms:' with, per algorithm, its settings "
                         "(name: [overrides]); see conf/tuning/stbp_cifar10_cpu.yaml")
    unknown = sorted(set(settings) - set(ALGORITHMS))
    missing = [a for a in algorithms if a not in settings]
    if unknown:
        raise ValueError(f"{path}: unknown algorithm(s) {unknown}; valid: {list(ALGORITHMS)}")
    if missing:
        raise ValueError(f"{path}: no settings for {missing} (every compared algorithm needs its own; "
                         "or leave it out of --algorithms)")
    grid: Grid = {}
    for algorithm in algorithms:
        grid[algorithm] = {}
        for name, overrides in (settings[algorithm] or {}).items():
            checked = parse_variants([f"{name}={o}" for o in overrides or []])  # as --variant
            if not VARIANT_NAME.fullmatch(str(name)):
                raise ValueError(f"{path}: setting {name!r} of {algorithm}: a name is letters, digits, "
                                 "_ and - only")
            grid[algorithm][str(name)] = checked.get(name, [])  # []: the experiment's own setting
    budgets = {a: len(s) for a, s in grid.items()}
    if len(set(budgets.values())) > 1 or 0 in budgets.values():
        raise ValueError(f"{path}: every algorithm gets the same number of settings (the same tuning "
                         f"budget), at least one; here: {budgets}")
    return grid


def tuning_jobs(overrides: Sequence[str], seed: int, level_sets: Sequence[str], grid: Grid,
                out: Path) -> list[Job]:
    """Every (level set, algorithm, setting) of ``grid`` on ``seed``, from ``<out>/seed<seed>/fp32``."""
    fp32_dir = out / f"seed{seed}" / "fp32"
    # Round robin: every algorithm's first setting, then every second one...; a tuning run stopped
    # part way (a session's end) has then tried as many settings of each algorithm, not all of one.
    rounds = zip(*(list(settings.items()) for settings in grid.values()), strict=True)
    return [_job(overrides, seed, level_set, algorithm, name, extra,
                 out / "tuning" / f"seed{seed}", fp32_dir)
            for row in rounds for level_set in level_sets
            for algorithm, (name, extra) in zip(grid, row, strict=True)
            if _defined(algorithm, level_set)]


def choose(jobs: Sequence[Job]) -> dict[str, dict[str, Any]]:
    """Per ``<level set>_<algorithm>``: the setting with the highest ``val_acc`` among the finished
    tuning ``jobs`` (ties: the first tried) and every setting's validation accuracy."""
    chosen: dict[str, dict[str, Any]] = {}
    for job in jobs:
        pair, name = job.name.split("@", 1)
        summary = json.loads((job.run_dir / "summary.json").read_text())
        if summary.get("val_acc") is None:
            raise ValueError(f"{job.run_dir}: no validation accuracy; tuning needs a validation split "
                             "(data.datamodule.val_per_class=N)")
        entry = chosen.setdefault(pair, {"level_set": summary["quant"], "algorithm": summary["algorithm"],
                                         "setting": name, "val_acc": {}})
        entry["val_acc"][name] = summary["val_acc"]
        if summary["val_acc"] > entry["val_acc"][entry["setting"]]:
            entry["setting"] = name
    return chosen


def final_jobs(overrides: Sequence[str], seeds: Sequence[int], chosen: Mapping[str, Mapping[str, Any]],
               grid: Grid, out: Path) -> list[Job]:
    """The chosen setting of every pair on every seed, beside the seed's FP32 run."""
    return [_job(overrides, seed, entry["level_set"], entry["algorithm"], entry["setting"],
                 grid[entry["algorithm"]][entry["setting"]], out / f"seed{seed}",
                 out / f"seed{seed}" / "fp32")
            for seed in seeds for entry in chosen.values()]


def write_choice(chosen: dict[str, dict[str, Any]], out: Path) -> dict[str, dict[str, Any]]:
    """``<out>/tuning.json``: the choice and every setting's validation accuracy; prints it."""
    (out / "tuning.json").write_text(json.dumps(chosen, indent=2))
    for pair, entry in chosen.items():
        tried = ", ".join(f"{name} {acc:.2f}" for name, acc in entry["val_acc"].items())
        print(f"tuned {pair}: {entry['setting']} (validation accuracy: {tried})")
    return chosen


def reuse_tuning_runs(final: Sequence[Job], tuning: Sequence[Job]) -> None:
    """Copy each finished tuning run to the final job of the same seed and name (not run twice)."""
    tried = {(job.seed, job.name): job.run_dir for job in tuning}
    for job in final:
        source = tried.get((job.seed, job.name))
        if source is not None and (source / "summary.json").is_file() and not job.run_dir.exists():
            shutil.copytree(source, job.run_dir)


def check_validation_split(cfg: DictConfig) -> None:
    """Tuning reads the validation split; without one it would tune on the test set."""
    if not int(cfg.data.datamodule.get("val_per_class") or 0):
        raise ValueError("--tune needs a validation split held out of the training data: add "
                         "data.datamodule.val_per_class=N (N samples of every class), e.g. 500 on "
                         "CIFAR-10; the test set is read only by the final numbers")


def _defined(algorithm: str, level_set: str) -> bool:
    try:
        check_algorithm(algorithm, level_factors(level_set))
    except ValueError:
        return False
    return True


def _job(overrides: Sequence[str], seed: int, level_set: str, algorithm: str, name: str,
         extra: Sequence[str], folder: Path, fp32_dir: Path) -> Job:
    job_name = f"{level_set}_{algorithm}@{name}"
    return Job(seed, job_name, (*overrides, f"quant={level_set}", f"quant.algorithm={algorithm}",
                                f"seed={seed}", *FAIR, f"variant={name}", *extra),
               folder / job_name, fp32_dir)
