"""Failing well (issue 39): refused before any work with what to type instead, stopped cleanly
when told, never mislabelled, checkpoints loaded safely, logger failures never masking errors."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cbpqsnn import pipeline, preflight
from cbpqsnn.checkpoints import check_stage_checkpoint, read_checkpoint
from cbpqsnn.config_check import ConfigError, check_config
from cbpqsnn.guards import FiniteLossGuard
from cbpqsnn.loggers import LoggerError, finish_loggers, make_loggers
from tests.conftest import ROOT, TINY, compose

ENV = {**os.environ, "WANDB_MODE": "disabled"}


def train_py(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "src" / "train.py"), *args],
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def refused(overrides: list[str], **options) -> str:
    with pytest.raises(ConfigError) as err:
        preflight.check_run(compose(overrides), **options)
    return str(err.value)


# -- never mislabel ---------------------------------------------------------------------------
def test_levels_that_are_not_the_named_set_are_refused_with_how_to_name_them():
    message = refused(["quant.levels=[0.5,-1,1]"])  # quant=binary is the default
    assert "quant.levels=[-1.0, 0.5, 1.0] is not the level set quant.name=binary" in message
    assert "quant.name=custom3" in message and "conf/quant/<name>.yaml" in message
    assert "quant.levels=[-1.0, 0.0, 1.0] is not the level set quant.name=binary" in refused(
        ["quant.levels=ternary"])
    check_config(compose(["quant.levels=[1,-1]"]))  # the binary set, written another way
    assert "letters, digits, _ and - only" in refused(["quant.name=my/set", "quant.levels=[0.5,-1,1]"])


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("custom")
    cfg = compose([*TINY, "quant.name=custom3", "quant.levels=[0.5,-1,1]", "method.cbp.epochs=1"])
    return run_dir, pipeline.run(cfg, run_dir)


def test_a_custom_level_set_is_recorded_by_its_values_and_its_own_name(custom_run):
    _, summary = custom_run
    assert summary["quant"] == "custom3" and summary["levels"] == [-1.0, 0.5, 1.0]
    assert summary["bits_per_weight"] == 2  # three levels: two bits
    assert summary["precision"] == "32-true"  # as Lightning ran it


# -- load safely ------------------------------------------------------------------------------
class RunsCode:
    """Unpickling this would create a file: the proof that a checkpoint ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_are_read_without_running_code(tmp_path, custom_run):
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="objects other than tensors and plain values"):
        read_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()
    # the project's own checkpoints load as they are
    run_dir, _ = custom_run
    for name in ("fp32", "cbp"):
        assert "state_dict" in read_checkpoint(run_dir / "checkpoints" / f"{name}.ckpt")
    check_stage_checkpoint(run_dir / "checkpoints" / "fp32.ckpt", "pretrain")
    check_stage_checkpoint(run_dir / "checkpoints" / "cbp.ckpt", "cbp")


