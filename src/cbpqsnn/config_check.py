"""One check of the composed config before anything runs: :func:`check_config`.

Every key must be one the code reads (a misspelled key would otherwise be ignored and a sweep over
it would silently repeat the default) and every value must be in range (``epochs=-1`` would make
Lightning train forever, ``batch_size=0`` would be skipped). All problems are collected and raised
together as one :class:`ConfigError` that names each key, the valid keys or values, and what to
write instead -- within seconds, before any data is read or any epoch runs.

Where the valid keys come from (one home each, nothing restated here):

- a node with ``_target_`` (data module, backbone, optimizer, scheduler): the target's signature
  (for a class, every ``__init__`` up its bases while they pass ``**kwargs`` on);
- ``model``: the backbone's ``MODEL_OPTIONS`` (:meth:`SpikingClassifier.model_options`);
- the CBP settings (``method.cbp.callback``): :class:`CBPCallback`'s signature;
- ``trainer``: ``lightning.Trainer``'s signature, less what the pipeline sets per stage;
- the stage blocks (``method.pretrain`` / ``method.cbp``), ``quant``, ``logger`` and the top level:
  the keys below, which the pipeline, the callback factory and the loggers read.
"""

from __future__ import annotations

import difflib
import inspect
import re
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from cbpqsnn.checkpoints import not_a_checkpoint
from cbpqsnn.deploy.metrics import ENERGY_KEYS
from cbpqsnn.neurons.kernels import KERNELS
from cbpqsnn.quant.baselines import ALGORITHMS, check_algorithm
from cbpqsnn.quant.callback import (
    CONSTRAINT_STEPS,
    FP32_ALGORITHMS,
    FP32_FINETUNE,
    MULTIPLIER_OPTIMIZERS,
    QUANT_GROUP_ARGS,
    CBPCallback,
)
from cbpqsnn.quant.levels import SCALES, level_factors

TOP_KEYS = ("seed", "T", "pretrained", "resume", "row", "run_name", "variant", "paths", "data",
            "model", "method", "quant", "trainer", "logger", "hardware")
VARIANT_NAME = re.compile(r"[A-Za-z0-9_-]+")
MAX_SEED = 2**32 - 1  # numpy's seed range (Lightning's seed_everything)
HARDWARE_KEYS = ("samples", "energy_pj")
METHOD_KEYS = ("name", "module", "pretrain", "cbp")
DATA_KEYS = ("name", "datamodule")
QUANT_KEYS = ("name", "levels", "algorithm", "scale")
STAGE_KEYS = ("epochs", "batch_size", "optimizer", "scheduler", "gradient_clip_val",
              "gradient_clip_algorithm", "weight_decay_on_bias")
CBP_STAGE_KEYS = (*STAGE_KEYS, "callback")
LOGGER_KEYS = ("csv", "wandb")
WANDB_KEYS = ("enabled", "mode", "project", "entity", "group")
WANDB_MODES = ("offline", "online", "disabled")
CLIP_ALGORITHMS = ("norm", "value")
# Trainer arguments the pipeline sets per stage (the stage block says them)
TRAINER_SET_BY_PIPELINE = {
    "max_epochs": "method.pretrain.epochs / method.cbp.epochs",
    "gradient_clip_val": "method.<stage>.gradient_clip_val",
    "gradient_clip_algorithm": "method.<stage>.gradient_clip_algorithm",
    "callbacks": "the pipeline", "logger": "the logger group", "default_root_dir": "the run folder",
    "enable_model_summary": "the pipeline",
    "use_distributed_sampler": "the pipeline (training: on; test: off, every rank tests all)",
}
# arguments a backbone receives from the pipeline, not from method.module
MODULE_SET_BY_PIPELINE = ("model", "in_shape", "num_classes", "optimizer", "scheduler")
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


