"""CBP under data-parallel training: every rank takes the same schedule decisions."""

import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).with_name("ddp_cbp_script.py")


def test_ddp_ranks_keep_identical_multipliers_schedule_and_baked_weights(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert rank0["schedule"] == rank1["schedule"] and rank0["history"] == rank1["history"]
    assert rank0["schedule"]["g"] >= 3 and rank0["lr"] == rank1["lr"] < 0.05  # moved, LR dropped
    for name in rank0["multipliers"]:
        assert torch.equal(rank0["multipliers"][name], rank1["multipliers"][name])
        assert rank0["multipliers"][name].abs().sum() > 0
    for key in rank0["weights"]:
        assert torch.equal(rank0["weights"][key], rank1["weights"][key]), key
