"""One training step of the TSSL-BP CIFAR-10 network: the TSSL-BP custom backward vs. the same
network trained by plain BPTT with a sigmoid surrogate gradient (same forward, same weights).

    .venv/bin/python benchmarks/tsslbp_speed.py [--batch 16] [--steps 5] [--threads N]

A step = forward, kernel loss, backward, grad-norm clip, AdamW step (weight clamp included). The
two are timed alternately; prints the median step time of each and their ratio (custom / surrogate),
then the same for the neurons of the largest layer alone. Run it like `make` does, with
MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 (see the Makefile).
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

from omegaconf import OmegaConf  # noqa: E402

from cbpqsnn.methods.tsslbp import TSSLClassifier  # noqa: E402
from cbpqsnn.neurons import TSSLNeuron  # noqa: E402


def make_module(backward: str) -> TSSLClassifier:
    model = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/model/tssl_cifar10.yaml"))
    method = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/method/tsslbp.yaml"))["module"]
    method.pop("_target_")
    method["backward"] = backward
    torch.manual_seed(0)
    return TSSLClassifier(model=model, in_shape=(3, 32, 32), num_classes=10, **method)


class Stepper:
    """One training step of ``module``: forward, kernel loss, backward, grad-norm clip, AdamW step."""

    def __init__(self, module: TSSLClassifier) -> None:
        self.module = module.train()
        self.optimizer = torch.optim.AdamW(module.parameters(), lr=2e-4)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.module.loss(self.module.net(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1.0)
        self.module.optimizer_step(0, 0, self.optimizer)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (args.batch,), generator=generator)
    print(f"TSSL-BP CIFAR-10 network, batch {args.batch}, T=5, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps")
    steppers = {backward: Stepper(make_module(backward)) for backward in ("tssl", "surrogate")}
    times: dict[str, list[float]] = {backward: [] for backward in steppers}
    for i in range(args.steps + 1):  # alternate, so that load changes hit both; step 0 warms up
        for backward, step in steppers.items():
            elapsed = step(x, y)
            if i:
                times[backward].append(elapsed)
    medians = {backward: statistics.median(t) for backward, t in times.items()}
    for backward, t in times.items():
        print(f"  {backward:>9}: {medians[backward]:.3f} s/step  (min {min(t):.3f}, max {max(t):.3f})")
    print(f"  ratio custom / surrogate: {medians['tssl'] / medians['surrogate']:.3f}")
    neuron_only(args.batch, args.steps)


def neuron_only(batch: int, steps: int) -> None:
    """The neurons alone: forward + backward of one layer's neurons on the largest feature map."""
    current = torch.randn(5, batch, 256, 32, 32, generator=torch.Generator().manual_seed(2)) + 0.5
    grad = torch.randn_like(current)
    times: dict[str, list[float]] = {"tssl": [], "surrogate": []}
    neurons = {"tssl": TSSLNeuron(custom_backward=True), "surrogate": TSSLNeuron(custom_backward=False)}
    for i in range(steps + 1):
        for name, neuron in neurons.items():
            x = current.clone().requires_grad_(True)
            start = time.perf_counter()
            neuron(x).backward(grad)
            if i:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"neurons only, [5, {batch}, 256, 32, 32], forward + backward: tssl {medians['tssl']:.3f} s, "
          f"surrogate {medians['surrogate']:.3f} s, ratio {medians['tssl'] / medians['surrogate']:.3f}")


if __name__ == "__main__":
    main()
