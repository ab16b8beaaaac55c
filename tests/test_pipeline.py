"""End-to-end runs of the pipeline on mnist5k, a few batches per stage."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cbpqsnn.guards import NonFiniteLossError
from cbpqsnn.methods.stbp import STBPClassifier
from cbpqsnn.pipeline import run
from cbpqsnn.quant.quantizer import quantize
from tests.conftest import ROOT

SUMMARY_KEYS = {"method", "data", "model", "quant", "seed", "fp32_acc", "quant_acc", "acc_delta",
                "cfs_final", "levels_ok", "bits_per_weight", "weight_memory_bytes",
                "fp32_weight_memory_bytes", "memory_ratio", "g_final", "epochs_pretrain",
                "epochs_cbp", "wall_time_s"}


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    from tests.conftest import TINY, compose

    run_dir = tmp_path_factory.mktemp("binary")
    summary = run(compose([*TINY, "method.cbp.callback.p_max=1"]), run_dir)
    return run_dir, summary


def test_binary_run_leaves_summary_checkpoints_and_a_baked_state_dict(binary_run):
    run_dir, summary = binary_run
    assert SUMMARY_KEYS <= summary.keys()
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert (summary["method"], summary["data"], summary["quant"]) == ("stbp", "mnist5k", "binary")
    assert summary["history"]["cfs"][-1] < summary["cfs_start"]  # latents pulled onto the levels
    assert summary["bits_per_weight"] == 1 and summary["g_final"] == 3
    assert summary["acc_delta"] == pytest.approx(summary["quant_acc"] - summary["fp32_acc"])
    assert summary["weight_memory_bytes"] == summary["packed_payload_bytes"] or \
        abs(summary["weight_memory_bytes"] - summary["packed_payload_bytes"]) < 3
    assert 0 < summary["memory_ratio"] < 0.1
    assert summary["deploy"]["nir"] == "model.nir" and summary["deploy"]["integer"] == "model_int.npz"
    for name in ("checkpoints/fp32.ckpt", "checkpoints/cbp.ckpt", "quantized.pt",
                 "quantized_packed.pt", "csv/pretrain/metrics.csv", "csv/cbp/metrics.csv",
                 "model.nir", "model_int.npz"):
        assert (run_dir / name).is_file(), name
    state = torch.load(run_dir / "quantized.pt")  # plain state_dict, torch.load alone
    for layer in summary["quantized_layers"]:
        w = state[f"{layer}.weight"]
        assert w.unique().numel() == 2 and torch.allclose(w.unique().abs(), w.abs().mean())
    cbp_ckpt = torch.load(run_dir / "checkpoints/cbp.ckpt", weights_only=False)
    assert any(k.startswith("CBPCallback") for k in cbp_ckpt["callbacks"])
    header = (run_dir / "csv/cbp/metrics.csv").read_text().splitlines()[0]
    for column in ("cbp/cfs", "cbp/g", "cbp/lagrangian", "cbp/task_loss", "cbp/lambda_mean",
                   "cbp/lambda_max", "val/acc", "rate/net.layers.1"):
        assert column in header
    assert "rate/net.layers.1" in (run_dir / "csv/pretrain/metrics.csv").read_text().splitlines()[0]


def test_a_run_is_reproduced_bit_for_bit_at_the_thread_count_it_records(binary_run, tiny_cfg, tmp_path):
    """The same config at the same thread count trains the same FP32 weights; ``environment``
    records the count (at another count a conv's weight gradient sums in another order)."""
    run_dir, summary = binary_run
    assert summary["environment"]["threads"] == torch.get_num_threads()
    assert summary["environment"]["torch"] == torch.__version__
    again = run(tiny_cfg("method.cbp.callback.p_max=1"), tmp_path)
    first, second = (torch.load(d / "checkpoints/fp32.ckpt", weights_only=False)["state_dict"]
                     for d in (run_dir, tmp_path))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert again["fp32_acc"] == summary["fp32_acc"] and again["quant_acc"] == summary["quant_acc"]


def test_pretrained_checkpoint_skips_pretraining_and_reproduces_fp32_accuracy(binary_run, tiny_cfg,
                                                                               tmp_path):
    run_dir, summary = binary_run
    cfg = tiny_cfg(f"pretrained={run_dir / 'checkpoints/fp32.ckpt'}", "quant=ternary")
    again = run(cfg, tmp_path)
    assert again["epochs_pretrain"] == 0 and not (tmp_path / "checkpoints/fp32.ckpt").exists()
    assert again["fp32_acc"] == summary["fp32_acc"]
    assert again["bits_per_weight"] == 2 and again["cfs_start"] != summary["cfs_start"]


def test_resume_continues_an_interrupted_cbp_stage(binary_run, tiny_cfg, tmp_path):
    run_dir, _ = binary_run
    cfg = tiny_cfg(f"pretrained={run_dir / 'checkpoints/fp32.ckpt'}",
                   f"resume={run_dir / 'checkpoints/cbp.ckpt'}", "method.cbp.epochs=3",
                   "method.cbp.callback.p_max=1")
    resumed = run(cfg, tmp_path)
    assert resumed["history"]["g"] == [2, 3, 4]  # two epochs from the checkpoint, one more here


def test_resume_continues_an_interrupted_fp32_stage_as_if_never_stopped(tiny_cfg, tmp_path):
    # constant LR: a 1-epoch run is the 2-epoch run stopped after its first epoch (a schedule
    # would end at the stage's length); the resumed run gets the optimizer's moments back
    stage = ("quant=fp32", "method.pretrain.scheduler=null")
    whole = run(tiny_cfg(*stage, "method.pretrain.epochs=2"), tmp_path / "whole")
    run(tiny_cfg(*stage, "method.pretrain.epochs=1"), tmp_path / "cut")
    resumed = run(tiny_cfg(*stage, "method.pretrain.epochs=2",
                           f"resume={tmp_path / 'cut/checkpoints/fp32.ckpt'}"), tmp_path / "resumed")
    first, second = (torch.load(tmp_path / d / "checkpoints/fp32.ckpt", weights_only=False)
                     for d in ("whole", "resumed"))
    assert first["epoch"] == second["epoch"] == 1
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
    assert resumed["fp32_acc"] == whole["fp32_acc"]
    trained = (tmp_path / "resumed/csv/pretrain/metrics.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in trained} == {"1"}  # only the second epoch ran
    assert resumed["resumed_from"].endswith("cut/checkpoints/fp32.ckpt")


def test_a_cbp_checkpoint_cannot_resume_the_fp32_stage(binary_run, tiny_cfg, tmp_path):
    run_dir, _ = binary_run
    with pytest.raises(ValueError, match="give pretrained="):
        run(tiny_cfg(f"resume={run_dir / 'checkpoints/cbp.ckpt'}"), tmp_path)


def test_validation_split_gives_val_accuracies_and_the_trace_every_step(tiny_cfg, tmp_path):
    summary = run(tiny_cfg("data.datamodule.val_per_class=20", "method.cbp.callback.trace_every=1"),
                  tmp_path)
    assert summary["fp32_val_acc"] is not None and summary["val_acc"] is not None
    assert summary["trace"]["step"] == [0, 1, 2, 3, 4, 5, 6]  # 2 epochs x 3 batches
    assert summary["trace"]["cfs"][0] == pytest.approx(summary["cfs_start"])
    assert all(0 <= f <= 1 for f in summary["trace"]["near"])


def test_cbp_pulls_the_latents_onto_the_levels_and_ste_from_the_same_start_does_not(binary_run, tiny_cfg,
                                                                                   tmp_path):
    run_dir, _ = binary_run
    same_start = [f"pretrained={run_dir / 'checkpoints/fp32.ckpt'}", "method.cbp.epochs=3"]
    cbp = run(tiny_cfg(*same_start, "method.cbp.callback.p_max=1"), tmp_path / "cbp")
    ste = run(tiny_cfg(*same_start, "quant.algorithm=ste"), tmp_path / "ste")
    assert cbp["cfs_start"] == ste["cfs_start"]
    # measured: CBP 0.0094 -> 0.0045 over 3 epochs of 3 steps; STE 0.0094 -> 0.0098
    assert cbp["history"]["cfs"][-1] < 0.7 * cbp["cfs_start"]
    assert cbp["history"]["cfs"][-1] < 0.7 * ste["history"]["cfs"][-1]


def test_ptq_rounds_the_pretrained_network_without_a_stage_and_baselines_run_from_it(binary_run,
                                                                                   tiny_cfg, tmp_path):
    run_dir, _ = binary_run
    start = f"pretrained={run_dir / 'checkpoints/fp32.ckpt'}"
    ptq = run(tiny_cfg(start, "quant=ternary", "quant.algorithm=ptq"), tmp_path / "ptq")
    assert ptq["epochs_cbp"] == 0 and ptq["history"]["epoch"] == [] and ptq["levels_ok"]
    assert not (tmp_path / "ptq" / "checkpoints" / "cbp.ckpt").exists()
    assert ptq["latent_acc"] == ptq["fp32_acc"] and ptq["scale"] == "mean_abs"
    # the rounded pretrained weights, as the summary's FP32 checkpoint holds them
    fp32 = torch.load(run_dir / "checkpoints/fp32.ckpt", weights_only=False)["state_dict"]
    state = torch.load(tmp_path / "ptq" / "quantized.pt")
    for layer in ptq["quantized_layers"]:
        w = fp32[f"{layer}.weight"]
        levels = w.abs().mean() * torch.tensor([-1.0, 0.0, 1.0])
        assert torch.equal(state[f"{layer}.weight"], quantize(w, levels))
    lsq = run(tiny_cfg(start, "quant=ternary", "quant.algorithm=lsq", "method.cbp.epochs=1"),
              tmp_path / "lsq")
    assert lsq["levels_ok"] and lsq["epochs_cbp"] == 1 and lsq["fp32_acc"] == ptq["fp32_acc"]
    assert lsq["scale"] == "learned step (lsq)"
    lsq_state = torch.load(tmp_path / "lsq" / "quantized.pt")
    for layer in ptq["quantized_layers"]:  # its own step size, not the frozen mean|W|
        lsq_levels, ptq_levels = lsq_state[f"{layer}.weight"].unique(), state[f"{layer}.weight"].unique()
        assert len(lsq_levels) <= 3 and float(lsq_levels.max()) != pytest.approx(float(ptq_levels.max()))


def test_pure_bf16_run_completes_both_stages(tiny_cfg, tmp_path):
    """trainer.precision=bf16-true on the CPU: float32 multipliers, bf16 weights (issue: a bf16
    constraint assigned to a float32 multiplier's grad used to crash)."""
    summary = run(tiny_cfg("trainer.precision=bf16-true", "method.cbp.callback.p_max=1",
                           "model.spec=[C8,P2,FC32]"), tmp_path)  # bf16 convolutions are slow on a CPU
    assert summary["levels_ok"] and summary["history"]["cfs"][-1] < summary["cfs_start"]
    state = torch.load(tmp_path / "quantized.pt")
    layer = summary["quantized_layers"][0]
    assert state[f"{layer}.weight"].dtype == torch.bfloat16 and state[f"{layer}.weight"].unique().numel() == 2


def test_fp32_run_skips_the_cbp_stage(tiny_cfg, tmp_path):
    summary = run(tiny_cfg("quant=fp32"), tmp_path)
    assert summary["quant_acc"] == summary["fp32_acc"] and summary["memory_ratio"] == 1.0
    assert not (tmp_path / "checkpoints/cbp.ckpt").exists()
    assert not (tmp_path / "quantized.pt").exists()


def test_missing_pretrained_checkpoint_names_the_path(tiny_cfg, tmp_path):
    with pytest.raises(ValueError, match="nowhere/fp32.ckpt: no such file"):  # the config check
        run(tiny_cfg(f"pretrained={tmp_path / 'nowhere/fp32.ckpt'}"), tmp_path)
    assert not (tmp_path / "summary.json").exists()


def test_incompatible_pretrained_checkpoint_says_what_did_not_match(binary_run, tiny_cfg, tmp_path):
    run_dir, _ = binary_run
    cfg = tiny_cfg(f"pretrained={run_dir / 'checkpoints/fp32.ckpt'}", "model.spec=[C16,P2,FC64]")
    expected = r"shape mismatch: .*net.layers.0.weight: checkpoint \(32, 1, 3, 3\) vs model \(16, 1, 3, 3\)"
    with pytest.raises(ValueError, match=expected) as err:
        run(cfg, tmp_path)
    assert str(run_dir / "checkpoints/fp32.ckpt") in str(err.value)
    with pytest.raises(ValueError, match="CBP-stage checkpoint"):
        run(tiny_cfg(f"pretrained={run_dir / 'checkpoints/cbp.ckpt'}"), tmp_path)


def test_nan_loss_stops_the_run_naming_stage_and_epoch_without_a_result(tiny_cfg, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(STBPClassifier, "loss", lambda self, out, y: out.sum() * float("nan"))
    with pytest.raises(NonFiniteLossError, match="pretrain stage, epoch 0"):
        run(tiny_cfg(), tmp_path)
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "quantized.pt").exists()


def test_unknown_level_set_and_algorithm_list_the_valid_choices(tiny_cfg, tmp_path):
    with pytest.raises(ValueError, match="valid choices: binary, ternary"):
        run(tiny_cfg("quant.levels=quaternary"), tmp_path)
    with pytest.raises(ValueError, match=r"quant.algorithm='magic': valid choices: "
                                         r"cbp, ptq, ste, scaled_ste, lsq \(quant=fp32: none, finetune\)"):
        run(tiny_cfg("quant.algorithm=magic"), tmp_path)


def test_cli_unknown_option_lists_the_available_ones():
    result = subprocess.run([sys.executable, str(ROOT / "src/train.py"), "method=nosuch"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Could not find 'method/nosuch'" in result.stderr
    assert "stbp" in result.stderr  # the available options are listed


@pytest.mark.parametrize("method", ["stbp", "sg", "tsslbp", "calib"])
def test_one_top_level_T_feeds_the_method_and_the_event_data(method):
    from tests.conftest import compose

    default = {"tsslbp": 5, "calib": 32}.get(method, 4)  # the method group's default
    cfg = compose([f"method={method}", "data=nmnist"])
    assert cfg.T == cfg.method.module.T == cfg.data.datamodule.T == default
    cfg = compose([f"method={method}", "data=nmnist", "T=6"])
    assert cfg.method.module.T == cfg.data.datamodule.T == 6
    assert compose([f"method={method}"]).method.module.T == default


def test_event_data_and_method_disagreeing_on_T_is_a_clear_error(tmp_path):
    from types import SimpleNamespace

    from cbpqsnn.builders import build_module
    from cbpqsnn.data.frames import FrameSpec
    from tests.conftest import compose

    cfg = compose(["method=sg", "data=nmnist", "method.module.T=8"])
    datamodule = SimpleNamespace(spec=FrameSpec.make(16, (34, 34), None), in_shape=(2, 34, 34),
                                 num_classes=10)
    with pytest.raises(ValueError, match=r"T = 16 frames .* method.module.T = 8"):
        build_module(cfg, datamodule)
    datamodule.spec = FrameSpec.make(8, (34, 34), None)
    assert build_module(cfg, datamodule).net is not None


def test_ddp_run_leaves_one_set_of_artifacts_with_single_process_accuracies(tmp_path):
    """The whole pipeline under DDP (2 CPU processes, gloo; Lightning starts rank 1 as a copy of
    the command): one summary, one quantized.pt, no temporary file, and the accuracies a single
    process measures on the same weights (no distributed sampler padding the test set)."""
    from cbpqsnn.run_folder import evaluate_run
    from tests.conftest import TINY

    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "src/train.py"), *TINY, "trainer.accelerator=cpu",
           "trainer.devices=2", "trainer.strategy=ddp", "data.datamodule.eval_batch_size=300",
           f"hydra.run.dir={run_dir}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**os.environ, "WANDB_MODE": "disabled"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("summary.json")] == [Path("run/summary.json")]
    assert len(list(tmp_path.rglob("quantized.pt"))) == 1 and not list(tmp_path.rglob("*.tmp"))
    assert result.stdout.count("FP32 test accuracy") == 1  # one rank prints the table
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["quant_acc"] == pytest.approx(evaluate_run(run_dir, "quantized"))
    assert summary["fp32_acc"] == pytest.approx(evaluate_run(run_dir, "fp32"))


def test_only_global_rank_zero_writes_the_run_artifacts(tiny_cfg, tmp_path, monkeypatch):
    from lightning.pytorch.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    summary = run(tiny_cfg("method.cbp.epochs=1"), tmp_path)
    assert summary["quant_acc"] >= 0  # the rank computed everything ...
    for name in ("summary.json", "quantized.pt", "quantized_packed.pt"):  # ... and wrote nothing
        assert not (tmp_path / name).exists(), name


def test_channels_last_run_completes_from_a_contiguous_runs_checkpoint_with_its_numbers(binary_run, tiny_cfg,
                                                                                       tmp_path):
    """The whole pipeline (CBP stage, bake, evaluation, export, deployment checks) with
    ``memory_format=channels_last``, from the FP32 checkpoint of a contiguous run."""
    run_dir, summary = binary_run
    fast = run(tiny_cfg(f"pretrained={run_dir / 'checkpoints/fp32.ckpt'}",
                        "method.module.memory_format=channels_last", "method.cbp.callback.p_max=1"), tmp_path)
    assert fast["levels_ok"] and fast["history"]["cfs"][-1] < fast["cfs_start"]
    for key in ("fp32_acc", "cfs_start"):
        assert fast[key] == pytest.approx(summary[key], abs=1e-6), key
