"""``cbpqsnn.run_folder.evaluate_run`` (and ``src/eval.py``) on a tiny run folder made here."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cbpqsnn.pipeline import run  # noqa: E402
from cbpqsnn.quant.export import unpack_state_dict  # noqa: E402
from cbpqsnn.run_folder import evaluate_run  # noqa: E402

TINY = [
    "logger=csv",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "method.pretrain.epochs=1",
    "method.cbp.epochs=1",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A finished (tiny) quantized run folder, laid out as src/train.py leaves it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "disabled")
        mp.setenv("CBPQSNN_ROOT", str(ROOT))
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=TINY)
        out = tmp_path_factory.mktemp("run")
        run(cfg, out)
        # Hydra writes this in real runs; pipeline.run does not
        (out / ".hydra").mkdir()
        OmegaConf.save(cfg, out / ".hydra" / "config.yaml", resolve=False)
        yield out


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")


def test_accuracies_match_summary(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    quant = evaluate_run(run_dir, "quantized", limit_test_batches=1)
    assert quant == pytest.approx(summary["quant_acc"], abs=1e-6)
    assert evaluate_run(run_dir, "packed", limit_test_batches=1) == pytest.approx(quant, abs=1e-6)
    fp32 = evaluate_run(run_dir, "fp32", limit_test_batches=1)
    assert fp32 == pytest.approx(summary["fp32_acc"], abs=1e-6)


def test_packed_restores_quantized_state(run_dir: Path) -> None:
    plain = torch.load(run_dir / "quantized.pt", weights_only=True)
    unpacked = unpack_state_dict(torch.load(run_dir / "quantized_packed.pt", weights_only=True))
    assert plain.keys() == unpacked.keys()
    assert all(torch.equal(plain[k], unpacked[k]) for k in plain)


def test_missing_run_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_run"
    with pytest.raises(FileNotFoundError, match="run folder not found") as err:
        evaluate_run(missing)
    assert str(missing) in str(err.value)


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a run folder of src/train.py") as err:
        evaluate_run(tmp_path)
    assert str(tmp_path / ".hydra" / "config.yaml") in str(err.value)


def test_missing_weights(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / ".hydra").mkdir()
    shutil.copy(run_dir / ".hydra" / "config.yaml", tmp_path / ".hydra" / "config.yaml")
    for weights, name in (("quantized", "quantized.pt"), ("packed", "quantized_packed.pt"),
                          ("fp32", "fp32.ckpt")):
        with pytest.raises(FileNotFoundError, match="weights file not found") as err:
            evaluate_run(tmp_path, weights)
        assert str(tmp_path) in str(err.value) and name in str(err.value)
    with pytest.raises(ValueError, match="unknown weights"):
        evaluate_run(tmp_path, "int8")


def test_fp32_only_run_hint(run_dir: Path, tmp_path: Path) -> None:
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.quant = {"name": "fp32", "levels": None, "algorithm": "none"}
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml", resolve=False)
    with pytest.raises(FileNotFoundError, match="fp32-only runs have no quantized.pt") as err:
        evaluate_run(tmp_path, "quantized")
    assert str(tmp_path / "quantized.pt") in str(err.value)


def test_cli(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("cbpqsnn_eval_cli", ROOT / "src" / "eval.py")
    assert spec is not None and spec.loader is not None
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert cli.main([str(run_dir), "--weights", "packed", "--batches", "1"]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy: {summary['quant_acc']:.2f} %" in out
    assert f"summary.json:  {summary['quant_acc']:.2f} %" in out

    assert cli.main([str(tmp_path)]) == 1
    assert "not a run folder of src/train.py" in capsys.readouterr().err


def test_export_cli_writes_the_deployment_files_and_checks_them(run_dir: Path) -> None:
    spec = importlib.util.spec_from_file_location("cbpqsnn_export_cli", ROOT / "src" / "export.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    for name in ("model.nir", "model_int.npz"):
        (run_dir / name).unlink()  # the run wrote them; the CLI writes them again
    assert cli.main([str(run_dir), "--check", "40"]) == 0
    assert (run_dir / "model.nir").is_file() and (run_dir / "model_int.npz").is_file()
    result = json.loads((run_dir / "deploy_check.json").read_text())
    assert result["samples"] == 40
    accuracy = result["accuracy"]
    assert accuracy["project"] == accuracy["snntorch"] == accuracy["numpy_integer"]
    for key in ("snntorch_vs_project", "numpy_integer_vs_project"):
        assert result[key] == {"same_prediction": 100.0, "same_outputs": 100.0}, key
    assert cli.main([str(run_dir / "nothing")]) == 1
