"""The launcher configs: parallel local jobs (joblib) and SLURM (submitit) run real sweeps."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY

FAKE_SLURM = ROOT / "tests" / "fake_slurm"


def compose_launcher(name: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"hydra/launcher={name}"], return_hydra_config=True).hydra


def test_local_parallel_is_joblib_with_two_processes():
    launcher = compose_launcher("local_parallel").launcher
    assert launcher._target_.endswith("JoblibLauncher")
    assert launcher.n_jobs == 2 and launcher.prefer == "processes"


def test_slurm_is_submitit_with_one_gpu_task_per_job():
    hydra = compose_launcher("slurm")
    launcher = hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (1, 1, 1)
    assert launcher.timeout_min == 2880 and launcher.max_num_timeout == 0
    assert launcher.submitit_folder.startswith(hydra.sweep.dir)


def run_sweep(tmp_path, *extra, env=None, timeout=600):
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "src/train.py"), "--multirun", "quant=binary,ternary",
           *TINY, "quant.algorithm=ptq", *extra, f"hydra.sweep.dir={sweep_dir}"]  # ptq: no CBP stage
    env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]
    assert sorted(s["quant"] for s in summaries) == ["binary", "ternary"]
    assert all(s["bits_per_weight"] == {"binary": 1, "ternary": 2}[s["quant"]] for s in summaries)
    return sweep_dir


@pytest.mark.slow
def test_joblib_launcher_runs_the_jobs_in_parallel_processes(tmp_path):
    run_sweep(tmp_path, "hydra/launcher=local_parallel")


@pytest.mark.slow
def test_slurm_launcher_submits_a_job_array(tmp_path):
    """The sweep goes through submitit's SLURM executor for real; only sbatch / srun / sacct are
    stand-ins (tests/fake_slurm) that run the submitted array tasks on this machine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sbatch", "srun", "sacct"):
        shutil.copy(FAKE_SLURM / tool, bin_dir / tool)
    sweep_dir = run_sweep(tmp_path, "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                          env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, timeout=400)
    (script,) = (sweep_dir / ".submitit").glob("*/*_submission.sh")
    text = script.read_text()
    for flag in ("--array=0-1%2", "--gpus-per-node=1", "--time=2880", "--partition=gpu",
                 "--cpus-per-task=8", "--mem=64GB"):
        assert f"#SBATCH {flag}" in text, f"{flag} missing from\n{text}"
