"""Where a fine-tuning stage left its quantized weights: the pull of the constraint against the
task's own step, read from a finished stage's ``checkpoints/cbp.ckpt`` (``src/diagnose.py``).

Per quantized layer:

- ``latent_mean_abs`` and ``scale`` (the top level, ``a_l`` for binary / ternary): how far the
  latents have moved from the levels' magnitude (straight-through latents grow, CBP's stay at ``a``);
- ``task_step``: the median over the layer of Adam's bias-corrected ``|m| / (sqrt(v) + eps)``,
  the task's step on a weight as a fraction of the learning rate (1 for a gradient of constant
  sign, near 0 for pure noise). Needs an Adam-family weight optimizer;
- ``multiplier_mean`` / ``multiplier_max``: CBP's ``lambda`` (docs/algorithm.md section 5);
- ``held``: the fraction of the layer's weights that the constraint holds against the task. Under
  the decoupled step (docs/algorithm.md section 6) a weight outside the window moves by
  ``2 lambda`` per step towards its level, the task by ``lr |m| / (sqrt(v) + eps)``, both times the
  same schedule factor. A weight is held when the task pushes it towards another level (off an end
  level inwards; off an inner level either way) and ``2 lambda`` is the larger. ``held_pulled``
  counts the weights where ``2 lambda`` is the larger whatever the task's direction. Under the
  coupled step the constraint is inside Adam's moments, so the two cannot be told apart from them:
  both are then None;
- ``changed``: with the stage's start weights, the fraction of weights whose nearest level differs
  from the start's (for binary: the sign).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cbpqsnn.checkpoints import read_checkpoint
from cbpqsnn.quant.levels import level_factors
from cbpqsnn.quant.quantizer import constraint, level_index, quantize

LATENT = ".parametrizations.weight.original"


@dataclass
class LayerDiagnosis:
    layer: str
    latent_mean_abs: float
    scale: float
    task_step: float | None
    multiplier_mean: float | None
    multiplier_max: float | None
    held: float | None
    held_pulled: float | None
    changed: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _adam_moments(checkpoint: dict[str, Any], key: str) -> tuple[Tensor, Tensor, float] | None:
    """Adam's bias-corrected first moment ``m`` of the latent ``key``, ``|m| / (sqrt(v) + eps)``
    and the group's initial LR, or None when the weight optimizer keeps no Adam moments. The
    optimizer's parameters are the module's in ``parameters()`` order, which is the state_dict's
    order less its buffers: the moments' shapes are checked against the weights'."""
    states = checkpoint.get("optimizer_states") or []
    if not states:
        return None
    opt = states[0]
    ids = [i for group in opt["param_groups"] for i in group["params"]]
    params = [k for k in checkpoint["state_dict"] if _is_parameter(k)]
    if len(params) != len(ids):
        raise ValueError(f"cannot match the optimizer's {len(ids)} parameters to the checkpoint's "
                         f"{len(params)} weights")
    index = ids[params.index(key)]
    state = opt["state"].get(index, {})
    if "exp_avg" not in state or "exp_avg_sq" not in state:
        return None
    group = next(g for g in opt["param_groups"] if index in g["params"])
    weight = checkpoint["state_dict"][key]
    if state["exp_avg"].shape != weight.shape:
        raise ValueError(f"the optimizer state of {key} has shape {tuple(state['exp_avg'].shape)}, "
                         f"the weight {tuple(weight.shape)}: not this checkpoint's optimizer")
    b1, b2 = group["betas"]
    step = float(state["step"])
    m = state["exp_avg"].float() / (1 - b1 ** step)
    v = state["exp_avg_sq"].float() / (1 - b2 ** step)
    return m, m.abs() / (v.sqrt() + group["eps"]), float(group.get("initial_lr", group["lr"]))


def _towards_another_level(w: Tensor, levels: Tensor, m: Tensor) -> Tensor:
    """Where the task's step ``-m`` leads off the weight's nearest level towards another one."""
    q = quantize(w, levels)
    at_top, at_bottom = q == levels[-1], q == levels[0]
    return (at_top & (m > 0)) | (at_bottom & (m < 0)) | (~at_top & ~at_bottom & (m != 0))


def _is_parameter(key: str) -> bool:
    buffers = ("running_mean", "running_var", "num_batches_tracked", ".levels")
    return not key.endswith(buffers)


def diagnose(checkpoint_path: str | Path, start: str | Path | None = None,
             constraint_step: str = "decoupled") -> list[LayerDiagnosis]:
    """The per-layer diagnosis (module docstring) of a finished stage's checkpoint; ``start``: the
    FP32 weights it started from (a ``state_dict`` file, or a checkpoint holding one)."""
    checkpoint = read_checkpoint(checkpoint_path)
    cb = checkpoint.get("callbacks", {}).get("CBPCallback")
    if cb is None:
        raise ValueError(f"{checkpoint_path} holds no CBP stage state (checkpoints/cbp.ckpt of a "
                         f"quantized run)")
    factors = torch.tensor(level_factors(cb["level_set"]))
    g = float(cb["schedule"]["g"])
    start_weights = None
    if start is not None:
        start_weights = read_checkpoint(start)
        start_weights = start_weights.get("state_dict", start_weights)
    rows = []
    for name in cb["layers"]:
        key = name + LATENT
        w = checkpoint["state_dict"][key].float()
        scale = float(cb["scales"][name])
        levels = factors * scale / float(factors.abs().max())
        adam = _adam_moments(checkpoint, key)
        lam = cb["multipliers"].get(name) if cb.get("multipliers") else None
        held = held_pulled = None
        if adam is not None and lam is not None and constraint_step == "decoupled":
            m, ratio, lr = adam
            _, pull = constraint(w, levels, g)  # 0 inside the window, +-2 outside
            stronger = (pull != 0) & (2 * lam > lr * ratio)
            held_pulled = float(stronger.float().mean())
            held = float((stronger & _towards_another_level(w, levels, m)).float().mean())
        changed = None
        if start_weights is not None:
            w0 = start_weights[_start_key(start_weights, name)].float()
            changed = float((level_index(w, levels) != level_index(w0, levels)).float().mean())
        rows.append(LayerDiagnosis(
            layer=name, latent_mean_abs=float(w.abs().mean()), scale=scale,
            task_step=None if adam is None else float(adam[1].median()),
            multiplier_mean=None if lam is None else float(lam.mean()),
            multiplier_max=None if lam is None else float(lam.max()),
            held=held, held_pulled=held_pulled, changed=changed))
    return rows


def _start_key(weights: dict[str, Tensor], name: str) -> str:
    for key in (name + ".weight", name + LATENT):
        if key in weights:
            return key
    raise ValueError(f"the start weights hold no {name}.weight")