def test_a_file_that_is_not_a_checkpoint_says_so_plainly(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(ValueError, match=r"notes.txt: not a checkpoint \(a file written by torch.save"):
        read_checkpoint(text)
    assert f"pretrained={text}: not a checkpoint" in refused([f"pretrained={text}"])
    assert f"resume={text}: not a checkpoint" in refused([f"resume={text}"])
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")  # a torch file, not a stage's
    with pytest.raises(ValueError, match="not a Lightning checkpoint of a stage"):
        check_stage_checkpoint(tmp_path / "plain.ckpt", "pretrain")


# -- refuse before any work -------------------------------------------------------------------
@pytest.mark.parametrize("data", ["cifar10dvs", "dvs128_gesture", "cifar10", "nmnist"])
def test_missing_data_is_refused_up_front_with_the_real_keys(data, tmp_path):
    message = refused([f"data={data}", f"data.datamodule.root={tmp_path}"])
    assert "not found in" in message and str(tmp_path) in message
    assert "data.datamodule.root=<folder>" in message and "data.datamodule.download=true" in message
    preflight.check_run(compose([f"data={data}", f"data.datamodule.root={tmp_path}",
                                 "data.datamodule.download=true"]))  # the run fetches them


def test_train_py_refuses_missing_data_before_making_the_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    done = train_py("method=stbp", "data=cifar10dvs", "quant=binary",
                    f"data.datamodule.root={tmp_path}", f"hydra.run.dir={run_dir}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "data.datamodule.download=true" in done.stderr and "Traceback" not in done.stderr
    assert not run_dir.exists()


def test_every_job_of_a_sweep_is_checked_before_the_first_starts(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = train_py("--multirun", "T=4,0", f"hydra.sweep.dir={sweep_dir}")  # the bad job second
    assert done.returncode == 2, done.stderr[-3000:]
    assert "2 job(s) composed, none started" in done.stderr
    assert "(T=0):\n    - T=0: must be an integer >= 1" in done.stderr
    assert not sweep_dir.exists()  # no job ran, not even the valid first one


def test_seed_and_precision_are_checked():
    assert "seed='abc': must be an integer from 0 to" in refused(["seed=abc"])
    assert "seed=-1" in refused(["seed=-1"])
    assert "trainer.precision='16-mixd': valid choices:" in refused(["trainer.precision=16-mixd"])


def test_what_this_machine_cannot_run_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert "no GPU" in refused(["trainer=gpu"]) and "trainer=cpu" in refused(["trainer=gpu"])
    message = refused(["trainer.precision=16-mixed"])
    assert "trainer.precision=16-mixed needs a GPU" in message and "bf16-mixed" in message
    assert "trainer.devices=3 starts 3 training processes" in refused(["trainer.devices=3"])
    preflight.check_run(compose(["trainer=cpu", "trainer.devices=2", "trainer.precision=bf16-mixed"]))


def test_an_unwritable_log_folder_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = refused([f"paths.log_dir={blocker / 'logs'}"], run_dir=blocker / "logs" / "runs" / "x")
    assert f"paths.log_dir={blocker / 'logs'}: cannot create the run folder" in message
    assert "is not a folder" in message


# -- stop cleanly -----------------------------------------------------------------------------
def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT back to its default: a job started in the background (``cmd &``, nohup) inherits it
    ignored, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def ctrl_c():
    """SIGINT raises KeyboardInterrupt in this process, also where pytest started with it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def interrupt_at(monkeypatch, stage: str, epoch: int, signum: int) -> None:
    """Send ``signum`` to this process in the first batch of ``epoch`` of ``stage``."""
    class Interrupter(FiniteLossGuard):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            if self.stage == stage and trainer.current_epoch == epoch and batch_idx == 0:
                os.kill(os.getpid(), signum)

    monkeypatch.setattr(pipeline, "FiniteLossGuard", Interrupter)


RESUMABLE = [*TINY, "method.pretrain.epochs=2", "method.cbp.epochs=2", "method.cbp.callback.p_max=1"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run both interrupted runs below must end at: its summary and its baked weights."""
    run_dir = tmp_path_factory.mktemp("whole")
    return pipeline.run(compose(RESUMABLE), run_dir), torch.load(run_dir / "quantized.pt"), run_dir


def csv_rows(run_dir, stage):
    with (run_dir / "csv" / stage / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize(("stage", "signum"), [("pretrain", signal.SIGINT), ("cbp", signal.SIGTERM)])
def test_an_interrupted_stage_resumes_to_the_uninterrupted_result(stage, signum, uninterrupted, tmp_path,
                                                                   monkeypatch, ctrl_c):
    """Ctrl-C / SIGTERM in the second epoch of a stage: the run stops with the overrides that
    continue it from the first epoch's checkpoint, and the continued run ends where an
    uninterrupted run ends, with the same CSV rows (continued in the folder it was cut in, as
    compare.py does: Lightning's CSVLogger would delete the first epoch's rows)."""
    base, (whole, whole_baked, whole_dir) = RESUMABLE, uninterrupted
    interrupt_at(monkeypatch, stage, 1, signum)
    with pytest.raises(pipeline.RunInterrupted) as stop:
        pipeline.run(compose(base), tmp_path / "cut")
    assert stop.value.stage == stage and signal.Signals(signum).name in stop.value.signal
    checkpoint = tmp_path / "cut" / "checkpoints" / ("fp32.ckpt" if stage == "pretrain" else "cbp.ckpt")
    expected = [f"resume={checkpoint}"]
    if stage == "cbp":
        expected.insert(0, f"pretrained={tmp_path / 'cut' / 'checkpoints' / 'fp32.ckpt'}")
    assert stop.value.resume == expected
    assert not (tmp_path / "cut" / "summary.json").exists()
    monkeypatch.undo()
    resumed = pipeline.run(compose([*base, *stop.value.resume]), tmp_path / "cut")
    for key in ("fp32_acc", "quant_acc", "latent_acc"):
        assert resumed[key] == whole[key], key
    assert resumed["resumed_from"] == str(checkpoint)
    rows, whole_rows = csv_rows(tmp_path / "cut", stage), csv_rows(whole_dir, stage)
    assert [(r["epoch"], r["step"]) for r in rows] == [(r["epoch"], r["step"]) for r in whole_rows]
    assert rows[0] == whole_rows[0]  # the first epoch's, written before the cut
    baked = torch.load(tmp_path / "cut" / "quantized.pt")
    assert all(torch.equal(whole_baked[k], baked[k]) for k in whole_baked)


def test_ctrl_c_prints_the_command_that_resumes(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "src" / "train.py"), *TINY, "method.pretrain.epochs=500",
               f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                               preexec_fn=_ctrl_c_as_in_a_terminal)
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "fp32.ckpt").is_file() and time.time() < deadline:
        time.sleep(0.5)
    assert process.poll() is None, process.communicate()[1][-3000:]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "stopped by Ctrl-C (SIGINT) during the pretrain stage" in stderr
    assert f"method.pretrain.epochs=500 resume={run_dir / 'checkpoints' / 'fp32.ckpt'}" in stderr
    assert "To continue it:\n  python " in stderr


def process_group(leader: int) -> list[str]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(leader)], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "train.py" in line]


