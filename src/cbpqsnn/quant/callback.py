"""CBP as a Lightning Callback (docs/algorithm.md sections 1-7).

Attach it to a ``Trainer`` that fine-tunes a pretrained module; it knows nothing about the method:

- ``setup``: selects the layers, freezes the scales ``a_l`` (the level set's rule, ``scale``) and
  registers a straight-through :class:`LevelQuantizer` parametrization (a baseline's own, see
  below), so the module computes with ``w_q`` in training and
  validation while the optimizer updates the latent FP32 weight; creates one multiplier per weight;
- ``on_train_start``: the initial multiplier step (g = 1), once per stage (not on resume);
- ``on_before_optimizer_step``: adds ``lambda * dcs/dw`` to the (unscaled) weight gradient, i.e.
  the gradient of the Lagrangian ``L = task + sum lambda * cs(w; g)``; runs before gradient clipping
  (``constraint_step="coupled"``, the paper's). ``constraint_step="decoupled"`` (beyond the paper,
  docs/algorithm.md section 6) instead moves the latent weight itself by ``s * lambda * dcs/dw``
  and leaves the gradient to the task loss, ``s`` the weight's learning-rate schedule factor (its
  current LR over its initial one, 1 without a schedule): the constraint's pull then stays
  proportional to lambda under an adaptive optimizer, as AdamW's decoupled weight decay stays
  proportional to the decay, and lambda is the pull's step in weight units. ``pull_cap = c``
  (decoupled only, beyond the paper) caps every multiplier at ``c * lr_0 / 2`` (``lr_0`` the
  weight's initial LR), so the pull ``2 lambda`` never outweighs an Adam task step steadier than
  ``|m| / sqrt(v) = c`` (docs/algorithm.md section 6);
- ``on_train_batch_end``: clamps the latent weights to ``[-latent_clamp, latent_clamp]``; with
  ``trace_every = N > 0`` records, every N optimizer steps, the CFS, the fraction of quantized
  weights within a tenth of the scale of their level, and the mean multiplier (``trace``);
- ``on_train_epoch_end``: the event-driven g schedule on the epoch's Lagrangian sum, LR drop at
  ``lr_drop_at_g``, a multiplier step after every g update; logs the CBP curves;
- ``on_fit_end``: bakes every latent weight onto its level (a plain module, weights ``a_l * F``).

The epoch's Lagrangian sum is ``L_sum = sum over optimizer steps of (task loss + sum lambda cs)``.
Under data parallelism every rank adds its own steps' ``task + constraint`` and the sums are
all-reduced, as the reference sums the Lagrangian of every step it takes: the same ``L_sum`` as one
device at the same per-device batch size (and W times that of one device taking the W ranks'
batches together as one batch; tests/quant/test_ddp.py checks that factor). With
``accumulate_grad_batches = k`` Lightning hands the callback the task loss divided by k, so a step's
task term is the mean over its k micro-batches and the constraint is counted once per step: the
``L_sum`` of one device at batch ``k * B``.

Precision: the multipliers, their optimizer, the constraint sums and the gradient term
``lambda * dcs/dw`` are float32 whatever the module's dtype; the term is cast to the weight
gradient's dtype when added, so pure half precision (``16-true``, ``bf16-true``) works.

Resume: a checkpoint restores the multipliers, their optimizer's moments, the window state (g, p,
L_prev) and the history; the settings (``p_max``, ``lr_drop_at_g``, multiplier lr and weight
decay) are the ones given now, and a change from the checkpoint's is logged as a warning.

``scale`` is the frozen-scale rule of the levels ``a_l * F`` (``cbpqsnn.quant.levels``: the
paper's ``mean_abs`` for binary / ternary, ``mse`` for the multi-level sets by default).

``algorithm`` other than ``cbp`` (``cbpqsnn.quant.baselines``): ``ste``, ``scaled_ste`` and ``lsq``
keep the quantized forward (their own parametrization), clamp and bake but drop the constraint and
the multipliers; ``ptq`` only attaches and bakes (the pipeline runs no fine-tuning for it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.nn.utils import parametrize

from cbpqsnn.quant.baselines import check_algorithm, make_quantizer
from cbpqsnn.quant.levels import bits_per_weight, check_scale, default_scale, level_factors
from cbpqsnn.quant.quantizer import constraint, constraint_failure, level_index, quantize
from cbpqsnn.quant.schedule import WindowSchedule
from cbpqsnn.quant.selection import select_layers

QUANT_GROUP_ARGS = ("levels", "algorithm", "scale")  # given by conf/quant, not by conf/cbp
NO_QUANT = "none"  # quant.algorithm of an FP32-only run (quant=fp32): no CBP / STE stage
# quant=fp32 quant.algorithm=finetune: the fine-tuning stage (method.cbp's epochs, optimizer,
# schedule) on the FP32 weights, no quantization -- a comparison's equal-training reference
FP32_FINETUNE = "finetune"
FP32_ALGORITHMS = (NO_QUANT, FP32_FINETUNE)  # the quant.algorithm values of quant=fp32
MULTIPLIER_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
# how the constraint's gradient reaches the weights (module docstring): through the optimizer, as
# part of the Lagrangian's gradient (the paper), or as a step of its own beside it
CONSTRAINT_STEPS = ("coupled", "decoupled")


@dataclass(frozen=True)
class CBPResult:
    """What a finished (baked) CBP / STE stage hands the pipeline: the quantized layers, bits per
    weight, each layer's levels, the final CFS (after the bake), the CFS of the latent weights when
    the stage started, whether every weight sits on a level, the final window index g, the
    per-epoch history (g, CFS of the latent weights before the bake, Lagrangian, task loss) and the
    per-step trace (``trace_every``; empty lists when off)."""

    layer_names: list[str]
    bits: int
    levels: dict[str, Tensor]
    cfs: float
    cfs_start: float | None
    levels_ok: bool
    g_final: int
    history: dict[str, list[float]]
    trace: dict[str, list[float]]


class CBPCallback(L.Callback):
    """Constrained backpropagation onto the level set ``levels`` (see the module docstring)."""

    def __init__(
        self,
        levels: str | Sequence[float] = "binary",
        algorithm: str = "cbp",
        scale: str | None = None,
        multiplier_optimizer: str = "adam",
        multiplier_lr: float = 1e-4,
        constraint_step: str = "coupled",
        pull_cap: float | None = None,
        multiplier_weight_decay: float = 0.0,
        p_max: int = 20,
        lr_drop_at_g: int | None = 20,
        lr_drop_factor: float = 0.1,
        latent_clamp: float | None = 1.0,
        skip_first_last: bool = True,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        train_only_quantized: bool = False,
        bake_at_end: bool = True,
        trace_every: int = 0,
    ) -> None:
        if multiplier_optimizer not in MULTIPLIER_OPTIMIZERS:
            raise ValueError(f"unknown multiplier optimizer {multiplier_optimizer!r}; "
                             f"valid choices: {sorted(MULTIPLIER_OPTIMIZERS)}")
        if constraint_step not in CONSTRAINT_STEPS:
            raise ValueError(f"unknown constraint_step {constraint_step!r}; valid choices: "
                             f"{list(CONSTRAINT_STEPS)}")
        self.constraint_step = constraint_step
        if pull_cap is not None and (constraint_step != "decoupled" or not float(pull_cap) > 0):
            raise ValueError(f"pull_cap={pull_cap} needs constraint_step='decoupled' and a number > 0 "
                             f"(the pull's cap as a multiple of the weight LR; null: no cap)")
        self.pull_cap = None if pull_cap is None else float(pull_cap)
        self.factors = level_factors(levels)
        check_algorithm(algorithm, self.factors)
        self.scale = check_scale(scale or default_scale(self.factors))
        self.level_set = levels if isinstance(levels, str) else list(self.factors)
        self.bits = bits_per_weight(self.factors)
        self.algorithm = algorithm
        self.multiplier_optimizer_name = multiplier_optimizer
        self.multiplier_lr = float(multiplier_lr)
        self.multiplier_weight_decay = float(multiplier_weight_decay)
        self.lr_drop_factor = float(lr_drop_factor)
        self.latent_clamp = latent_clamp
        self.skip_first_last = skip_first_last
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.train_only_quantized = train_only_quantized
        self.bake_at_end = bake_at_end
        if int(trace_every) < 0:
            raise ValueError(f"trace_every must be 0 (off) or a number of steps, got {trace_every}")
        self.trace_every = int(trace_every)
        self.trace: dict[str, list[float]] = {"step": [], "cfs": [], "near": [], "lambda_mean": []}
        self.schedule = WindowSchedule(p_max=p_max, lr_drop_at_g=lr_drop_at_g)
        self.layer_names: list[str] = []
        self.modules: dict[str, nn.Module] = {}
        self.multipliers: dict[str, Tensor] = {}
        self.multiplier_opt: torch.optim.Optimizer | None = None
        self.initialized = False  # the initial multiplier step has happened
        self.cfs_start: float | None = None  # CFS of the latents when the stage started
        self.baked = False
        self.history: dict[str, list[float | None]] = {"epoch": [], "g": [], "cfs": [], "lagrangian": [],
                                                       "task_loss": [], "changed": []}
        self._epoch_levels: dict[str, Tensor] = {}  # each weight's level index when the epoch began
        self._pending: dict[str, Any] | None = None
        self._levels_table: dict[str, Tensor] = {}
        self._latents: dict[str, Tensor] = {}  # kept by the bake (latent_weights)
        self._task_sum: Tensor | None = None
        self._constraint_sum: Tensor | None = None
        self._steps = 0

    @property
    def scale_rule(self) -> str:
        """How the levels' scale is set: the frozen rule, or the baseline's own."""
        return {"lsq": "learned step (lsq)", "scaled_ste": "recomputed every step (scaled_ste)"}.get(
            self.algorithm, self.scale)

    @property
    def uses_constraint(self) -> bool:
        return self.algorithm == "cbp"

    # ------------------------------------------------------------------ attaching / baking
    def attach(self, module: nn.Module) -> None:
        """Select layers, freeze scales, register the quantized forward, create multipliers."""
        if self.layer_names:
            return
        names = select_layers(module, self.skip_first_last, self.include, self.exclude)
        if not names:
            raise ValueError(
                "CBP found no layer to quantize (every Conv/Linear except the first and the last "
                "is quantized; a network needs at least 3 of them, or use quant.include=[...])"
            )
        modules = dict(module.named_modules())
        for name in names:
            layer = modules[name]
            quantizer = make_quantizer(self.algorithm, layer.weight, self.factors, self.scale)
            parametrize.register_parametrization(layer, "weight", quantizer)
            self.modules[name] = layer
        self.layer_names = names
        if self.train_only_quantized:  # the latents and the quantizers' own (LSQ step sizes)
            trained = {id(p) for n in names for p in self.modules[n].parametrizations.parameters()}
            for p in module.parameters():
                if id(p) not in trained:
                    p.requires_grad_(False)
        if self.uses_constraint:
            self.multipliers = {n: torch.zeros_like(self.latent(n), dtype=torch.float32,
                                                    requires_grad=False) for n in names}
            self._make_multiplier_optimizer()

    def _make_multiplier_optimizer(self) -> None:
        cls = MULTIPLIER_OPTIMIZERS[self.multiplier_optimizer_name]
        kwargs: dict[str, Any] = {"lr": self.multiplier_lr}
        if self.multiplier_weight_decay:
            kwargs["weight_decay"] = self.multiplier_weight_decay
        elif cls is torch.optim.AdamW:
            kwargs["weight_decay"] = 0.0
        self.multiplier_opt = cls(list(self.multipliers.values()), **kwargs)

    def quantize_post_training(self, module: nn.Module) -> None:
        """``ptq``: attach to the pretrained ``module`` with no fine-tuning (bake it afterwards)."""
        self.attach(module)
        self.cfs_start = self.cfs()

    @contextmanager
    def latent_weights(self) -> Iterator[None]:
        """Inside: the quantized layers compute with their latent FP32 weights, not on their levels
        -- the pre-bake network, to measure what rounding onto the levels costs (before the bake:
        the quantizers replaced by the identity; after it: the latents kept by :meth:`bake` swapped
        in). The module is as before on exit."""
        if self.baked:
            weights = {n: self.modules[n].weight for n in self.layer_names}
            saved = {n: w.detach().clone() for n, w in weights.items()}
            try:
                with torch.no_grad():
                    for name, w in weights.items():
                        w.copy_(self._latents[name])
                yield
            finally:
                with torch.no_grad():
                    for name, w in weights.items():
                        w.copy_(saved[name])
            return
        quantizers = {n: self.modules[n].parametrizations.weight[0] for n in self.layer_names}
        try:
            for name in self.layer_names:
                self.modules[name].parametrizations.weight[0] = nn.Identity()
            yield
        finally:
            for name, quantizer in quantizers.items():
                self.modules[name].parametrizations.weight[0] = quantizer

    def latent(self, name: str) -> nn.Parameter:
        return self.modules[name].parametrizations.weight.original

    def levels(self, name: str) -> Tensor:
        """The levels layer ``name`` computes with now (frozen ``a_l * F`` for cbp / ptq / ste)."""
        return self.modules[name].parametrizations.weight[0].current_levels(self.latent(name))

    def bake(self) -> None:
        """Replace every latent weight by its level value and drop the parametrizations."""
        if self.baked:
            return
        self._levels_table = {n: self.levels(n).detach().clone() for n in self.layer_names}
        self._latents = {n: self.latent(n).detach().clone() for n in self.layer_names}
        for name in self.layer_names:
            parametrize.remove_parametrizations(self.modules[name], "weight", leave_parametrized=True)
        self.baked = True

    def baked_levels(self) -> dict[str, Tensor]:
        """Levels per quantized layer (valid before and after baking)."""
        if self.baked:
            return dict(self._levels_table)
        return {n: self.levels(n) for n in self.layer_names}

    def result(self) -> CBPResult:
        """Bake (if not yet) and return the stage's :class:`CBPResult`."""
        self.bake()
        return CBPResult(layer_names=list(self.layer_names), bits=self.bits,
                         levels={n: lv.cpu() for n, lv in self.baked_levels().items()},
                         cfs=self.cfs(), cfs_start=self.cfs_start, levels_ok=self.levels_ok(),
                         g_final=self.schedule.g,
                         history=self.history, trace=self.trace)

    # ------------------------------------------------------------------ metrics
    def _all_latents(self) -> list[tuple[str, Tensor, Tensor]]:
        if self.baked:
            return [(n, self.modules[n].weight, self._levels_table[n]) for n in self.layer_names]
        return [(n, self.latent(n), self.levels(n)) for n in self.layer_names]

    @torch.no_grad()
    def cfs(self) -> float:
        """Constraint-failure score: mean of ``Y(w)`` over all quantized weights."""
        total, count = 0.0, 0
        for _, w, levels in self._all_latents():
            total += constraint_failure(w, levels).sum().item()
            count += w.numel()
        return total / max(count, 1)

    @torch.no_grad()
    def near_fraction(self, tolerance: float = 0.1) -> float:
        """Fraction of the quantized weights within ``tolerance * a_l`` of their nearest level
        (``a_l``: the layer's top level, its scale)."""
        near, count = 0, 0
        for _, w, levels in self._all_latents():
            near += int(((w - quantize(w, levels)).abs() <= tolerance * levels[-1]).sum())
            count += w.numel()
        return near / max(count, 1)

    def multiplier_mean(self) -> float:
        if not self.multipliers:
            return 0.0
        return float(sum(lam.sum() for lam in self.multipliers.values())
                     / sum(lam.numel() for lam in self.multipliers.values()))

    def _record_trace(self, step: int) -> None:
        for key, value in (("step", step), ("cfs", self.cfs()), ("near", self.near_fraction()),
                           ("lambda_mean", self.multiplier_mean())):
            self.trace[key].append(value)

    @torch.no_grad()
    def _level_indices(self) -> dict[str, Tensor]:
        return {n: level_index(self.latent(n), self.levels(n)).to(torch.int8) for n in self.layer_names}

    def level_changes(self) -> float:
        """The fraction of the quantized weights whose level (the value the layer computes with)
        is another than when the epoch began: how much the quantized network still moves."""
        now = self._level_indices()
        changed = sum(int((now[n] != self._epoch_levels[n]).sum()) for n in self.layer_names)
        return changed / max(sum(t.numel() for t in now.values()), 1)

    @torch.no_grad()
    def levels_ok(self) -> bool:
        """Every quantized weight the module computes with sits exactly on one of its levels."""
        for _, w, levels in self._all_latents():
            if not torch.equal(quantize(w, levels), w):
                return False
        return True

    # ------------------------------------------------------------------ multiplier step
    @torch.no_grad()
    def multiplier_step(self) -> None:
        """Gradient ascent on ``sum lambda * cs(w; g)``: ``dL/dlambda = cs >= 0``."""
        if not self.uses_constraint:
            return
        assert self.multiplier_opt is not None
        for name, lam in self.multipliers.items():
            cs, _ = constraint(self.latent(name), self.levels(name), self.schedule.g)
            lam.grad = -cs.to(lam.dtype)  # the optimizer minimizes, so descend on -L
        self.multiplier_opt.step()
        self.multiplier_opt.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.attach(pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.uses_constraint:
            device = self.latent(self.layer_names[0]).device
            if next(iter(self.multipliers.values())).device != device:
                for lam in self.multipliers.values():
                    lam.data = lam.data.to(device, torch.float32)
                self._make_multiplier_optimizer()
        if self._pending is not None:
            self._apply_state(self._pending)
            self._pending = None
        if not self.initialized:
            self.cfs_start = self.cfs()
            self.multiplier_step()
            self.initialized = True
            if self.trace_every:
                self._record_trace(0)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_levels = self._level_indices()
        device = pl_module.device
        self._task_sum = torch.zeros((), device=device)
        self._constraint_sum = torch.zeros((), device=device)
        self._steps = 0

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        self._steps += 1
        if not self.uses_constraint:
            return
        lrs = self._learning_rates(optimizer) if self.constraint_step == "decoupled" else {}
        for name, lam in self.multipliers.items():
            w = self.latent(name)
            if self.pull_cap is not None:
                lam.clamp_(max=self.pull_cap * lrs[id(w)][1] / 2)
            cs, grad = constraint(w, self.levels(name), self.schedule.g)
            self._constraint_sum += (lam * cs).sum()
            if self.constraint_step == "decoupled":  # w -= s * lambda * dcs/dw, beside the optimizer
                w.sub_((lam * grad * lrs[id(w)][0]).to(w.dtype))
                continue
            if w.grad is not None and w.grad.dtype == lam.dtype:
                w.grad.addcmul_(lam, grad)  # grad is 0 or +-2: lam * grad is exact, one pass
            else:  # float32 multipliers, the weight's own dtype (pure half precision)
                term = (lam * grad).to(w.dtype)
                w.grad = term if w.grad is None else w.grad.add_(term)

    def _learning_rates(self, optimizer: torch.optim.Optimizer | None) -> dict[int, tuple[float, float]]:
        """Every latent weight's (by ``id``) schedule factor, its current learning rate over its
        initial one, and that initial one (the ``initial_lr`` a PyTorch scheduler keeps in the
        parameter group; without a scheduler the current LR, and the factor 1)."""
        def rates(group: dict[str, Any]) -> tuple[float, float]:
            initial = float(group.get("initial_lr", group["lr"]))
            return float(group["lr"]) / (initial or 1.0), initial

        lrs = {id(p): rates(group) for group in getattr(optimizer, "param_groups", [])
               for p in group["params"]}
        missing = [n for n in self.layer_names if id(self.latent(n)) not in lrs]
        if missing:
            raise RuntimeError(f"constraint_step='decoupled' needs the weight optimizer of the "
                               f"quantized layers {missing}; it does not hold them")
        return lrs

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._task_sum += loss.detach().float()  # divided by accumulate_grad_batches
        if self.latent_clamp is not None:
            for name in self.layer_names:
                self.latent(name).clamp_(-self.latent_clamp, self.latent_clamp)
        if self.trace_every and trainer.global_step % self.trace_every == 0:
            self._record_trace(trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # every rank's (task + constraint) over its own steps, summed over the ranks
        sums = trainer.strategy.reduce(torch.stack([self._task_sum, self._constraint_sum]),
                                       reduce_op="sum")
        task, L_sum = float(sums[0]), float(sums.sum())
        steps = max(self._steps * trainer.world_size, 1)
        if not math.isfinite(L_sum):
            raise FloatingPointError(
                f"CBP stage, epoch {trainer.current_epoch}: the Lagrangian is {L_sum} "
                "(non-finite task loss or constraint term)"
            )
        if self.uses_constraint:
            decision = self.schedule.end_epoch(L_sum)
            if decision.lr_drop:
                self._drop_lr(trainer)
            if decision.updated:
                self.multiplier_step()
        cfs = self.cfs()
        self.history["epoch"].append(trainer.current_epoch)
        self.history["g"].append(self.schedule.g)
        self.history["cfs"].append(cfs)
        self.history["lagrangian"].append(L_sum)
        self.history["task_loss"].append(task / steps)  # mean task loss per optimizer step
        changed = self.level_changes()
        self.history["changed"].append(changed)
        metrics = {"cbp/task_loss": task / steps, "cbp/lagrangian": L_sum,
                   "cbp/cfs": cfs, "cbp/g": float(self.schedule.g), "cbp/changed": changed}
        if self.uses_constraint:
            metrics["cbp/lambda_mean"] = self.multiplier_mean()
            metrics["cbp/lambda_max"] = float(max(lam.max() for lam in self.multipliers.values()))
        pl_module.log_dict(metrics, on_step=False, on_epoch=True)

    def _drop_lr(self, trainer: L.Trainer) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_drop_factor
        for config in trainer.lr_scheduler_configs:
            base_lrs = getattr(config.scheduler, "base_lrs", None)
            if base_lrs is not None:
                config.scheduler.base_lrs = [lr * self.lr_drop_factor for lr in base_lrs]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bake_at_end:
            self.bake()

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {
            "level_set": self.level_set,
            "algorithm": self.algorithm,
            "scale": self.scale,
            "layers": list(self.layer_names),
            "scales": {n: float(lv[-1]) for n, lv in self.baked_levels().items()},
            "multipliers": {n: lam.detach().cpu().clone() for n, lam in self.multipliers.items()},
            "multiplier_optimizer": self.multiplier_opt.state_dict() if self.multiplier_opt else None,
            "schedule": self.schedule.state_dict(),
            "initialized": self.initialized,
            "cfs_start": self.cfs_start,
            "history": {k: list(v) for k, v in self.history.items()},
            "trace": {k: list(v) for k, v in self.trace.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        mismatch = [
            f"{key}: checkpoint has {state_dict[key]!r}, this run has {mine!r}"
            for key, mine in (("level_set", self.level_set), ("algorithm", self.algorithm),
                              ("scale", self.scale), ("layers", self.layer_names or state_dict["layers"]))
            if state_dict.get(key, mine) != mine
        ]
        if mismatch:
            raise ValueError("cannot resume the CBP stage from this checkpoint: " + "; ".join(mismatch))
        self._pending = state_dict  # applied in on_train_start, once tensors sit on their device

    def _apply_state(self, state: dict[str, Any]) -> None:
        for name, lam in self.multipliers.items():
            lam.copy_(state["multipliers"][name].to(lam.device))
        if self.multiplier_opt is not None and state["multiplier_optimizer"] is not None:
            settings = {k: v for k, v in self.multiplier_opt.param_groups[0].items() if k != "params"}
            self.multiplier_opt.load_state_dict(state["multiplier_optimizer"])
            for group in self.multiplier_opt.param_groups:  # the moments resume, the settings not
                self._warn_changed(group, settings, ("lr", "weight_decay"), "multiplier optimizer")
                group.update(settings)
        schedule = state["schedule"]
        self._warn_changed(schedule, vars(self.schedule), ("p_max", "lr_drop_at_g"), "schedule")
        self.schedule.load_state_dict({k: schedule[k] for k in ("g", "p", "L_prev")})
        self.initialized = state["initialized"]
        self.cfs_start = state.get("cfs_start")
        epochs = len(state["history"]["epoch"])  # a checkpoint older than a key: None per epoch
        self.history = {k: list(state["history"].get(k, [None] * epochs)) for k in self.history}
        self.trace = {k: list(v) for k, v in state.get("trace", self.trace).items()}

    @staticmethod
    def _warn_changed(saved: dict[str, Any], given: dict[str, Any], keys: Sequence[str],
                      what: str) -> None:
        changed = [f"{k} {saved[k]!r} -> {given[k]!r}" for k in keys
                   if k in saved and saved[k] != given[k]]
        if changed:
            rank_zero_warn(f"resuming the CBP stage with the {what} settings given now, not the "
                           f"checkpoint's: {', '.join(changed)}")