class ConfigError(ValueError):
    """The composed config is invalid; the message lists every problem found."""


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every unknown key and out-of-range value of ``cfg``."""
    problems: list[str] = []
    container = OmegaConf.to_container(cfg, resolve=True)
    _keys(problems, "", container, TOP_KEYS)
    _check_targets(problems, "", container)
    _check_data(problems, container.get("data") or {})
    module_cls = _check_method(problems, container.get("method") or {})
    if module_cls is not None and isinstance(container.get("model"), Mapping):
        try:
            module_cls.model_options(container["model"])
        except ValueError as err:
            problems.append(str(err))
    quantize, fine_tune = _check_quant(problems, container.get("quant") or {})
    if "hardware" in container:
        _check_hardware(problems, container["hardware"] or {})
    method = container.get("method") or {}
    if not container.get("pretrained"):
        _check_stage(problems, "method.pretrain", method.get("pretrain"), STAGE_KEYS)
    if quantize or fine_tune:
        _check_stage(problems, "method.cbp", method.get("cbp"), CBP_STAGE_KEYS)
    if quantize:
        _check_cbp_callback(problems, (method.get("cbp") or {}).get("callback") or {})
    _check_time_steps(problems, container)
    if "seed" in container:
        _check_seed(problems, container["seed"])
    _check_trainer(problems, container.get("trainer") or {})
    _check_logger(problems, container.get("logger") or {})
    if container.get("resume") and container.get("pretrained") and not (quantize or fine_tune):
        problems.append("resume=<cbp checkpoint> needs a run with a fine-tuning stage; quant=fp32 has "
                        f"none (quant.algorithm={FP32_FINETUNE} gives it one)")
    variant = container.get("variant")
    if variant is not None and not VARIANT_NAME.fullmatch(str(variant)):
        problems.append(f"variant={variant}: a variant name is letters, digits, _ and - only "
                        "(e.g. variant=slow_window)")
    for key in ("pretrained", "resume"):
        path = container.get(key)
        if path and not Path(str(path)).is_file():
            problems.append(f"{key}={path}: no such file (give the path of a .ckpt file)")
        elif path and not_a_checkpoint(path):
            problems.append(f"{key}={path}: {not_a_checkpoint(path)}")
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


# -- helpers ---------------------------------------------------------------------------------
def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _keys(problems: list[str], where: str, node: Any, valid: Iterable[str]) -> None:
    """An entry in ``problems`` for every key of ``node`` not in ``valid``."""
    if not isinstance(node, Mapping):
        return
    valid = list(valid)
    for key in node:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown key {_join(where, str(key))!r}{hint}; valid keys: "
                            f"{', '.join(valid)}")


def _parameters(target: Any) -> tuple[list[str], bool]:
    """Named parameters of a callable or class and whether it takes ``**kwargs`` on to nothing
    (then its keys cannot be checked). A class collects ``__init__`` up its bases while each passes
    ``**kwargs`` on."""
    names: list[str] = []
    for init in ([c.__dict__["__init__"] for c in target.__mro__ if "__init__" in c.__dict__]
                 if inspect.isclass(target) else [target]):
        signature = inspect.signature(init)
        names += [p.name for p in signature.parameters.values()
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"]
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            return list(dict.fromkeys(names)), False
    return list(dict.fromkeys(names)), True


def _check_targets(problems: list[str], where: str, node: Any) -> None:
    """Every ``_target_`` node's keys against its target's signature (recursively)."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_targets(problems, f"{where}[{i}]", item)
        return
    if not isinstance(node, Mapping):
        return
    if "_target_" in node:
        try:
            target = get_object(str(node["_target_"]))
        except Exception as err:  # noqa: BLE001 -- hydra raises several kinds
            problems.append(f"{_join(where, '_target_')}={node['_target_']!r} cannot be imported ({err})")
        else:
            names, open_ended = _parameters(target)
            if where == "method.module":
                problems += [f"method.module.{key} is set by the pipeline; remove it"
                             for key in MODULE_SET_BY_PIPELINE if key in node]
                node = {k: v for k, v in node.items() if k not in MODULE_SET_BY_PIPELINE}
                names = [n for n in names if n not in MODULE_SET_BY_PIPELINE]
            if not open_ended:
                _keys(problems, where, node, [*names, *HYDRA_KEYS])
    for key, value in node.items():
        _check_targets(problems, _join(where, str(key)), value)


