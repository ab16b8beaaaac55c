"""Training-step speed and memory of this project's neurons against SpikingJelly and snnTorch.

    .venv/bin/python benchmarks/peer_speed.py [--threads 2] [--rounds 2] [--steps 10]

Two workloads, each the same function in every column (same layers and weights, the LIF
``u[t] = 0.5 u[t-1] (1 - s[t-1]) + I[t]``, ``s[t] = 1[u[t] > 1]``, reset detached, ATan(2)
surrogate; checked before timing: identical spikes, gradients within 1e-5 relative):

- ``conv``: T 8, batch 16, 2 x 64 x 64 event frames, 4 x [conv3x3 32 - BN - LIF - maxpool 2],
  FC 10 - LIF, loss MSE(firing rate, one-hot);
- ``mlp``: T 25, batch 128, 784 - 512 - 512 - 10, LIF after each layer, the same loss.

Columns: ``plain`` (a hand-written PyTorch loop: stateless layers on all T steps at once, the
neuron step by step with an autograd surrogate), ``project`` (:class:`cbpqsnn.neurons.STBPLIF`
with ``detach_reset=True``, ``decay=0.5``: the fused multi-step neuron), ``spikingjelly``
(``LIFNode(tau=2, decay_input=False, detach_reset=True, surrogate ATan(2))``, multi-step,
stateless layers in ``SeqToANNContainer``) and ``snntorch`` (``Leaky(beta=0.5,
reset_mechanism="zero", atan)`` stepped over T; its tutorials step the whole network instead, but
batch norm over one step's batch is another function than over all T steps' samples). On request
(``--columns``): ``project_step_loop``, the project's neuron run by its step-by-step definition
(what the fused kernel replaces), ``project_compiled``, its compiled kernels, neuron and max pool
(:mod:`cbpqsnn.neurons.kernels`; the warm-up steps compile), ``layers_only`` (every neuron a
stateless threshold; another function, not checked) and ``synapses_only``, the floor: every neuron
removed, the synapse layers and pools alone, which any implementation must run (not checked).
``project_compiled_cl`` and ``synapses_only_cl``: the same two on channels-last feature maps (the
project's ``memory_format=channels_last``; the peers run PyTorch's default layout, and the
``synapses_only_cl`` floor is what any of them would need in channels-last).

A step is forward, loss, backward and an SGD step. Every column runs in its own process (the
peers are the optional ``bench`` extra); each process warms up, then times ``--repeats`` x
``--steps`` steps; the columns run in turn for ``--rounds`` rounds, and the table gives the median
step time, its ratio to ``plain`` and the memory autograd keeps from the forward for the backward
(distinct tensor storages, the training memory above weights and batch; ratio to ``plain``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

IMPLS = ("plain", "project", "spikingjelly", "snntorch")  # default columns; also project_step_loop
WORKLOADS = {
    "conv": {"T": 8, "batch": 16, "input": (2, 64, 64)},
    "mlp": {"T": 25, "batch": 128, "input": (784,)},
}
DECAY, THRESHOLD, ALPHA = 0.5, 1.0, 2.0


# -- the same stateless layers for every column ----------------------------------------------------
def stateless_layers(workload: str) -> list[nn.Module]:
    """Synapse blocks (a neuron follows each) and the pooling after each neuron (or None)."""
    torch.manual_seed(0)
    if workload == "conv":
        blocks, cin = [], 2
        for _ in range(4):
            blocks.append(nn.Sequential(nn.Conv2d(cin, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)))
            cin = 32
        blocks.append(nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 10)))
        return blocks
    return [nn.Linear(784, 512), nn.Linear(512, 512), nn.Linear(512, 10)]


def pools(workload: str) -> list[nn.Module | None]:
    return [nn.MaxPool2d(2)] * 4 + [None] if workload == "conv" else [None] * 3


def data(workload: str) -> tuple[Tensor, Tensor]:
    spec = WORKLOADS[workload]
    g = torch.Generator().manual_seed(1)
    shape = (spec["T"], spec["batch"], *spec["input"])
    x = (torch.rand(shape, generator=g) < 0.2).float() if workload == "conv" else \
        torch.rand(shape, generator=g) * 0.6
    return x, torch.randint(0, 10, (spec["batch"],), generator=g)


def merged(layer: nn.Module, x: Tensor) -> Tensor:
    y = layer(x.flatten(0, 1))
    return y.view(*x.shape[:2], *y.shape[1:])


# -- the four columns --------------------------------------------------------------------------------
class _ATanSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (ALPHA / 2) / (1 + (math.pi / 2 * ALPHA * x).square())


class Plain(nn.Module):
    def __init__(self, workload: str) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(stateless_layers(workload))
        self.pools = pools(workload)

    def forward(self, x: Tensor) -> Tensor:
        for block, pool in zip(self.blocks, self.pools, strict=True):
            current = merged(block, x)
            u, spikes = None, []
            for i_t in current.unbind(0):
                u = i_t if u is None else DECAY * u * (1 - spikes[-1].detach()) + i_t
                spikes.append(_ATanSpike.apply(u - THRESHOLD))
            x = torch.stack(spikes)
            x = merged(pool, x) if pool is not None else x
        return x


class Project(nn.Module):
    def __init__(self, workload: str) -> None:
        super().__init__()
        from cbpqsnn.neurons import STBPLIF, ATan

        self.blocks = nn.ModuleList(stateless_layers(workload))
        self.pools = pools(workload)
        self.neuron = STBPLIF(v_threshold=THRESHOLD, decay=DECAY, surrogate=ATan(ALPHA),
                              detach_reset=True)

    def forward(self, x: Tensor) -> Tensor:
        for block, pool in zip(self.blocks, self.pools, strict=True):
            x = self.neuron(merged(block, x))
            x = merged(pool, x) if pool is not None else x
        return x


class ProjectStepLoop(Project):
    """The same neuron run by its step-by-step definition (autograd records every step)."""

    def forward(self, x: Tensor) -> Tensor:
        for block, pool in zip(self.blocks, self.pools, strict=True):
            x = self.neuron.step_loop(merged(block, x))
            x = merged(pool, x) if pool is not None else x
        return x


class ProjectCompiled(Project):
    """The same neuron and pools with their compiled kernels (``neuron_kernels=compiled``: the
    project's networks pool with :class:`cbpqsnn.nets.pools.SpikeMaxPool2d`; the warm-up steps
    compile them)."""

    def __init__(self, workload: str) -> None:
        from cbpqsnn.nets.pools import SpikeMaxPool2d
        from cbpqsnn.neurons.kernels import set_kernels

        super().__init__(workload)
        self.pools = [SpikeMaxPool2d(p.kernel_size) if p is not None else None for p in self.pools]
        set_kernels(nn.ModuleList([self.neuron, *filter(None, self.pools)]), "compiled")


class SpikingJelly(nn.Module):
    def __init__(self, workload: str) -> None:
        super().__init__()
        from spikingjelly.activation_based import layer, neuron, surrogate

        modules = []
        for block, pool in zip(stateless_layers(workload), pools(workload), strict=True):
            modules += [layer.SeqToANNContainer(block),
                        neuron.LIFNode(tau=1 / (1 - DECAY), decay_input=False, v_threshold=THRESHOLD,
                                       v_reset=0.0, detach_reset=True,
                                       surrogate_function=surrogate.ATan(alpha=ALPHA),
                                       step_mode="m")]
            if pool is not None:
                modules.append(layer.SeqToANNContainer(pool))
        self.net = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        from spikingjelly.activation_based import functional

        functional.reset_net(self.net)
        return self.net(x)


class SnnTorch(nn.Module):
    def __init__(self, workload: str) -> None:
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        self.blocks = nn.ModuleList(stateless_layers(workload))
        self.pools = pools(workload)
        self.lifs = nn.ModuleList(
            snn.Leaky(beta=DECAY, threshold=THRESHOLD, reset_mechanism="zero",
                      spike_grad=surrogate.atan(alpha=ALPHA)) for _ in self.blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block, pool, lif in zip(self.blocks, self.pools, self.lifs, strict=True):
            current, mem, spikes = merged(block, x), lif.init_leaky(), []
            for i_t in current.unbind(0):
                spike, mem = lif(i_t, mem)
                spikes.append(spike)
            x = torch.stack(spikes)
            x = merged(pool, x) if pool is not None else x
        return x


class LayersOnly(Project):
    """Not the same function: each neuron replaced by a stateless threshold of its input current
    (one autograd function over all T steps, no membrane, no time loop). Not a floor either: the
    threshold and its surrogate still pass over every step's current (``synapses_only`` is one)."""

    def forward(self, x: Tensor) -> Tensor:
        for block, pool in zip(self.blocks, self.pools, strict=True):
            x = _ATanSpike.apply(merged(block, x) - THRESHOLD)
            x = merged(pool, x) if pool is not None else x
        return x


