"""Mixed precision on a CPU: the training step in float32 against bf16 autocast.

    .venv/bin/python benchmarks/precision_step.py [--batches 30] [--rounds 3] [--threads 2] [overrides]

Builds a run's network and data as ``src/train.py`` would (default ``experiment=stbp_cifar10_cpu``;
Hydra overrides after the options), replays the training loader's first batches from memory (as
``data_vs_compute.py``'s ``compute`` column) and trains two copies of the network from the same
init, one with ``trainer.precision=32-true`` and one with ``bf16-mixed``, alternating
``--rounds`` fits of ``--batches`` timed steps each in one process. Prints the median step of each,
the ratio bf16 / float32 and both losses after the last fit (the same batches from the same init:
how far bf16 moves training).

bf16 autocast runs the convolutions and linear layers in bfloat16 (fast on CPUs with AMX or
AVX512-BF16, slow where it is emulated); the neurons keep their time loop in float32
(``cbpqsnn.neurons.base.float32_time_loop``) and the weights, optimizer and CBP stay float32.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from data_vs_compute import DEFAULT_OVERRIDES, fit_steps, training_data  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from step_timing import parse_step_args  # noqa: E402

from cbpqsnn.builders import build_module  # noqa: E402

PRECISIONS = ("32-true", "bf16-mixed")


def main() -> None:
    args, overrides = parse_step_args(__doc__)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        configs = {p: compose("train", overrides=[*(overrides or DEFAULT_OVERRIDES),
                                                  f"trainer.precision={p}"])
                   for p in PRECISIONS}
    datamodule, _, in_memory = training_data(configs[PRECISIONS[0]], args.batches)
    modules = {}
    for precision, cfg in configs.items():
        L.seed_everything(0, verbose=False)
        modules[precision] = build_module(cfg, datamodule)
        modules[precision].set_optimization(instantiate(cfg.method.pretrain.optimizer))
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(args.rounds):
        for precision, cfg in configs.items():
            times[precision] += fit_steps(cfg, modules[precision], in_memory, args.batches)
    step = {p: statistics.median(values) for p, values in times.items()}
    x, y = next(iter(in_memory))
    losses = {}
    for precision, module in modules.items():
        module.eval()
        with torch.no_grad():
            losses[precision] = float(module.loss(module(x), y))
    print(f"step float32 {1000 * step['32-true']:.1f} ms, bf16-mixed {1000 * step['bf16-mixed']:.1f} ms "
          f"(median of {len(times['32-true'])} each): bf16 / float32 = "
          f"{step['bf16-mixed'] / step['32-true']:.3f}; loss on the first batch after training: "
          f"float32 {losses['32-true']:.6f}, bf16-mixed {losses['bf16-mixed']:.6f}")


if __name__ == "__main__":
    main()
