"""A real tiny multirun sweep (2 methods x 2 level sets, a few batches) and its report."""

import csv
import json
import os
import subprocess
import sys

import pytest

from cbpqsnn.reporting import aggregate, report_sweep
from tests.conftest import ROOT, TINY


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("sweep")
    overrides = [o for o in TINY if not o.startswith("method.cbp.epochs")] + ["method.cbp.epochs=1"]
    cmd = [sys.executable, str(ROOT / "src/train.py"), "--multirun", "method=stbp,sg",
           "quant=binary,ternary", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


def test_multirun_sweep_leaves_one_run_folder_per_job(sweep):
    summaries = sorted(sweep.glob("*/summary.json"))
    assert len(summaries) == 4
    combos = {(s["method"], s["quant"]) for s in map(lambda p: json.loads(p.read_text()), summaries)}
    assert combos == {("stbp", "binary"), ("stbp", "ternary"), ("sg", "binary"), ("sg", "ternary")}


def test_report_table_matches_the_summaries_and_plots_are_written(sweep, tmp_path):
    result = report_sweep(sweep, tmp_path)
    rows = list(csv.DictReader(result["csv"].open()))
    assert len(rows) == 4
    for path in sweep.glob("*/summary.json"):
        s = json.loads(path.read_text())
        (row,) = [r for r in rows if r["row"] == s["row"] and r["quant"] == s["quant"]]
        assert float(row["fp32_acc"]) == pytest.approx(s["fp32_acc"])
        assert float(row["quant_acc"]) == pytest.approx(s["quant_acc"])
        assert float(row["acc_delta"]) == pytest.approx(s["acc_delta"])
        assert float(row["memory_ratio"]) == pytest.approx(s["memory_ratio"])
    markdown = result["markdown"].read_text()
    assert markdown.count("\n") == 2 + 4 and "stbp_mnist5k" in markdown and "sg_mnist5k" in markdown
    names = {p.name for p in result["plots"]}
    assert {"accuracy.png", "cbp_curves.png"} <= names and len(names) == 2 + 4
    assert all(p.stat().st_size > 1000 for p in result["plots"])


def test_aggregate_mean_and_std_over_seeds():
    runs = [{"row": "r", "method": "m", "data": "d", "quant": "binary", "algorithm": "cbp",
             "fp32_acc": a, "quant_acc": b, "acc_delta": b - a, "memory_ratio": 0.035}
            for a, b in ((90.0, 89.0), (92.0, 90.0))]
    (entry,) = aggregate(runs)
    assert entry["seeds"] == 2 and entry["fp32_acc"] == 91.0 and entry["quant_acc"] == 89.5
    assert entry["acc_delta"] == -1.5 and entry["acc_delta_std"] == pytest.approx(0.7071, abs=1e-4)


def test_report_on_a_folder_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no summary.json"):
        report_sweep(tmp_path)


def test_a_runs_table_says_what_its_numbers_depend_on_beyond_the_config():
    from rich.console import Console

    from cbpqsnn.reporting import print_summary

    kept = ROOT / "results/compare/stbp_cifar10_cpu/seed3/binary_cbp/summary.json"
    summary = json.loads(kept.read_text())
    summary.pop("environment", None)
    lines = {}
    for environment in (None, {"torch": "2.5.0", "threads": 2, "cpu": "AMD EPYC", "gpu": None},
                        {"torch": "2.5.0", "threads": 8, "cpu": "Xeon", "gpu": "NVIDIA H200"}):
        console = Console(record=True, width=200)
        print_summary({**summary, "environment": environment}, "run", console)
        lines[environment and environment["threads"]] = [
            line for line in console.export_text().splitlines() if "PyTorch, threads" in line][0]
    assert lines[None].split()[-2:] == ["--", "│"]  # kept runs from before it was recorded
    assert "2.5.0, 2 thread(s), AMD EPYC" in lines[2]
    assert "2.5.0, 8 thread(s), NVIDIA H200" in lines[8]


def test_a_run_with_a_per_step_trace_gets_the_trace_plot(tmp_path):
    summary = {"row": "r", "method": "m", "data": "d", "quant": "binary", "algorithm": "cbp",
               "fp32_acc": 90.0, "quant_acc": 89.0, "acc_delta": -1.0, "memory_ratio": 0.035,
               "trace": {"step": [0, 5, 10], "cfs": [0.02, 0.01, 0.005], "near": [0.1, 0.4, 0.9],
                         "lambda_mean": [0.0, 1e-4, 2e-4]}}
    for name, traced in (("traced", True), ("plain", False)):
        (tmp_path / name).mkdir()
        entry = summary if traced else {k: v for k, v in summary.items() if k != "trace"}
        (tmp_path / name / "summary.json").write_text(json.dumps(entry))
    result = report_sweep(tmp_path, tmp_path / "out")
    assert "cbp_trace.png" in {p.name for p in result["plots"]}
    assert (tmp_path / "out" / "cbp_trace.png").stat().st_size > 1000