class SynapsesOnly(Project):
    """The floor: every neuron removed (the synapse blocks and pools, forward and backward, on the
    same shapes). Any implementation of the workload runs at least these layers, so no neuron can
    make the step faster than this column; a target below it cannot be met on this machine."""

    def forward(self, x: Tensor) -> Tensor:
        for block, pool in zip(self.blocks, self.pools, strict=True):
            x = merged(block, x)
            x = merged(pool, x) if pool is not None else x
        return x


def channels_last(column: type[nn.Module]) -> type[nn.Module]:
    """``column`` on channels-last feature maps (``memory_format=channels_last`` of the project's
    networks): the input's maps laid out channels-innermost, so every conv, BN, neuron and pool
    after it runs in that layout. The same values: a flat input (mlp) is unchanged."""

    from cbpqsnn.nets.layout import channels_innermost

    class ChannelsLast(column):
        def forward(self, x: Tensor) -> Tensor:
            return super().forward(channels_innermost(x) if x.dim() == 5 else x)

    ChannelsLast.__name__ = f"{column.__name__}ChannelsLast"
    return ChannelsLast


COLUMNS = {"plain": Plain, "plain_cl": channels_last(Plain), "project": Project,
           "spikingjelly": SpikingJelly, "snntorch": SnnTorch,
           "project_step_loop": ProjectStepLoop, "project_compiled": ProjectCompiled,
           "project_compiled_cl": channels_last(ProjectCompiled),
           "layers_only": LayersOnly, "synapses_only": SynapsesOnly,
           "synapses_only_cl": channels_last(SynapsesOnly)}
