"""The up-front config check: typos and out-of-range values fail before any data is read."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from cbpqsnn import pipeline
from cbpqsnn.config_check import ConfigError, check_config
from cbpqsnn.quant.callback import QUANT_GROUP_ARGS, CBPCallback
from cbpqsnn.quant.levels import default_scale, level_factors
from tests.conftest import ROOT, compose

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


def rejected(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        check_config(compose(overrides))
    return str(err.value)


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
def test_every_experiment_and_the_default_pass_the_check(experiment):
    base = [f"experiment={experiment}"] if experiment else []
    for quant in ("binary", "ternary", "fp32", "none"):
        check_config(compose([*base, f"quant={quant}"]))


def test_a_typo_in_an_experiment_yaml_fails_before_any_data_is_read(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    text = (conf / "experiment" / "sg_mnist5k.yaml").read_text()
    (conf / "experiment" / "typo.yaml").write_text(text + "method:\n  module:\n    tau_0: 3.0\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = hydra_compose("train", overrides=["experiment=typo"])
    monkeypatch.setattr(pipeline, "build_datamodule", lambda cfg: pytest.fail("data was read"))
    with pytest.raises(ConfigError, match=r"unknown key 'method\.module\.tau_0' \(did you mean 'tau0'\?\)"):
        pipeline.run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_variant_name_is_checked_up_front():
    check_config(compose(["variant=slow_window-2"]))
    assert "letters, digits, _ and - only" in rejected(["variant=slow window"])
    assert "variant=a/b" in rejected(["variant=a/b"])


def test_a_typo_on_the_command_line_names_the_key_and_the_valid_ones():
    message = rejected(["method=sg", "+method.module.tau=3.0"])
    assert "'method.module.tau'" in message and "tau0" in message and "learnable_tau" in message
    message = rejected(["+method.module.v_treshold=0.4"])  # STBP (the default)
    assert "did you mean 'v_threshold'" in message and "surrogate_width" in message
    message = rejected(["+model.dropuot=0.1"])
    assert "dropuot" in message and "'dropout'" in message
    # the pipeline sets these; a user who sets them hears where the setting lives
    assert "method.pretrain.epochs" in rejected(["+trainer.max_epochs=3"])
    assert "did you mean 'max_steps'" in rejected(["+trainer.max_step=3"])


def test_a_typo_in_the_cbp_group_is_named_with_the_valid_settings():
    message = rejected(["+method.cbp.callback.pmax=3"])
    assert "'method.cbp.callback.pmax' (did you mean 'p_max'?)" in message
    assert "multiplier_lr" in message and "lr_drop_at_g" in message


@pytest.mark.parametrize(("override", "expected"), [
    ("quant.levels=septenary", "unknown level set 'septenary'"),
    ("quant.algorithm=cpb", "quant.algorithm='cpb': valid choices: cbp, ptq, ste, scaled_ste, lsq "
     "(quant=fp32: none, finetune)"),
    ("quant.algorithm=finetune", "quant.algorithm='finetune' trains no quantized weights: it goes "
     "with quant=fp32, not with the levels [-1.0, 1.0]; for these levels choose one of cbp, ptq"),
    ("quant.scale=mean", "quant.scale='mean': valid choices: mean_abs, max_abs, mse or null"),
    ("hardware.energy_pj.fp32_mac=-1", "hardware.energy_pj.fp32_mac=-1: must be a number > 0"),
    ("~hardware.energy_pj.int_add", "hardware.energy_pj.int_add is missing"),
    ("quant.algorithm=lsq", "quant.algorithm=lsq needs a uniform level set with a zero level"),
    ("quant=shift2 quant.algorithm=scaled_ste", "scaled_ste (BWN / TWN scales) is defined for binary"),
    ("method.pretrain.epochs=-1", "method.pretrain.epochs=-1: must be an integer >= 1"),
    ("method.cbp.epochs=0", "method.cbp.epochs=0: must be an integer >= 1"),
    ("method.pretrain.batch_size=0", "method.pretrain.batch_size=0: must be an integer >= 1"),
    ("T=0", "T=0: must be an integer >= 1"),
    ("method.module.T=0", "method.module.T=0: must be an integer >= 1"),
    ("method.pretrain.optimizer.lr=-0.1", "method.pretrain.optimizer.lr=-0.1: must be a number > 0"),
    ("method.cbp.callback.p_max=0", "method.cbp.callback.p_max=0: must be an integer >= 1"),
    ("method.cbp.callback.multiplier_lr=0", "multiplier_lr=0: must be a number > 0"),
    ("method.cbp.callback.constraint_step=decoupeld", "valid choices: coupled, decoupled or null"),
    ("method=sg method.cbp.callback.pull_cap=0.3", "add method.cbp.callback.constraint_step=decoupled"),
    ("method.cbp.callback.pull_cap=0", "pull_cap=0: must be a number > 0 or null"),
    ("method.cbp.gradient_clip_algorithm=nrom", "valid choices: norm, value or null"),
    ("method.module.neuron_kernels=compild", "neuron_kernels='compild': valid choices: eager, compiled"),
    ("pretrained=/no/such/fp32.ckpt", "pretrained=/no/such/fp32.ckpt: no such file"),
])
def test_a_bad_value_fails_with_what_to_write_instead(override, expected):
    assert expected in rejected(override.split())


def test_a_missing_data_folder_is_named_unless_the_loader_may_download():
    assert "data.datamodule.root=/no/such/dir: no such folder" in rejected(
        ["data=nmnist", "data.datamodule.root=/no/such/dir"])
    check_config(compose(["data=nmnist", "data.datamodule.root=/no/such/dir",
                          "data.datamodule.download=true"]))


def test_stages_that_do_not_run_are_not_checked(tmp_path):
    ckpt = tmp_path / "fp32.ckpt"
    torch.save({}, ckpt)
    check_config(compose(["quant=fp32", "method.cbp.epochs=0"]))  # no CBP stage
    check_config(compose([f"pretrained={ckpt}", "method.pretrain.epochs=0"]))  # no pretraining


def test_event_data_and_backbone_must_agree_on_T():
    assert "frames per sample but method.module.T = 4" in rejected(
        ["data=nmnist", "data.datamodule.T=8", "method.module.T=4"])


def test_all_problems_are_reported_together():
    message = rejected(["method.pretrain.epochs=-1", "method.module.T=0", "+method.cbp.callback.pmax=3"])
    assert message.count("\n  - ") == 3


def test_the_cbp_group_holds_the_only_defaults_the_callback_signature_agrees():
    group = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "cbp" / "default.yaml"))
    signature = inspect.signature(CBPCallback.__init__).parameters
    defaults = {name: p.default for name, p in signature.items()
                if name != "self" and name not in QUANT_GROUP_ARGS}
    assert set(group) == set(defaults)
    for name, value in group.items():
        default = list(defaults[name]) if isinstance(defaults[name], tuple) else defaults[name]
        assert value == default, name
    # method files state only what differs from the group
    for method in ("stbp", "sg", "calib", "tsslbp"):
        own = OmegaConf.load(ROOT / "conf" / "method" / f"{method}.yaml").method.cbp.callback
        assert all(own[k] != group[k] for k in own), method


def test_train_py_refuses_a_bad_value_with_a_message_and_no_traceback(tmp_path):
    """(How fast: measured, not asserted -- see the closing note of issue 12.)"""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, str(ROOT / "src" / "train.py"), "quant.levels=septenary",
                           f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "unknown level set 'septenary'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "summary.json").exists()


# -- the README's commands and keys ----------------------------------------------------------
def readme_commands() -> list[list[str]]:
    """The overrides of every ``python src/train.py ...`` line in the README's code blocks."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("#")[0].strip()
            if command.startswith(("python src/train.py", ".venv/bin/python src/train.py")):
                commands.append([a for a in command.split()[2:] if not a.startswith("--")])
    return commands


