"""The compute-per-row benchmark runs and prints one line per stage plus a total."""

import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT


def test_compute_per_row_prints_stage_hours_and_flops():
    cmd = [sys.executable, str(ROOT / "benchmarks/compute_per_row.py"), "--rows", "stbp_cifar10_cpu",
           "--steps", "1", "--threads", "1",
           "--override", "method.module.neuron_kernels=eager"]  # no minute of compiling in a test
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if "stbp_cifar10_cpu" in line]
    assert [r[1].strip() for r in rows] == ["pretrain", "cbp", "total"]
    pretrain, cbp, total = rows
    assert (int(pretrain[2]), int(pretrain[3]), int(cbp[3])) == (4, 24, 11)  # T, epochs from the config
    hours = [float(r[6]) for r in rows]
    flops = [float(r[7]) for r in rows]
    assert all(h > 0 for h in hours) and all(f > 0 for f in flops)
    assert abs(hours[0] + hours[1] - hours[2]) < 0.02 * hours[2]
    # FLOPs scale with epochs: 11 CBP epochs of the same network cost 11/24 of 24 pretraining epochs
    assert abs(flops[1] / flops[0] - 11 / 24) < 0.05


def test_peer_speed_checks_the_columns_compute_the_same_function(monkeypatch):
    """The benchmark's check passes for the project's fused neuron and its step loop (the peers
    are an optional extra), and refuses a column that computes another function."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import peer_speed

    worst = peer_speed.check("mlp", ["project", "project_step_loop"])
    assert worst["project"] < 1e-6 and worst["project_step_loop"] < 1e-6

    class LeakierProject(peer_speed.Project):
        def __init__(self, workload):
            super().__init__(workload)
            self.neuron.decay = 0.4

    monkeypatch.setitem(peer_speed.COLUMNS, "project", LeakierProject)
    with pytest.raises(AssertionError, match="differ"):
        peer_speed.check("mlp", ["project"])


def step_benchmark_line(script: str, batches: int) -> str:
    """The result line of a step-timing benchmark on the default run's network and mnist5k."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--batches", str(batches),
           "--rounds", "1", "--threads", "1", "quant=fp32"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_data_vs_compute_times_the_loader_against_batches_in_memory():
    line = step_benchmark_line("data_vs_compute.py", batches=5)
    numbers = re.findall(r"([\d.]+) ms", line)
    loader, memory = (float(n) for n in numbers)
    ratio = float(line.rsplit("=", 1)[1])
    assert "median of 5 each" in line  # --batches steps timed per fit, after the warm-up
    assert loader > 0 and memory > 0 and abs(ratio - loader / memory) < 0.01


def test_setting_step_times_each_value_of_a_setting_from_the_same_init():
    line = step_benchmark_line("setting_step.py", batches=3)  # default: trainer.precision
    steps = [float(n) for n in re.findall(r"([\d.]+) ms", line)]
    ratios = [float(n) for n in re.findall(r"\(([\d.]+)x", line)]
    losses = [float(v) for v in re.findall(r"loss ([\d.]+)\)", line)]
    assert line.startswith("trainer.precision: 32-true ") and " bf16-mixed " in line
    assert "median of 3 steps each" in line and ratios[0] == 1 and abs(ratios[1] - steps[1] / steps[0]) < 0.01
    assert len(losses) == 2 and losses[0] != losses[1]  # two trainings: bf16 rounds differently


def test_peer_speed_floor_runs_the_same_layers_without_any_neuron():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import peer_speed

    x, _ = peer_speed.data("mlp")
    x = x[:3, :4]
    expected = x
    for layer in peer_speed.stateless_layers("mlp"):  # the same seeded weights as every column
        expected = peer_speed.merged(layer, expected)
    out = peer_speed.COLUMNS["synapses_only"]("mlp")(x)
    torch.testing.assert_close(out, expected)
    assert "synapses_only" in peer_speed.FLOORS  # timed, never checked as the same function


