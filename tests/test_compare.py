"""The algorithm comparison: one FP32 network per seed, every algorithm from it, one report."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from cbpqsnn import comparison
from cbpqsnn.comparison import FAIR, parse_variants, plan
from cbpqsnn.reporting import against_reference, aggregate, report_sweep, side_by_side
from tests.conftest import ROOT, TINY

_spec = importlib.util.spec_from_file_location("cbpqsnn_compare_cli", ROOT / "src" / "compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def test_plan_starts_every_algorithm_from_its_seeds_fp32_run_and_skips_undefined_pairs(tmp_path):
    jobs, skipped = plan(["experiment=stbp_mnist5k"], [1, 2], ["binary", "ternary"],
                         ["ptq", "lsq", "cbp"], tmp_path)
    names = [(j.seed, j.name) for j in jobs]
    assert names == [(1, "fp32"), (1, "binary_ptq"), (1, "binary_cbp"), (1, "ternary_ptq"),
                     (1, "ternary_lsq"), (1, "ternary_cbp"), (2, "fp32"), (2, "binary_ptq"),
                     (2, "binary_cbp"), (2, "ternary_ptq"), (2, "ternary_lsq"), (2, "ternary_cbp")]
    assert len(skipped) == 1 and skipped[0].startswith("binary / lsq")
    fp32, cbp = jobs[6], jobs[8]
    assert "quant=fp32" in fp32.overrides and "seed=2" in fp32.overrides
    command = cbp.command(ROOT / "src" / "train.py")
    assert f"pretrained={fp32.run_dir / 'checkpoints' / 'fp32.ckpt'}" in command
    assert all(o in command for o in FAIR) and "quant.algorithm=cbp" in command
    with pytest.raises(ValueError, match="valid choices"):
        plan([], [1], ["binary"], ["magic"], tmp_path)


def test_the_reference_fine_tunes_each_seeds_fp32_network_unquantized(tmp_path):
    jobs, _ = plan(["experiment=stbp_mnist5k"], [1, 2], ["binary"], ["cbp"], tmp_path, reference=True)
    assert [(j.seed, j.name) for j in jobs] == [(1, "fp32"), (1, "fp32_finetune"), (1, "binary_cbp"),
                                                (2, "fp32"), (2, "fp32_finetune"), (2, "binary_cbp")]
    reference = jobs[4]
    command = reference.command(ROOT / "src" / "train.py")
    assert f"pretrained={jobs[3].run_dir / 'checkpoints' / 'fp32.ckpt'}" in command
    assert "quant=fp32" in command and "quant.algorithm=finetune" in command and "seed=2" in command
    assert all(o in command for o in FAIR)


def test_the_report_pairs_every_algorithm_with_the_reference_of_its_seed():
    def run(quant, algorithm, seed, acc, variant=None):
        return {"row": "r", "quant": quant, "algorithm": algorithm, "variant": variant, "seed": seed,
                "fp32_acc": 60.0, "quant_acc": acc, "acc_delta": acc - 60.0}

    summaries = [run("fp32", "finetune", 1, 70.0), run("fp32", "finetune", 2, 72.0),
                 run("binary", "cbp", 1, 61.0), run("binary", "cbp", 2, 64.0),
                 run("binary", "ste", 1, 69.0), run("binary", "ste", 3, 50.0),  # seed 3: no reference
                 run("ternary", "cbp", 2, 71.5, variant="slow"), run("fp32", "none", 1, 60.0)]
    header, _, binary, ternary = against_reference(summaries)
    assert header == "| row | quant | cbp | cbp@slow | ste |"
    # cbp: 61 - 70 = -9, 64 - 72 = -8 -> -8.5 ± 0.71; ste: only seed 1 pairs, 69 - 70
    assert binary == "| r | binary | -8.50 ± 0.71 (n=2) | -- | -1.00 (n=1) |"
    assert ternary == "| r | ternary | -- | -0.50 (n=1) | -- |"
    header, _, line, _ = side_by_side(aggregate(summaries))
    assert header.endswith("| FP32 fine-tuned as long |")
    assert line.endswith("| 71.00 ± 1.41 (+11.00 ± 1.41) |")
    assert against_reference([s for s in summaries if s["algorithm"] != "finetune"]) == []


def test_variants_rerun_every_pair_with_their_settings_from_the_same_fp32_run(tmp_path):
    variants = parse_variants(["slow=method.cbp.callback.p_max=4", "drop=method.cbp.callback.lr_drop_at_g=2",
                               "slow=method.cbp.callback.multiplier_lr=1e-5"])
    assert variants == {"slow": ["method.cbp.callback.p_max=4", "method.cbp.callback.multiplier_lr=1e-5"],
                        "drop": ["method.cbp.callback.lr_drop_at_g=2"]}
    jobs, _ = plan(["experiment=stbp_mnist5k"], [1], ["binary"], ["ste", "cbp"], tmp_path, variants)
    assert [j.name for j in jobs] == ["fp32", "binary_ste@slow", "binary_ste@drop", "binary_cbp@slow",
                                      "binary_cbp@drop"]
    drop = jobs[4]
    assert drop.run_dir == tmp_path / "seed1" / "binary_cbp@drop" and drop.fp32_checkpoint == (
        jobs[0].run_dir / "checkpoints" / "fp32.ckpt")
    # the variant's settings come after the protocol's, so it may switch CBP's LR drop back on
    o = list(drop.overrides)
    assert o.index("method.cbp.callback.lr_drop_at_g=2") > o.index(FAIR[0]) and "variant=drop" in o
    assert not any("p_max" in x for x in o)
    for bad, match in (("slow", "NAME=KEY=VALUE"), ("no space=a=1", "NAME=KEY=VALUE"),
                       ("x=seed=3", "may not set 'seed'"), ("x=model.width=2", "may not set 'model.width'"),
                       ("x=method.pretrain.epochs=1", "may not set"), ("x=+quant.scale=mse", "may not set")):
        with pytest.raises(ValueError, match=match):
            parse_variants([bad])


def test_the_report_shows_a_variant_as_an_algorithm_of_its_own():
    def run(algorithm, variant, acc):
        return {"row": "r", "quant": "binary", "algorithm": algorithm, "variant": variant,
                "fp32_acc": 90.0, "quant_acc": acc, "acc_delta": acc - 90.0}

    table = aggregate([run("cbp", None, 88.0), run("cbp", "slow", 89.0), run("cbp", "slow", 89.5),
                       run("ptq", None, 50.0), run("scaled_ste", None, 86.0),
                       {k: v for k, v in run("ste", None, 87.0).items() if k != "variant"}])
    assert [(e["algorithm"], e["seeds"]) for e in table] == [
        ("cbp", 1), ("cbp@slow", 2), ("ptq", 1), ("scaled_ste", 1), ("ste", 1)]
    header, _, line = side_by_side(table)  # columns in the algorithms' order, variants beside theirs
    assert header == "| row | quant | cbp | cbp@slow | ptq | ste | scaled_ste |"
    assert "**89.25 ± 0.35 (-0.75 ± 0.35)**" in line


def test_one_command_runs_the_comparison_and_one_reports_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "cmp"
    tiny = [o for o in TINY if not o.startswith("method.cbp.epochs")] + ["method.cbp.epochs=1"]
    args = [*tiny, "--out", str(out), "--seeds", "1", "--levels", "binary",
            "--algorithms", "ptq,ste", "--reference"]
    assert compare.main(args) == 0
    summaries = {p.parent.name: json.loads(p.read_text()) for p in out.rglob("summary.json")}
    assert set(summaries) == {"fp32", "fp32_finetune", "binary_ptq", "binary_ste"}
    fp32 = summaries["fp32"]["fp32_acc"]
    assert all(s["fp32_acc"] == fp32 for s in summaries.values())  # one FP32 network
    assert summaries["binary_ptq"]["epochs_cbp"] == 0 and summaries["binary_ste"]["epochs_cbp"] == 1
    # the reference trained the stage on the FP32 weights, nothing quantized
    reference = summaries["fp32_finetune"]
    assert reference["epochs_cbp"] == 1 and reference["quantized_layers"] == []
    assert reference["bits_per_weight"] == 32 and reference["acc_delta"] == reference["quant_acc"] - fp32
    start = torch.load(out / "seed1" / "fp32" / "checkpoints" / "fp32.ckpt", weights_only=False)["state_dict"]
    tuned = torch.load(reference["cbp_checkpoint"], weights_only=False)["state_dict"]
    assert start.keys() == tuned.keys()
    assert any(not torch.equal(start[k], tuned[k]) for k in start if k.endswith("weight"))
    mtime = os.path.getmtime(out / "seed1" / "binary_ste" / "summary.json")
    assert compare.main(args) == 0  # run again: finished jobs are kept
    assert os.path.getmtime(out / "seed1" / "binary_ste" / "summary.json") == mtime
    variant = ["--algorithms", "ste", "--variant", "lr=method.cbp.optimizer.lr=0.01"]
    assert compare.main([*args[:-3], *variant]) == 0  # the same FP32 run, one more job
    assert os.path.getmtime(out / "seed1" / "binary_ste" / "summary.json") == mtime
    tried = out / "seed1" / "binary_ste@lr"
    assert json.loads((tried / "summary.json").read_text())["variant"] == "lr"
    assert "method.cbp.optimizer.lr=0.01" in (tried / ".hydra" / "overrides.yaml").read_text()
    report = report_sweep(out, plots=False)
    text = report["markdown"].read_text()
    assert "Algorithms side by side" in text and "| stbp_mnist5k | binary |" in text
    assert "| row | quant | ptq | ste | ste@lr | FP32 fine-tuned as long |" in text
    ptq, ste = (summaries[f"binary_{a}"]["quant_acc"] - reference["quant_acc"] for a in ("ptq", "ste"))
    assert "At equal training" in text
    assert f"| stbp_mnist5k | binary | {ptq:+.2f} (n=1) | {ste:+.2f} (n=1) |" in text
    assert "cfs_by_algorithm" not in text


def test_a_bad_override_stops_the_comparison_before_any_job_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare.main(["+method.cbp.epoch=3", "--out", str(out), "--seeds", "1"]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err
    assert compare.main(["quant.scael=mse", "--out", str(out), "--seeds", "1"]) == 2
    assert "Could not override 'quant.scael'" in capsys.readouterr().err
    assert not out.exists()


def test_a_kept_fp32_run_without_its_checkpoint_stops_the_comparison_before_any_job_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    fp32 = out / "seed1" / "fp32"
    fp32.mkdir(parents=True)
    (fp32 / "summary.json").write_text(json.dumps({"environment": {"threads": 2}}))
    assert compare.main(["--out", str(out), "--seeds", "1", "--levels", "binary",
                         "--algorithms", "ptq"]) == 2
    err = capsys.readouterr().err
    assert "seed 1: its FP32 run" in err and "checkpoint" in err
    assert "thread count it was trained with: 2" in err
    assert sorted(p.name for p in (out / "seed1").iterdir()) == ["fp32"]  # nothing ran
    (fp32 / "checkpoints").mkdir()
    (fp32 / "checkpoints" / "fp32.ckpt").write_text("w")
    jobs, _ = comparison.plan([], [1], ["binary"], ["ptq"], out)
    comparison.check_checkpoints(jobs)  # with its checkpoint, the seed can be extended


FAKE_TRAIN = """
import json, os, sys, time
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
run = Path(args["hydra.run.dir"])
if "pretrained" in args:
    assert Path(args["pretrained"]).is_file(), "started before its FP32 checkpoint existed"