def test_sigterm_stops_every_ddp_rank_within_30_s_in_the_cbp_stage(tmp_path):
    """SIGTERM to the launching process only (as timeout(1) or a container runtime sends it), in
    the second trainer of the run, where Lightning's own handler forwards nothing and waits."""
    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "src" / "train.py"), *TINY, "trainer.devices=2",
               "trainer.strategy=ddp", "method.cbp.epochs=500", f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=ENV, start_new_session=True)
    try:
        deadline = time.time() + 400
        while not (run_dir / "checkpoints" / "cbp.ckpt").is_file() and time.time() < deadline:
            time.sleep(0.5)
        assert len(process_group(process.pid)) == 2, "two ranks were not running the CBP stage"
        process.send_signal(signal.SIGTERM)
        stopped = time.time()
        while process_group(process.pid) and time.time() < stopped + 30:
            time.sleep(0.5)
        assert not process_group(process.pid), "ranks alive 30 s after SIGTERM"
        _, stderr = process.communicate(timeout=5)
        assert process.returncode == 143, stderr[-3000:]
        assert f"resume={run_dir / 'checkpoints' / 'cbp.ckpt'}" in stderr
    finally:
        if process_group(process.pid):
            os.killpg(process.pid, signal.SIGKILL)  # only this test's processes


# -- logger failures --------------------------------------------------------------------------
def test_wandb_online_without_a_key_names_the_other_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    with pytest.raises(LoggerError) as err:
        make_loggers(compose(["logger=wandb"]), tmp_path, "pretrain")
    assert "No API key" in str(err.value)
    assert "WANDB_MODE=offline" in str(err.value) and "logger=csv" in str(err.value)


def test_closing_a_logger_never_raises_over_the_error_that_ended_the_stage():
    class BrokenRun:
        def finish(self):
            raise RuntimeError("network down")

    class WandbLogger:  # finish_loggers knows W&B loggers by their class name
        _experiment = BrokenRun()

    class NeverStarted:
        _experiment = None

    NeverStarted.__name__ = "WandbLogger"
    finish_loggers([WandbLogger(), NeverStarted()])  # neither raises nor starts a run
