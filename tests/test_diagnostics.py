"""The stage diagnosis (cbpqsnn.diagnostics, src/diagnose.py) against hand-computed values on a
hand-written checkpoint: one binary layer of four weights, levels +-1, window g = 2 (weights with
|w| < 0.5 are free)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from cbpqsnn.diagnostics import diagnose
from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("cbpqsnn_diagnose_cli", ROOT / "src" / "diagnose.py")
_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cli)
main = _cli.main

LAYER = "net.1"
LATENT = [0.9, -0.5, 0.05, -1.2]   # the third is inside the window
START = [0.3, 0.2, -0.1, -0.4]     # nearest levels +1 +1 -1 -1; the latents' +1 -1 +1 -1
# Adam's bias-corrected |m| / sqrt(v): 1, 10, 1, 0 (step large: the corrections are 1)
EXP_AVG = [0.1, 0.1, 0.1, 0.0]
EXP_AVG_SQ = [0.01, 0.0001, 0.01, 0.01]
LR = 1e-3
# 2 lambda against lr * ratio (1e-3, 1e-2, 1e-3, 0): stronger, weaker, free (window), stronger;
# the task's step -m leads the first off +1 towards -1 (held), the fourth nowhere (m = 0)
MULTIPLIERS = [1e-3, 1e-3, 1e-2, 1e-6]


def write_checkpoint(path, exp_avg=EXP_AVG):
    checkpoint = {
        "state_dict": {
            "net.0.weight": torch.ones(4, 2),   # the FP32 first layer: optimizer parameter 0
            "net.1.bias": torch.zeros(1),
            f"{LAYER}.parametrizations.weight.original": torch.tensor([LATENT]),
            f"{LAYER}.parametrizations.weight.0.levels": torch.tensor([-1.0, 1.0]),
            "net.2.running_mean": torch.zeros(1),
        },
        "optimizer_states": [{
            "state": {2: {"step": torch.tensor(1e6), "exp_avg": torch.tensor([exp_avg]),
                          "exp_avg_sq": torch.tensor([EXP_AVG_SQ])}},
            "param_groups": [{"params": [0, 1, 2], "lr": 0.0, "initial_lr": LR,
                              "betas": (0.9, 0.999), "eps": 1e-8}],
        }],
        "callbacks": {"CBPCallback": {
            "level_set": "binary", "layers": [LAYER], "scales": {LAYER: 1.0},
            "multipliers": {LAYER: torch.tensor([MULTIPLIERS])},
            "schedule": {"g": 2, "p": 0, "L_prev": float("inf")},
        }},
    }
    torch.save(checkpoint, path)
    return path


def test_the_diagnosis_of_a_hand_written_stage(tmp_path):
    ckpt = write_checkpoint(tmp_path / "cbp.ckpt")
    torch.save({f"{LAYER}.weight": torch.tensor([START])}, tmp_path / "fp32_weights.pt")
    (row,) = diagnose(ckpt, tmp_path / "fp32_weights.pt", constraint_step="decoupled")
    assert row.layer == LAYER
    assert row.latent_mean_abs == pytest.approx((0.9 + 0.5 + 0.05 + 1.2) / 4)
    assert row.scale == 1.0
    assert row.task_step == pytest.approx(1.0)          # median of 1, 10, 1, 0 (the lower middle)
    assert row.multiplier_mean == pytest.approx(sum(MULTIPLIERS) / 4)
    assert row.multiplier_max == pytest.approx(1e-2)
    assert row.held_pulled == pytest.approx(0.5)        # the first and the fourth
    assert row.held == pytest.approx(0.25)              # the first
    assert row.changed == pytest.approx(0.5)            # the second and the third


def test_the_coupled_step_leaves_held_out_and_a_foreign_optimizer_state_is_refused(tmp_path):
    ckpt = write_checkpoint(tmp_path / "cbp.ckpt")
    (row,) = diagnose(ckpt, constraint_step="coupled")
    assert row.held is None and row.held_pulled is None and row.changed is None
    assert row.task_step == pytest.approx(1.0)
    wrong = write_checkpoint(tmp_path / "wrong.ckpt", exp_avg=[0.1, 0.1])
    with pytest.raises(ValueError, match="not this checkpoint's optimizer"):
        diagnose(wrong)


def test_the_command_reads_the_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    write_checkpoint(run / "checkpoints" / "cbp.ckpt")
    (run / ".hydra" / "config.yaml").write_text(
        "pretrained: null\nmethod:\n  cbp:\n    callback:\n      constraint_step: decoupled\n")
    assert main([str(run), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["held"] == pytest.approx(0.25)
    assert main([str(tmp_path)]) == 1
    assert "not a quantized run's folder" in capsys.readouterr().err