start = time.time()
time.sleep(0.6)
if args.get("quant") == "binary" and args.get("quant.algorithm") == "ste":
    sys.exit(3)
if args["quant"] == "fp32":
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "fp32.ckpt").write_text("w")
(run / "summary.json").write_text(json.dumps(
    {"start": start, "end": time.time(), "threads": os.environ.get("OMP_NUM_THREADS")}))
"""


def test_parallel_jobs_wait_for_their_seeds_fp32_run_and_share_the_cores(tmp_path, monkeypatch):
    """A stand-in ``train.py`` sleeps, writes the checkpoint / summary and fails for binary STE."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(comparison.os, "cpu_count", lambda: 2)
    fake = tmp_path / "train.py"
    fake.write_text(FAKE_TRAIN)
    jobs, _ = comparison.plan([], [1, 2], ["binary"], ["ptq", "cbp"], tmp_path / "cmp")
    comparison.run_jobs(jobs, fake, log=lambda _: None, parallel=2)
    summary = {(j.seed, j.name): json.loads((j.run_dir / "summary.json").read_text()) for j in jobs}
    assert {s["threads"] for s in summary.values()} == {"1"}  # 2 cores / 2 jobs
    for seed in (1, 2):
        fp32_end = summary[seed, "fp32"]["end"]
        assert all(summary[seed, name]["start"] >= fp32_end for name in ("binary_ptq", "binary_cbp"))
    spans = sorted((s["start"], s["end"]) for s in summary.values())
    most = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert most == 2  # two at a time, never three
    alone, _ = comparison.plan([], [5], ["binary"], ["ptq", "cbp"], tmp_path / "cmp")
    comparison.run_jobs(alone, fake, log=lambda _: None, parallel=2)
    threads = {j.name: json.loads((j.run_dir / "summary.json").read_text())["threads"] for j in alone}
    assert threads == {"fp32": "1", "binary_ptq": "1", "binary_cbp": "1"}  # FP32 alone too: the same
    assert comparison.job_threads(1) == 2 and comparison.job_threads(2, threads=2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert comparison.job_threads(2) == 3  # set by the user: every job gets it
    with pytest.raises(ValueError, match="threads must be at least 1"):
        comparison.job_threads(2, threads=0)
    failing, _ = comparison.plan([], [3], ["binary"], ["ste", "cbp"], tmp_path / "cmp")
    with pytest.raises(RuntimeError, match="seed 3 binary_ste failed"):
        comparison.run_jobs(failing, fake, log=lambda _: None, parallel=2)
    assert (tmp_path / "cmp" / "seed3" / "binary_cbp" / "summary.json").is_file()  # ran beside it
    one_at_a_time, _ = comparison.plan([], [4], ["binary"], ["ste", "cbp"], tmp_path / "cmp")
    with pytest.raises(RuntimeError, match="seed 4 binary_ste failed"):
        comparison.run_jobs(one_at_a_time, fake, log=lambda _: None, parallel=1)
    assert not (tmp_path / "cmp" / "seed4" / "binary_cbp").exists()  # nothing starts after a failure