def readme_inline_overrides() -> list[list[str]]:
    """Every ``key=value`` (or several, composed together) in backticks in the README's prose."""
    text = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(), flags=re.S)
    found = []
    for span in re.findall(r"`([^`\n]+)`", text):
        words = span.split()
        if words and all(re.fullmatch(r"\+?[a-z][\w./@-]*=\S+", w) for w in words):  # not ENV=1
            found.append(words)
    return found


def expand(override: str, placeholder: str) -> list[str]:
    """One override per value of a sweep (``a=x,y``). Placeholders ``<...>``: a real file for a
    path, every experiment for ``experiment=<row>``, a plain word elsewhere."""
    key, _, value = override.partition("=")
    if "<" in value:
        if key in ("pretrained", "resume"):
            return [f"{key}={placeholder}"]
        return [f"{key}={e}" for e in EXPERIMENTS] if key == "experiment" else [f"{key}=word"]
    if "," in value and not value.startswith("["):
        return [f"{key}={v}" for v in value.split(",")]
    return [override]


def test_every_readme_command_and_key_composes_and_passes_the_check(tmp_path):
    placeholder = str(tmp_path / "fp32.ckpt")
    torch.save({}, tmp_path / "fp32.ckpt")
    commands = readme_commands()
    inline = readme_inline_overrides()
    assert len(commands) >= 10 and len(inline) >= 10, (commands, inline)
    checked = 0
    for args in [*commands, *inline]:
        options = [expand(a, placeholder) for a in args]
        for i, values in enumerate(options):
            for value in values:  # each sweep value once, the others at their first value
                overrides = [o[0] for o in options[:i]] + [value] + [o[0] for o in options[i + 1:]]
                cfg = compose(overrides)
                check_config(cfg)
                checked += 1
    assert checked >= len(commands) + len(inline)


