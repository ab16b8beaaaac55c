"""How fast can a row's training step be at all? The step against its floor: the same network
with every spiking neuron removed.

    .venv/bin/python benchmarks/step_floor.py [--batches 30] [--rounds 3] [--threads 2] [overrides]

Builds a run's network and data as ``src/train.py`` would (default ``experiment=stbp_cifar10_cpu``;
Hydra overrides after the options) and trains two copies from the same init on the training
loader's first batches replayed from memory (as ``data_vs_compute.py``'s ``compute`` column),
alternating ``--rounds`` fits of ``--batches`` timed steps in one process:

- ``full``: the run's network as configured (its neuron kernels, memory format, precision);
- ``floor``: every spiking neuron swapped for a pass-through (:class:`PassThrough`: the current
  goes on unchanged, at the same place in the time loop, so the layers after it still see all T
  steps). What is left -- convolutions, linear layers, pools, the loss, backward and the optimizer
  step on the same shapes -- is work every implementation of the row has to do, whatever its
  neurons cost. Not the same function (nothing is checked against it).

Prints the median step of each, the ratio floor / full and the whole run's training steps
(``method.pretrain.epochs`` + ``method.cbp.epochs`` passes over the training set) at each step
time: a time target below the floor's cannot be met on the machine that measured it by any neuron
(the CBP stage's constraint, the evaluations and the data path only add to it).
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import lightning as L
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from data_vs_compute import DEFAULT_OVERRIDES, fit_steps, training_data  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from step_timing import parse_step_args  # noqa: E402

from cbpqsnn.builders import build_module  # noqa: E402
from cbpqsnn.neurons import TemporalModule  # noqa: E402
from cbpqsnn.neurons.base import MultiStepNeuron  # noqa: E402


class PassThrough(TemporalModule):
    """A removed neuron: ``[T, B, ...]`` in, the same tensor out."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def strip_neurons(net: nn.Module) -> int:
    """Swap every :class:`MultiStepNeuron` inside ``net`` for a :class:`PassThrough`; returns how
    many were swapped."""
    swapped = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MultiStepNeuron):
                setattr(parent, name, PassThrough())
                swapped += 1
    return swapped


def run_steps(cfg, train_size: int) -> int:
    """Training steps of the whole run: both stages' epochs over the training set."""
    stages = (cfg.method.pretrain, cfg.method.cbp)
    return sum(int(s.epochs) * math.ceil(train_size / int(s.batch_size)) for s in stages)


def main() -> None:
    args, overrides = parse_step_args(__doc__)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides or DEFAULT_OVERRIDES)
    datamodule, loader, in_memory = training_data(cfg, args.batches)
    modules = {}
    for name in ("full", "floor"):
        L.seed_everything(0, verbose=False)
        modules[name] = build_module(cfg, datamodule)
        modules[name].set_optimization(instantiate(cfg.method.pretrain.optimizer))
    removed = strip_neurons(modules["floor"])
    if removed == 0:
        raise SystemExit("the network has no spiking neurons to remove")
    times: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(args.rounds):
        for name, module in modules.items():
            times[name] += fit_steps(cfg, module, in_memory, args.batches)
    step = {name: statistics.median(t) for name, t in times.items()}
    steps = run_steps(cfg, len(loader.dataset))
    print(f"full step {1000 * step['full']:.1f} ms, floor ({removed} neurons removed) "
          f"{1000 * step['floor']:.1f} ms: floor / full = {step['floor'] / step['full']:.3f} "
          f"(median of {len(times['full'])} steps each)")
    print(f"the run's {steps} training steps: {steps * step['full'] / 60:.1f} min at the full step, "
          f"{steps * step['floor'] / 60:.1f} min at the floor")


if __name__ == "__main__":
    main()