def _positive(problems: list[str], where: str, value: Any, minimum: float = 0.0,
              integer: bool = False, strict: bool = True, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        problems.append(f"{where}={value!r}: must be {kind} {bound}" + (" or null" if allow_none else ""))


def _choice(problems: list[str], where: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` must be one of ``choices`` (or null: the code's default)."""
    if value is not None and value not in choices:
        problems.append(f"{where}={value!r}: valid choices: {', '.join(choices)} or null")


def _check_data(problems: list[str], data: Mapping[str, Any]) -> None:
    _keys(problems, "data", data, DATA_KEYS)
    datamodule = data.get("datamodule") or {}
    root = datamodule.get("root")
    if root is not None and not datamodule.get("download") and not Path(str(root)).is_dir():
        problems.append(f"data.datamodule.root={root}: no such folder (put the dataset there, "
                        "see the data module's docstring, or set data.datamodule.download=true)")
    for key in ("batch_size", "eval_batch_size"):
        if key in datamodule:
            _positive(problems, f"data.datamodule.{key}", datamodule[key], 1, integer=True, strict=False)


def _check_method(problems: list[str], method: Mapping[str, Any]) -> type | None:
    _keys(problems, "method", method, METHOD_KEYS)
    module = method.get("module") or {}
    if "neuron_kernels" in module:
        _choice(problems, "method.module.neuron_kernels", module["neuron_kernels"], KERNELS)
    try:
        return get_object(str(module.get("_target_")))
    except Exception:  # noqa: BLE001 -- reported by _check_targets
        return None


def _check_quant(problems: list[str], quant: Mapping[str, Any]) -> tuple[bool, bool]:
    """Checks ``quant``; (the run quantizes, the run fine-tunes unquantized FP32 weights)."""
    _keys(problems, "quant", quant, QUANT_KEYS)
    algorithm = quant.get("algorithm")
    if algorithm in FP32_ALGORITHMS:
        if quant.get("levels") is not None:
            problems.append(f"quant.algorithm={algorithm!r} trains no quantized weights: it goes with "
                            f"quant=fp32, not with the levels {list(quant['levels'])}; for these "
                            f"levels choose one of {', '.join(ALGORITHMS)}")
        return False, algorithm == FP32_FINETUNE
    if algorithm not in ALGORITHMS:
        problems.append(f"quant.algorithm={algorithm!r}: valid choices: {', '.join(ALGORITHMS)} "
                        f"(quant=fp32: {', '.join(FP32_ALGORITHMS)})")
    _choice(problems, "quant.scale", quant.get("scale"), SCALES)
    try:
        factors = level_factors(quant.get("levels"))
    except ValueError as err:
        problems.append(f"quant.levels: {err} (or pick a conf/quant option, e.g. quant=ternary)")
        return True, False
    if algorithm in ALGORITHMS:
        try:
            check_algorithm(algorithm, factors)
        except ValueError as err:
            problems.append(str(err))
    _check_level_set_name(problems, quant.get("name"), factors)
    return True, False


def _check_level_set_name(problems: list[str], name: Any, factors: tuple[float, ...]) -> None:
    """The run folder, ``summary.json`` and the report call a run by ``quant.name``: a name that
    is a level set (binary, ternary, ..., intN) must be that set, not the ``quant.levels`` of an
    override such as ``quant.levels=[-1,0.5,1]`` on the default ``quant=binary``."""
    if not VARIANT_NAME.fullmatch(str(name)):
        problems.append(f"quant.name={name}: a level-set name is letters, digits, _ and - only "
                        "(it names the run folder)")
        return
    try:
        named = level_factors(str(name))
    except ValueError:
        return  # a name of the user's own (e.g. custom3): nothing to contradict
    if named != factors:
        problems.append(
            f"quant.levels={list(factors)} is not the level set quant.name={name} ({list(named)}), "
            f"so the run folder, summary.json and the report would file it under {name}: name the "
            f"set you train, e.g. quant.name=custom{len(factors)} next to quant.levels=..., or make "
            "it a level set of its own, conf/quant/<name>.yaml with name: <name> and levels: [...] "
            "(a copy of conf/quant/ternary.yaml), then quant=<name>")


def _check_hardware(problems: list[str], hardware: Mapping[str, Any]) -> None:
    _keys(problems, "hardware", hardware, HARDWARE_KEYS)
    _positive(problems, "hardware.samples", hardware.get("samples"), 1, integer=True, strict=False)
    energy = hardware.get("energy_pj") or {}
    _keys(problems, "hardware.energy_pj", energy, ENERGY_KEYS)
    for key in ENERGY_KEYS:
        if key not in energy:
            problems.append(f"hardware.energy_pj.{key} is missing (pJ per operation; "
                            f"the table needs {', '.join(ENERGY_KEYS)})")
        else:
            _positive(problems, f"hardware.energy_pj.{key}", energy[key])


def _check_stage(problems: list[str], where: str, stage: Any, valid: Iterable[str]) -> None:
    if not isinstance(stage, Mapping):
        problems.append(f"{where} is missing (epochs, batch_size, optimizer, ...)")
        return
    _keys(problems, where, stage, valid)
    _positive(problems, f"{where}.epochs", stage.get("epochs"), 1, integer=True, strict=False)
    _positive(problems, f"{where}.batch_size", stage.get("batch_size"), 1, integer=True,
              strict=False, allow_none=True)
    optimizer = stage.get("optimizer")
    if not isinstance(optimizer, Mapping) or "_target_" not in optimizer:
        problems.append(f"{where}.optimizer must be a _target_ node, e.g. torch.optim.Adam with "
                        "_partial_: true and lr")
    elif "lr" in optimizer:
        _positive(problems, f"{where}.optimizer.lr", optimizer["lr"])
    _choice(problems, f"{where}.gradient_clip_algorithm", stage.get("gradient_clip_algorithm"),
            CLIP_ALGORITHMS)
    _positive(problems, f"{where}.gradient_clip_val", stage.get("gradient_clip_val"), allow_none=True)


def _check_cbp_callback(problems: list[str], options: Mapping[str, Any]) -> None:
    names, _ = _parameters(CBPCallback)
    _keys(problems, "method.cbp.callback", options,
          [n for n in names if n not in QUANT_GROUP_ARGS])
    where = "method.cbp.callback"
    if "p_max" in options:
        _positive(problems, f"{where}.p_max", options["p_max"], 1, integer=True, strict=False)
    if "multiplier_lr" in options:
        _positive(problems, f"{where}.multiplier_lr", options["multiplier_lr"])
    if "lr_drop_factor" in options:
        _positive(problems, f"{where}.lr_drop_factor", options["lr_drop_factor"])
    _choice(problems, f"{where}.multiplier_optimizer", options.get("multiplier_optimizer"),
            MULTIPLIER_OPTIMIZERS)
    _choice(problems, f"{where}.constraint_step", options.get("constraint_step"), CONSTRAINT_STEPS)
    _positive(problems, f"{where}.pull_cap", options.get("pull_cap"), allow_none=True)
    if options.get("pull_cap") is not None and options.get("constraint_step") != "decoupled":
        problems.append(f"{where}.pull_cap={options['pull_cap']!r} caps the decoupled step's pull: "
                        f"add {where}.constraint_step=decoupled, or leave pull_cap null")


def _check_time_steps(problems: list[str], cfg: Mapping[str, Any]) -> None:
    module = (cfg.get("method") or {}).get("module") or {}
    datamodule = (cfg.get("data") or {}).get("datamodule") or {}
    if "T" in cfg:
        _positive(problems, "T", cfg["T"], 1, integer=True, strict=False)
    if module.get("T") != cfg.get("T"):  # both read the top-level T unless one is set apart
        _positive(problems, "method.module.T", module.get("T"), 1, integer=True, strict=False)
    for key in ("train_time_steps", "finetune_T"):
        if key in module:
            _positive(problems, f"method.module.{key}", module[key], 1, integer=True, strict=False,
                      allow_none=True)
    if "T" in datamodule:
        _positive(problems, "data.datamodule.T", datamodule["T"], 1, integer=True, strict=False)
        if module.get("T") != datamodule["T"]:
            problems.append(frames_mismatch(datamodule["T"], module.get("T")))


def frames_mismatch(frames: Any, T: Any) -> str:
    """The message for event data whose frame count is not the backbone's T."""
    return (f"the event data gives T = {frames} frames per sample but method.module.T = {T}; set "
            f"both to the same value (e.g. data.datamodule.T={T} or method.module.T={frames}; to "
            "train on a subset of the frames use method.module.train_time_steps)")


def _check_seed(problems: list[str], seed: Any) -> None:
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED):
        problems.append(f"seed={seed!r}: must be an integer from 0 to {MAX_SEED} (e.g. seed=1)")


def precision_choices() -> tuple[str, ...]:
    """Every value ``lightning.Trainer(precision=...)`` accepts, as strings (from its signature)."""
    def literals(annotation: Any) -> list[Any]:
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) is typing.Literal:
            return list(args)
        return [v for a in args for v in literals(a)]

    annotation = inspect.signature(L.Trainer).parameters["precision"].annotation
    return tuple(dict.fromkeys(str(v) for v in literals(annotation)))


def _check_trainer(problems: list[str], trainer: Mapping[str, Any]) -> None:
    if trainer.get("precision") is not None and str(trainer["precision"]) not in precision_choices():
        problems.append(f"trainer.precision={trainer['precision']!r}: valid choices: "
                        f"{', '.join(precision_choices())}")
    names, _ = _parameters(L.Trainer)
    for key in trainer:
        if key in TRAINER_SET_BY_PIPELINE:
            problems.append(f"trainer.{key} is set per stage by the pipeline; set "
                            f"{TRAINER_SET_BY_PIPELINE[key]} instead")
    _keys(problems, "trainer", {k: v for k, v in trainer.items() if k not in TRAINER_SET_BY_PIPELINE},
          [n for n in names if n not in TRAINER_SET_BY_PIPELINE])


def _check_logger(problems: list[str], logger: Mapping[str, Any]) -> None:
    _keys(problems, "logger", logger, LOGGER_KEYS)
    wandb = logger.get("wandb") or {}
    _keys(problems, "logger.wandb", wandb, WANDB_KEYS)
    _choice(problems, "logger.wandb.mode", wandb.get("mode"), WANDB_MODES)