def test_peer_speed_channels_last_columns_compute_the_same_on_channels_innermost_maps():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import peer_speed

    x, _ = peer_speed.data("conv")
    x = x[:2, :2]
    plain, fast = peer_speed.Project("conv"), peer_speed.channels_last(peer_speed.Project)("conv")
    layouts = []
    fast.neuron.register_forward_hook(lambda m, i, o: layouts.append(i[0].dim() < 5 or i[0].stride(2) == 1))
    with torch.no_grad():
        assert torch.equal(fast(x), plain(x))
    assert layouts == [True] * 5  # four conv maps channels-innermost, then the FC layer's current
    assert {"project_compiled_cl", "synapses_only_cl"} <= set(peer_speed.COLUMNS)
    assert "synapses_only_cl" in peer_speed.FLOORS and "project_compiled_cl" not in peer_speed.FLOORS


def test_peer_speed_checks_a_channels_last_column_against_the_channels_last_plain_loop(monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import peer_speed

    monkeypatch.setitem(peer_speed.COLUMNS, "project_cl", peer_speed.channels_last(peer_speed.Project))
    assert peer_speed.check("conv", ["project_cl"])["project_cl"] < 1e-5
    # against the contiguous plain loop, the convolutions' other rounding flips threshold spikes
    monkeypatch.setitem(peer_speed.COLUMNS, "project_other", peer_speed.COLUMNS["project_cl"])
    with pytest.raises(AssertionError, match="project_other spikes differ"):
        peer_speed.check("conv", ["project_other"])


def test_width_step_measures_each_layers_change_from_one_step_at_the_rows_lr():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import width_step

    lr, changes = width_step.layer_changes("stbp_cifar10", 32, batch=4, lr_factor=1.0)
    assert lr == 0.3 and len(changes) == 10  # SGD 0.3; the 7Conv3FC's ten conv / FC layers
    assert all(c >= 0 and c == c for c in changes) and changes[0] > 0
    # the first layer's input does not change, so its pre-activations move linearly in the step
    # (first SGD step: momentum buffer = gradient): twice the LR, exactly twice the change
    lr2, doubled = width_step.layer_changes("stbp_cifar10", 32, batch=4, lr_factor=2.0)
    assert lr2 == 0.6 and doubled[0] == pytest.approx(2 * changes[0], rel=1e-4)
    assert width_step.layer_changes("stbp_cifar10", 32, batch=4, lr_factor=0.0)[1] == [0.0] * 10


def test_step_floor_removes_every_neuron_and_keeps_the_time_steps():
    """The floor network is the same layers with every neuron (SEW blocks' too) a pass-through:
    its output is the stateless layers on the input repeated over T, and a whole run counts both
    stages' epochs of steps."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import step_floor

    from cbpqsnn.nets.feedforward import build_spiking_net
    from cbpqsnn.nets.sew import SEWBlock
    from cbpqsnn.neurons import STBPLIF
    from tests.conftest import compose

    torch.manual_seed(0)
    net = build_spiking_net(["C4", "SEW4", "P2", "FC6"], (2, 8, 8), 3, STBPLIF, T=3)
    neurons = sum(isinstance(m, step_floor.MultiStepNeuron) for m in net.modules())
    assert neurons == 5  # conv, the SEW block's two, FC, classifier
    assert step_floor.strip_neurons(net) == neurons
    assert not any(isinstance(m, step_floor.MultiStepNeuron) for m in net.modules())
    x = torch.randn(2, 2, 8, 8)
    expected = x
    for layer in net.layers:  # the stateless layers once: the input is the same at every step
        if isinstance(layer, SEWBlock):
            expected = expected + layer.conv2(layer.conv1(expected))
        elif not isinstance(layer, step_floor.PassThrough):
            expected = layer(expected)
    out = net(x)
    assert out.shape == (3, 2, 3)  # still T steps
    torch.testing.assert_close(out, expected.expand(3, 2, 3))  # 3 classes
    cfg = compose(["experiment=stbp_cifar10_cpu"])
    assert step_floor.run_steps(cfg, 50_000) == (24 + 11) * 782  # batch 64: 782 steps an epoch