# -- level sets ------------------------------------------------------------------------------
def test_a_new_level_set_is_one_yaml_file(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "quant" / "quinary.yaml").write_text(
        "name: quinary\nlevels: [-1.0, -0.5, 0.0, 0.5, 1.0]\nalgorithm: cbp\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = hydra_compose("train", overrides=["quant=quinary"])
    check_config(cfg)
    callback = pipeline.make_cbp_callback(cfg)
    assert callback.factors == (-1.0, -0.5, 0.0, 0.5, 1.0) and callback.bits == 3


def test_the_level_files_state_the_factor_sets_of_their_names():
    for path in sorted((ROOT / "conf" / "quant").glob("*.yaml")):
        quant = OmegaConf.load(path)
        if quant.get("levels") is not None and not isinstance(quant.levels, str):
            assert level_factors(list(quant.levels)) == level_factors(quant.name), path.name


def test_the_level_files_state_the_scale_rule_the_code_defaults_to():
    """One rule per level set: the file's ``scale`` is what a callback built without one uses."""
    for path in sorted((ROOT / "conf" / "quant").glob("*.yaml")):
        quant = OmegaConf.load(path)
        if quant.get("levels") is not None:
            assert quant.scale == default_scale(level_factors(quant.levels)), path.name


@pytest.mark.parametrize(("levels", "expected"), [
    ("[-2.0,0.0,2.0]", "the largest |factor| must be 1"),
    ("[1.0]", "at least two distinct factors"),
    ("[-1.0,1.0,1.0]", "at least two distinct factors"),
])
def test_a_bad_factor_list_is_refused(levels, expected):
    assert expected in rejected([f"quant.levels={levels}"])


def test_resume_continues_the_fp32_stage_alone_or_the_cbp_stage_with_pretrained(tmp_path):
    ckpt = tmp_path / "cbp.ckpt"
    torch.save({}, ckpt)
    check_config(compose([f"resume={ckpt}"]))  # an interrupted FP32 stage (its fp32.ckpt)
    assert "needs a run with a fine-tuning stage" in rejected([f"resume={ckpt}", f"pretrained={ckpt}",
                                                               "quant=fp32"])
    check_config(compose([f"resume={ckpt}", f"pretrained={ckpt}", "quant=fp32", "quant.algorithm=finetune"]))


def test_fp32_fine_tuning_checks_the_stage_it_runs():
    # quant=fp32 alone never reads method.cbp; with quant.algorithm=finetune it trains that stage
    check_config(compose(["quant=fp32", "method.cbp.epochs=0"]))
    assert "method.cbp.epochs" in rejected(["quant=fp32", "quant.algorithm=finetune", "method.cbp.epochs=0"])
