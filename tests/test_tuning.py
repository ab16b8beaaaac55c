"""The fair tuning protocol (cbpqsnn/tuning.py, src/compare.py --tune)."""

import importlib.util
import json

import pytest

from cbpqsnn.comparison import Job
from cbpqsnn.reporting import load_summaries
from cbpqsnn.tuning import choose, load_grid, split_tuned, tuning_jobs
from tests.conftest import ROOT, TINY

_spec = importlib.util.spec_from_file_location("cbpqsnn_compare_cli_tuning", ROOT / "src" / "compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)

GRID = """
algorithms:
  ste:
    plain: []
    fast: [method.cbp.optimizer.lr=0.01]
  cbp:
    plain: []
    decoupled: [method.cbp.callback.constraint_step=decoupled, method.cbp.callback.multiplier_lr=0.1]
"""


def grid_file(tmp_path, text=GRID):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_the_grid_gives_every_algorithm_the_same_budget_and_checks_its_overrides(tmp_path):
    grid = load_grid(grid_file(tmp_path), ["cbp", "ste"])
    assert grid["ste"] == {"plain": [], "fast": ["method.cbp.optimizer.lr=0.01"]}
    assert list(grid["cbp"]) == ["plain", "decoupled"]
    uneven = GRID.replace("    fast: [method.cbp.optimizer.lr=0.01]\n", "")
    with pytest.raises(ValueError, match="same number of settings"):
        load_grid(grid_file(tmp_path, uneven), ["cbp", "ste"])
    with pytest.raises(ValueError, match=r"no settings for \['lsq'\]"):
        load_grid(grid_file(tmp_path), ["cbp", "lsq"])
    with pytest.raises(ValueError, match="may not set 'seed'"):
        load_grid(grid_file(tmp_path, GRID.replace("lr=0.01]", "lr=0.01, seed=3]")), ["ste"])
    with pytest.raises(ValueError, match="no such file"):
        load_grid(tmp_path / "none.yaml", ["ste"])


def test_tuning_runs_every_setting_from_the_tuning_seeds_fp32_network(tmp_path):
    grid = load_grid(grid_file(tmp_path), ["cbp", "ste"])
    jobs = tuning_jobs(["T=4"], 1, ["binary"], grid, tmp_path)
    assert [j.name for j in jobs] == ["binary_cbp@plain", "binary_ste@plain", "binary_cbp@decoupled",
                                      "binary_ste@fast"]  # round robin, in the order of --algorithms
    assert all(j.fp32_checkpoint == tmp_path / "seed1/fp32/checkpoints/fp32.ckpt" for j in jobs)
    assert jobs[3].run_dir == tmp_path / "tuning/seed1/binary_ste@fast"
    assert "variant=fast" in jobs[3].overrides and jobs[3].overrides[-1] == "method.cbp.optimizer.lr=0.01"


def test_the_choice_is_the_best_validation_accuracy_first_tried_on_a_tie(tmp_path):
    jobs = []
    for name, val, test in (("a", 80.0, 99.0), ("b", 85.0, 10.0), ("c", 85.0, 50.0)):
        job = Job(1, f"binary_ste@{name}", (), tmp_path / name)
        job.run_dir.mkdir()
        summary = {"quant": "binary", "algorithm": "ste", "val_acc": val, "quant_acc": test}
        (job.run_dir / "summary.json").write_text(json.dumps(summary))
        jobs.append(job)
    (entry,) = choose(jobs).values()
    assert entry["setting"] == "b"  # never the test accuracy
    assert entry["val_acc"] == {"a": 80.0, "b": 85.0, "c": 85.0}


def test_tuning_without_a_validation_split_is_refused_before_any_job(tmp_path, capsys):
    args = [*TINY, "--out", str(tmp_path / "cmp"), "--seeds", "1", "--levels", "binary",
            "--algorithms", "ste,cbp", "--tune", str(grid_file(tmp_path))]
    assert compare.main(args) == 2
    assert "val_per_class" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_ptq_trains_nothing_so_it_runs_untuned_beside_the_grid(tmp_path, capsys):
    """The default --algorithms include ptq, which no grid names: the run goes on to its next check."""
    args = [*TINY, "--out", str(tmp_path / "cmp"), "--seeds", "1", "--levels", "binary",
            "--algorithms", "ptq,ste,cbp", "--tune", str(grid_file(tmp_path))]
    assert compare.main(args) == 2
    err = capsys.readouterr().err
    assert "val_per_class" in err and "ptq" not in err
    assert split_tuned(["cbp", "ptq", "ste"]) == (["cbp", "ste"], ["ptq"])


def test_one_command_tunes_on_validation_and_runs_the_choice_on_every_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "cmp"
    tiny = [o for o in TINY if not o.startswith("method.cbp.epochs")] + ["method.cbp.epochs=1"]
    args = [*tiny, "data.datamodule.val_per_class=20", "--out", str(out), "--seeds", "1,2",
            "--levels", "binary", "--algorithms", "ste", "--tune", str(grid_file(tmp_path)),
            "--parallel", "2", "--threads", "1"]
    assert compare.main(args) == 0
    chosen = json.loads((out / "tuning.json").read_text())
    assert set(chosen) == {"binary_ste"}
    for pair, entry in chosen.items():
        tried = {n: json.loads((out / f"tuning/seed1/{pair}@{n}/summary.json").read_text())["val_acc"]
                 for n in entry["val_acc"]}
        assert entry["val_acc"] == tried and tried[entry["setting"]] == max(tried.values())
        for seed in (1, 2):
            final = json.loads((out / f"seed{seed}/{pair}@{entry['setting']}/summary.json").read_text())
            assert final["seed"] == seed and final["variant"] == entry["setting"]
    reported = {d.relative_to(out).as_posix() for d, _ in load_summaries(out)}
    assert not any(name.startswith("tuning/") for name in reported)
    assert len(reported) == 2 + 2  # two FP32 runs, the choice on two seeds
