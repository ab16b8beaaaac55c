"""Does the data path keep up? A training step with the real data loader against the same step on
batches already in memory.

    .venv/bin/python benchmarks/data_vs_compute.py [--batches 30] [--rounds 3] [--threads 2] [overrides]

Builds a run's network and data as ``src/train.py`` would (default ``experiment=stbp_cifar10_cpu``;
Hydra overrides after the options) and runs its FP32 training stage with Lightning for ``--batches``
timed batches (after 3 warm-up steps), in turn:

- ``loader``: the datamodule's training loader as configured (its workers, decoding, augmentation);
- ``compute``: the first batches of that loader, fetched beforehand and replayed from memory (no
  worker, nothing decoded).

A step is the interval between two ``on_train_batch_start`` calls (waiting for the batch, forward,
backward, optimizer step); the first 3 of every fit are warm-up (they also compile the neurons
under ``neuron_kernels=compiled``). Prints the median step of each and the ratio
loader / compute: 1.00 means the data path costs nothing, its workers included (on a small machine
they share the cores with the training process).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from step_timing import parse_step_args, step_trainer  # noqa: E402

from cbpqsnn.builders import build_datamodule, build_module  # noqa: E402

WARMUP = 3
DEFAULT_OVERRIDES = ["experiment=stbp_cifar10_cpu"]


class StepInterval(L.Callback):
    """Seconds between consecutive ``on_train_batch_start`` calls (a whole step, data included)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last: float | None = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def fit_steps(cfg, module: L.LightningModule, loader: DataLoader, batches: int) -> list[float]:
    """The ``batches`` step intervals after the warm-up of one fit."""
    timer = StepInterval()
    trainer = step_trainer(cfg, cfg.method.pretrain, batches + WARMUP + 1, [timer])
    trainer.fit(module, train_dataloaders=loader)
    return timer.times[WARMUP:]


def training_data(cfg, batches: int) -> tuple[L.LightningDataModule, DataLoader, DataLoader]:
    """The run's datamodule, its training loader, and the loader's first batches (enough for one
    timed fit) replayed from memory."""
    L.seed_everything(0, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.batch_size = int(cfg.method.pretrain.batch_size)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    fetched = []
    for batch in loader:
        fetched.append(batch)
        if len(fetched) == batches + WARMUP + 1:
            break
    return datamodule, loader, DataLoader(fetched, batch_size=None, shuffle=False, num_workers=0)


def main() -> None:
    args, overrides = parse_step_args(__doc__)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides or DEFAULT_OVERRIDES)
    datamodule, loader, in_memory = training_data(cfg, args.batches)
    module = build_module(cfg, datamodule)
    module.set_optimization(instantiate(cfg.method.pretrain.optimizer))
    times: dict[str, list[float]] = {"loader": [], "compute": []}
    for _ in range(args.rounds):
        times["loader"] += fit_steps(cfg, module, loader, args.batches)
        times["compute"] += fit_steps(cfg, module, in_memory, args.batches)
    step = {name: statistics.median(values) for name, values in times.items()}
    workers = getattr(loader, "num_workers", 0)
    print(f"step with the loader ({workers} workers) {1000 * step['loader']:.1f} ms, "
          f"from memory {1000 * step['compute']:.1f} ms (median of {len(times['loader'])} each): "
          f"loader / compute = {step['loader'] / step['compute']:.3f}")


if __name__ == "__main__":
    main()
