"""The kept summaries of real-data runs (``results/``): the report still reads them, each file is
the job its folder names, and every job of a seed started from that seed's one FP32 network (the
comparison's fair protocol)."""

from __future__ import annotations

import csv
import json
import re
import statistics
from pathlib import Path

import pytest

from cbpqsnn.quant.baselines import algorithm_label
from cbpqsnn.reporting import report_sweep
from tests.conftest import ROOT

# results/<comparison>/<row>/seed<N>/<job>/summary.json, and a tuned comparison's runs in
# results/<comparison>/<name>/tuning/seed<N>/<job>/ beside its seed<N>/fp32/; a folder that is not
# named after its row keeps the command that made it (command.txt, with experiment=<row>)
COMPARISONS = sorted(p for p in (ROOT / "results").glob("*/*") if p.is_dir())


def row_of(comparison: Path) -> str:
    command = comparison / "command.txt"
    if not command.is_file():
        return comparison.name
    (row,) = re.findall(r"\bexperiment=(\S+)", command.read_text())
    return row


def summaries(comparison: Path) -> dict[Path, dict]:
    return {p: json.loads(p.read_text()) for p in sorted(comparison.rglob("summary.json"))}


@pytest.mark.parametrize("comparison", COMPARISONS, ids=lambda p: p.name)
def test_every_kept_summary_is_the_job_its_folder_names(comparison):
    found = summaries(comparison)
    assert found, comparison
    for path, s in found.items():
        job, seed = path.parent.name, path.parent.parent.name
        assert (s["row"], seed) == (row_of(comparison), f"seed{s['seed']}"), path
        label = algorithm_label(s["algorithm"], s.get("variant"))
        assert job == ("fp32" if s["algorithm"] == "none" else f"{s['quant']}_{label}"), path
        assert s["acc_delta"] == pytest.approx(s["quant_acc"] - s["fp32_acc"]), path


@pytest.mark.parametrize("comparison", COMPARISONS, ids=lambda p: p.name)
def test_every_job_of_a_seed_starts_from_that_seeds_fp32_network(comparison):
    by_seed: dict[int, list[dict]] = {}
    for s in summaries(comparison).values():
        by_seed.setdefault(s["seed"], []).append(s)
    for seed, runs in by_seed.items():
        (fp32,) = [s for s in runs if s["algorithm"] == "none"]
        for s in runs:
            assert s["fp32_acc"] == fp32["fp32_acc"], (seed, s["quant"], s["algorithm"])
            if s["algorithm"] != "none":  # the FP32 run's own
                assert Path(s["fp32_checkpoint"]).parts[-4:-2] == (f"seed{seed}", "fp32")


@pytest.mark.parametrize("comparison", COMPARISONS, ids=lambda p: p.name)
def test_the_report_of_the_kept_summaries_averages_them_over_seeds(comparison, tmp_path):
    found = list(summaries(comparison).values())
    result = report_sweep(comparison, tmp_path, plots=False)
    rows = list(csv.DictReader(result["csv"].open()))
    assert result["runs"] == len(found)
    for row in rows:
        runs = [
            s
            for s in found
            if (s["quant"], algorithm_label(s["algorithm"], s.get("variant")))
            == (row["quant"], row["algorithm"])
        ]
        assert int(row["seeds"]) == len(runs)
        assert float(row["quant_acc"]) == pytest.approx(statistics.fmean(s["quant_acc"] for s in runs))
