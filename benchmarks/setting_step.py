"""One setting, two or more values: the training step under each, from the same init.

    .venv/bin/python benchmarks/setting_step.py [--compare KEY=V1,V2,...] [--batches 30] [--rounds 3]
                                                [--threads 2] [overrides]

Builds a run's network and data as ``src/train.py`` would (default ``experiment=stbp_cifar10_cpu``;
Hydra overrides after the options), replays the training loader's first batches from memory (as
``data_vs_compute.py``'s ``compute`` column) and trains one copy of the network per value of
``--compare`` (default ``trainer.precision=32-true,bf16-mixed``), all from the same init,
alternating ``--rounds`` fits of ``--batches`` timed steps each in one process. Prints the median
step of each, its ratio to the first value's, and each copy's loss on the first batch after the
last fit (the same batches from the same init: how far the setting moves training).

Measured with it (docs/performance.md):

- ``trainer.precision=32-true,bf16-mixed``: bf16 autocast runs the convolutions and linear layers
  in bfloat16 (fast on CPUs with AMX or AVX512-BF16, slow where it is emulated); the neurons keep
  their time loop in float32 (``cbpqsnn.neurons.base.float32_time_loop``) and the weights,
  optimizer and CBP stay float32.
- ``method.module.memory_format=contiguous,channels_last``: the feature maps' layout
  (``SpikingClassifier.time_first``).
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

DEFAULT_COMPARE = "trainer.precision=32-true,bf16-mixed"


def split_compare(compare: str) -> tuple[str, list[str]]:
    """``KEY=V1,V2,...`` as the key and at least two values."""
    key, _, values = compare.partition("=")
    choices = [v for v in values.split(",") if v]
    if not key or len(choices) < 2:
        raise SystemExit(f"--compare wants KEY=V1,V2[,...] (two values at least), got {compare!r}; "
                         f"e.g. {DEFAULT_COMPARE}")
    return key, choices


def main() -> None:
    args, overrides = parse_step_args(__doc__, extra={"--compare": DEFAULT_COMPARE})
    key, values = split_compare(args.compare)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        configs = {v: compose("train", overrides=[*(overrides or DEFAULT_OVERRIDES), f"{key}={v}"])
                   for v in values}
    datamodule, _, in_memory = training_data(configs[values[0]], args.batches)
    modules = {}
    for value, cfg in configs.items():
        L.seed_everything(0, verbose=False)
        modules[value] = build_module(cfg, datamodule)
        modules[value].set_optimization(instantiate(cfg.method.pretrain.optimizer))
    times: dict[str, list[float]] = {v: [] for v in values}
    for _ in range(args.rounds):
        for value, cfg in configs.items():
            times[value] += fit_steps(cfg, modules[value], in_memory, args.batches)
    step = {v: statistics.median(t) for v, t in times.items()}
    x, y = next(iter(in_memory))
    losses = {}
    for value, module in modules.items():
        module.eval()
        with torch.no_grad():
            losses[value] = float(module.loss(module(x), y))
    base = step[values[0]]
    columns = ", ".join(f"{v} {1000 * step[v]:.1f} ms ({step[v] / base:.3f}x, loss {losses[v]:.6f})"
                        for v in values)
    print(f"{key}: {columns}; median of {len(times[values[0]])} steps each, loss on the first batch "
          f"after training")


if __name__ == "__main__":
    main()
