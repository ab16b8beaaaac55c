"""Cost of a CBP fine-tuning step against the same step with straight-through estimation (STE).

    .venv/bin/python benchmarks/cbp_step.py [--batches 30] [--rounds 3] [--threads 2] [overrides]

Builds the default run's network and data (``conf/train.yaml``: STBP, mnist5k, binary; extra
Hydra overrides after the options), then fine-tunes it with Lightning for ``--batches`` training
batches with ``quant.algorithm=cbp`` and with ``ste`` in turn, ``--rounds`` times, from the same
weights. A step is timed from ``on_train_batch_start`` to ``on_train_batch_end`` (forward,
backward, the callback's hooks, clipping, optimizer step, latent clamp); the first 3 steps of
every fit are warm-up. Prints the median step of each and the ratio CBP / STE.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from step_timing import parse_step_args, step_trainer  # noqa: E402

from cbpqsnn.builders import build_datamodule, build_module  # noqa: E402
from cbpqsnn.pipeline import make_cbp_callback  # noqa: E402

WARMUP = 3


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._start)


def fit_steps(cfg, datamodule, state: dict, batches: int) -> list[float]:
    module = build_module(cfg, datamodule)
    module.load_state_dict(state)
    stage = cfg.method.cbp
    module.set_optimization(instantiate(stage.optimizer))
    timer = StepTimer()
    trainer = step_trainer(cfg, stage, batches, [make_cbp_callback(cfg), timer])
    trainer.fit(module, datamodule=datamodule)
    return timer.times[WARMUP:]


def main() -> None:
    args, overrides = parse_step_args(__doc__)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        configs = {algo: compose("train", overrides=[*overrides, f"quant.algorithm={algo}"])
                   for algo in ("cbp", "ste")}
    L.seed_everything(0, verbose=False)
    datamodule = build_datamodule(configs["cbp"])
    datamodule.batch_size = int(configs["cbp"].method.cbp.batch_size)
    state = build_module(configs["cbp"], datamodule).state_dict()
    times: dict[str, list[float]] = {"cbp": [], "ste": []}
    for _ in range(args.rounds):
        for algo, cfg in configs.items():
            times[algo] += fit_steps(cfg, datamodule, state, args.batches)
    cbp, ste = (statistics.median(times[a]) for a in ("cbp", "ste"))
    print(f"CBP step {1000 * cbp:.1f} ms, STE step {1000 * ste:.1f} ms (median of "
          f"{len(times['cbp'])} each): CBP / STE = {cbp / ste:.3f}")


if __name__ == "__main__":
    main()