FLOORS = {"layers_only", "synapses_only", "synapses_only_cl"}  # timed, not checked: other functions


def loss_of(out: Tensor, target: Tensor) -> Tensor:
    return nn.functional.mse_loss(out.mean(0), nn.functional.one_hot(target, 10).to(out.dtype))


# -- check and time ----------------------------------------------------------------------------------
def reference(name: str) -> str:
    """The plain loop a column is checked against: ``plain_cl`` for a channels-last column (its
    convolutions round differently, which flips spikes that sit at the threshold)."""
    return "plain_cl" if name.endswith("_cl") else "plain"


def check(workload: str, columns: list[str]) -> dict[str, float]:
    """Every column computes the plain loop's function (in its layout): spikes equal, gradients close."""
    x, y = data(workload)
    checked = [c for c in columns if c not in FLOORS]
    results = {}
    for name in dict.fromkeys([*map(reference, checked), *checked]):
        net = COLUMNS[name](workload)
        x_in = x.clone().requires_grad_(True)
        out = net(x_in)
        loss_of(out, y).backward()
        grads = [x_in.grad] + [p.grad for p in net.parameters()]
        results[name] = (out.detach(), [g.detach().clone() for g in grads])
    worst = {}
    for name, (out, grads) in results.items():
        ref_out, ref_grads = results[reference(name)]
        if not torch.equal(out, ref_out):
            raise AssertionError(f"{workload}: {name} spikes differ from the plain loop "
                                 f"({int((out != ref_out).sum())} of {out.numel()})")
        worst[name] = max(float((g - r).norm() / r.norm().clamp_min(1e-30))
                          for g, r in zip(grads, ref_grads, strict=True))
        if worst[name] > 1e-5:
            raise AssertionError(f"{workload}: {name} gradients differ by {worst[name]:.2e} (relative)")
    return worst


def time_column(name: str, workload: str, steps: int, repeats: int) -> dict[str, float]:
    x, y = data(workload)
    net = COLUMNS[name](workload)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_of(net(x), y).backward()
        optimizer.step()

    step()
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    return {"times": times, "memory_mb": saved_for_backward(net, x, y) / 2**20}


def saved_for_backward(net: nn.Module, x: Tensor, y: Tensor) -> int:
    """Bytes autograd keeps between forward and backward (distinct storages): the training
    memory a step adds above the weights and the batch."""
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_of(net(x), y)
    loss.backward()
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default="conv,mlp")
    parser.add_argument("--columns", default=",".join(IMPLS))
    parser.add_argument("--worker", nargs=2, metavar=("COLUMN", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(time_column(*args.worker, args.steps, args.repeats)))
        return
    columns = args.columns.split(",")
    unknown = sorted(set(columns) - COLUMNS.keys())
    if unknown:
        parser.error(f"unknown columns {unknown}; valid: {', '.join(COLUMNS)}")
    for workload in args.workloads.split(","):
        worst = check(workload, columns)
        print(f"{workload}: same function checked (largest relative gradient difference "
              f"{max(worst.values()):.1e})", flush=True)
        samples: dict[str, list[float]] = {c: [] for c in columns}
        memory: dict[str, list[float]] = {c: [] for c in columns}
        for _ in range(args.rounds):
            for column in columns:
                cmd = [sys.executable, __file__, "--worker", column, workload, "--threads",
                       str(args.threads), "--steps", str(args.steps), "--repeats", str(args.repeats)]
                result = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                                   check=True).stdout.splitlines()[-1])
                samples[column] += result["times"]
                memory[column].append(result["memory_mb"])
        base = statistics.median(samples["plain"]) if "plain" in samples else None
        base_mem = statistics.median(memory["plain"]) if "plain" in memory else None
        print(f"\n| {workload} | step ms | vs plain | saved for backward MB | vs plain |")
        print("|---|---|---|---|---|")
        for column in columns:
            ms = 1000 * statistics.median(samples[column])
            mem = statistics.median(memory[column])
            ratio = f"{statistics.median(samples[column]) / base:.2f}x" if base else "--"
            mem_ratio = f"{mem / base_mem:.2f}x" if base_mem else "--"
            print(f"| {column} | {ms:.1f} | {ratio} | {mem:.0f} | {mem_ratio} |", flush=True)


if __name__ == "__main__":
    main()
