"""The algorithm comparison: one FP32 network per seed, every algorithm from it, one report."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from cbpqsnn.comparison import FAIR, plan
from cbpqsnn.reporting import report_sweep
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


def test_one_command_runs_the_comparison_and_one_reports_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "cmp"
    tiny = [o for o in TINY if not o.startswith("method.cbp.epochs")] + ["method.cbp.epochs=1"]
    args = [*tiny, "--out", str(out), "--seeds", "1", "--levels", "binary",
            "--algorithms", "ptq,ste"]
    assert compare.main(args) == 0
    summaries = {p.parent.name: json.loads(p.read_text()) for p in out.rglob("summary.json")}
    assert set(summaries) == {"fp32", "binary_ptq", "binary_ste"}
    fp32 = summaries["fp32"]["fp32_acc"]
    assert all(s["fp32_acc"] == fp32 for s in summaries.values())  # one FP32 network
    assert summaries["binary_ptq"]["epochs_cbp"] == 0 and summaries["binary_ste"]["epochs_cbp"] == 1
    mtime = os.path.getmtime(out / "seed1" / "binary_ste" / "summary.json")
    assert compare.main(args) == 0  # run again: finished jobs are kept
    assert os.path.getmtime(out / "seed1" / "binary_ste" / "summary.json") == mtime
    report = report_sweep(out, plots=False)
    text = report["markdown"].read_text()
    assert "Algorithms side by side" in text and "| stbp_mnist5k | binary |" in text
    assert "cfs_by_algorithm" not in text


def test_a_bad_override_stops_the_comparison_before_any_job_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare.main(["+method.cbp.epoch=3", "--out", str(out), "--seeds", "1"]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err
    assert compare.main(["quant.scael=mse", "--out", str(out), "--seeds", "1"]) == 2
    assert "Could not override 'quant.scael'" in capsys.readouterr().err
    assert not out.exists()
