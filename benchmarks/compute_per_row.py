"""Expected compute of every experiment-matrix row, from a measured training step.

    .venv/bin/python benchmarks/compute_per_row.py [--rows stbp_cifar10 ...] [--device cuda]
        [--batch N] [--steps 3] [--precision 16-mixed] [--gpu-tflops 20]

For each row (``conf/experiment/<row>.yaml`` composed as ``train.py`` would) and each of its two
stages (pretraining, CBP; for ``calib`` the ANN, then the converted SNN at its fine-tuning T) the
script builds the row's network, times forward + loss + backward + optimizer step on random
inputs of the row's shape (median of ``--steps`` steps after one warm-up), and counts the step's
floating-point operations with ``torch.utils.flop_counter``. Per stage:

    hours = step_time / batch * (train_size + test_size / 3) * epochs / 3600

(one validation pass over the test set per epoch, a forward being about 1/3 of a training step).
On a GPU (``--device cuda``) use the row's batch size: the hours are then measured-step
estimates for that GPU. On a CPU a small ``--batch`` keeps it quick; the time per sample is
scaled linearly. ``gpu_h@N`` is ``FLOPs / (N TFLOP/s)``: an assumption, not a measurement --
SNN steps are partly memory-bound (neuron updates per time step), so real GPUs land below it.
Not counted: data loading / event-frame conversion (cached after the first epoch), the CBP
callback's per-step constraint gradient (elementwise, small next to the convolutions), and the
calibration pass of the conversion (a few batches).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from cbpqsnn.builders import build_module  # noqa: E402

ROWS = ["tsslbp_cifar10", "stbp_cifar10", "stbp_cifar100", "sg_dvs128_gesture", "sg_cifar10dvs",
        "calib_cifar10", "calib_cifar100", "stbp_cifar10_cpu"]
# official split sizes (train, test); CIFAR10-DVS: 900 / 100 recordings per class (conf/data/cifar10dvs.yaml)
SPLITS = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000),
          "dvs128_gesture": (1_176, 288), "cifar10dvs": (9_000, 1_000)}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "dvs128_gesture": 11, "cifar10dvs": 10}


class ShapeOnly:
    """What build_module needs from a datamodule, without touching the dataset files."""

    def __init__(self, cfg) -> None:
        self.num_classes = NUM_CLASSES[cfg.data.name]
        size = cfg.data.datamodule.get("size") or 128  # event data has T frames; CIFAR has none
        self.in_shape = (2, size, size) if "T" in cfg.data.datamodule else (3, 32, 32)


def compose_row(row: str, overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"experiment={row}", *(overrides or [])])


def random_batch(module, cfg, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    shape = module.in_shape
    if shape[0] == 2:  # event frames, batch-first [B, T, 2, H, W] as the datamodule gives them
        T = int(cfg.T)  # frames per sample = the top-level T
        x = torch.poisson(torch.full((batch, T, *shape), 0.05, device=device))
    else:
        x = torch.randn(batch, *shape, device=device)
    return x, torch.randint(0, module.num_classes, (batch,), device=device)


def time_step(module, optimizer, x, y, precision: str) -> float:
    device_type = x.device.type
    if device_type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast(device_type, dtype=torch.float16 if device_type == "cuda" else torch.bfloat16,
                        enabled=precision == "16-mixed"):
        out = module.net(module.time_first(x, training=True))
        loss = module.loss(out, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if device_type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure_stage(module, cfg, stage: str, batch: int, steps: int, device: torch.device,
                  precision: str) -> dict:
    module.prepare_stage(stage)  # calib: the ANN, then the (uncalibrated) SNN at finetune_T
    module.train()
    optimizer = instantiate(cfg.method[stage].optimizer)(module.parameters())
    x, y = random_batch(module, cfg, batch, device)
    with FlopCounterMode(display=False) as counter:
        time_step(module, optimizer, x[:1], y[:1], precision)
    times = [time_step(module, optimizer, x, y, precision) for _ in range(steps + 1)][1:]
    train_size, test_size = SPLITS[cfg.data.name]
    epochs = int(cfg.method[stage].epochs)
    per_sample = statistics.median(times) / batch
    samples = (train_size + test_size / 3) * epochs
    return {"stage": stage, "epochs": epochs, "row_batch": int(cfg.method[stage].batch_size),
            "T": int(getattr(module.net, "T", cfg.method.module.T)),
            "step_s": statistics.median(times), "hours": per_sample * samples / 3600,
            "flop": counter.get_total_flops() * samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=ROWS, help=f"rows to measure (default: {ROWS})")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None,
                        help="batch to time (default: the row's batch size on cuda, 2 on cpu)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--precision", choices=["32-true", "16-mixed"], default="32-true")
    parser.add_argument("--gpu-tflops", type=float, default=20.0,
                        help="assumed sustained GPU throughput for the FLOP-based estimate")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for every row (repeatable), e.g. "
                             "method.module.neuron_kernels=eager")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, precision {args.precision}, torch threads {torch.get_num_threads()}")
    print("| row | stage | T | epochs | batch timed | step s | hours on this device "
          f"| PFLOP | GPU h @ {args.gpu_tflops:g} TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in args.rows:
        cfg = compose_row(row, args.override)
        torch.manual_seed(0)
        module = build_module(cfg, ShapeOnly(cfg)).to(device)
        total_h, total_flop = 0.0, 0.0
        for stage in ("pretrain", "cbp"):
            batch = args.batch or (int(cfg.method[stage].batch_size) if device.type == "cuda" else 2)
            r = measure_stage(module, cfg, stage, batch, args.steps, device, args.precision)
            total_h += r["hours"]
            total_flop += r["flop"]
            gpu_h = r["flop"] / (args.gpu_tflops * 1e12) / 3600
            print(f"| {row} | {stage} | {r['T']} | {r['epochs']} | {batch} | {r['step_s']:.3f} "
                  f"| {r['hours']:.3g} | {r['flop'] / 1e15:.3g} | {gpu_h:.3g} |", flush=True)
        gpu_total = total_flop / (args.gpu_tflops * 1e12) / 3600
        print(f"| **{row}** | total | | | | | {total_h:.3g} | {total_flop / 1e15:.3g} | {gpu_total:.3g} |",
              flush=True)


if __name__ == "__main__":
    main()
