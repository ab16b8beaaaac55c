"""TSSL-BP backbone (Zhang & Li 2020): LIF neurons whose outputs are PSP traces, the TSSL-BP
backward (:mod:`cbpqsnn.neurons.tssl`), PSP-filtered input, non-spiking 1.1 x sum-pooling, dropout with one
mask over all T steps, the "kernel" loss against the (twice PSP-filtered, as in the authors' code)
trace of a desired spike train, argmax of the summed output; weights clamped to +-4 after every
optimizer step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from cbpqsnn.methods.base import SpikingClassifier
from cbpqsnn.nets.feedforward import SpikingNet, build_spiking_net
from cbpqsnn.nets.tssl_layers import PSPInput, ScaledSumPool, TimeSharedDropout
from cbpqsnn.neurons import TSSLConstants, TSSLNeuron, psp_trace

BACKWARDS = ("tssl", "tssl_rising", "surrogate")
REDUCTIONS = ("sum", "mean")
LOSSES = ("kernel", "count", "softmax")


def desired_spikes(T: int, pattern: Sequence[float] | None = None) -> Tensor:
    """Desired spike train of the label neuron: ``pattern`` tiled to ``T`` steps; by default
    (reference code) ``[0, 1, 1, 1, 1]`` for ``T < 10`` and ``[0, 1]`` otherwise."""
    if pattern is None:
        pattern = [0, 1, 1, 1, 1] if T < 10 else [0, 1]
    base = torch.tensor([float(v) for v in pattern])
    if base.numel() == 0:
        raise ValueError("desired_spikes must not be empty")
    return base.repeat(-(-T // base.numel()))[:T]


def target_trace(T: int, tau_s: float, pattern: Sequence[float] | None = None,
                 double_filtered: bool = True) -> Tensor:
    """Target trace ``[T]`` of the label neuron: :func:`desired_spikes` through the PSP filter
    ``a[t] = (1 - 1/tau_s) a[t-1] + s[t] / tau_s``, applied twice by default.

    Twice follows the authors' code, which the published results came from: TSSL-BP ``main.py``
    (and CBP-QSNN ``main_quantize_cbp.py``) builds the desired train as ``loss_f.psp(pattern)``, and
    ``loss_kernel`` in ``functions/loss_f.py`` filters the target again (``psp(target)``) before
    comparing it with the output trace. The paper's text describes one filtering
    (``double_filtered=False``). T = 5, tau_s = 3: ``[0, 1/9, 7/27, 33/81, 131/243]`` (twice) vs.
    ``[0, 1/3, 5/9, 19/27, 65/81]`` (once).
    """
    trace = desired_spikes(T, pattern).view(-1, 1)
    for _ in range(2 if double_filtered else 1):
        trace = psp_trace(trace, tau_s)
    return trace.view(-1)


def build_tssl_net(model: dict[str, Any], in_shape: tuple[int, ...], num_classes: int, T: int,
                   constants: TSSLConstants, custom_backward: bool = True,
                   pool_scale: float = 1.1) -> SpikingNet:
    """The model spec as a TSSL-BP network: PSP-filtered input, every conv/FC (no bias) followed by a
    :class:`TSSLNeuron` (the classifier too), every ``P<k>`` a :class:`ScaledSumPool`, every ``D`` a
    :class:`TimeSharedDropout` (one mask for all T steps, as the reference). Weights: conv PyTorch's
    default init, FC Kaiming-normal, times ``conv_weight_scale`` / ``fc_weight_scale``."""
    neuron = partial(TSSLNeuron, constants, custom_backward)
    net = build_spiking_net(model["spec"], in_shape, num_classes, neuron, T, bias=False,
                            dropout=model["dropout"], spiking_output=True)
    layers: list[nn.Module] = [PSPInput(constants.tau_s)]
    for layer in net.layers:
        if isinstance(layer, nn.MaxPool2d):
            raise ValueError("TSSL-BP pools traces by a scaled sum: use P<k>, not M<k>")
        if isinstance(layer, nn.AvgPool2d):
            layer = ScaledSumPool(layer.kernel_size, pool_scale)
        elif isinstance(layer, nn.Dropout):
            layer = TimeSharedDropout(layer.p)
        layers.append(layer)
    with torch.no_grad():
        for layer in layers:
            if isinstance(layer, nn.Conv2d):
                layer.weight.mul_(model["conv_weight_scale"])
            elif isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight)
                layer.weight.mul_(model["fc_weight_scale"])
    return SpikingNet(layers, in_shape, T)


class TSSLClassifier(SpikingClassifier):
    """``scores = sum_t a_out[t]``; one of the reference code's three losses
    (``stonezwr/TSSL-BP`` ``functions/loss_f.py``, chosen by its ``loss`` setting):

    - ``kernel`` (the CIFAR-10 row's): ``0.5 * sum_{t,c} (a_out[t,c] - a_target[t,c])^2``,
      ``a_target`` the :func:`target_trace` for the label neuron and 0 for the others;
    - ``count`` (``loss_count``): ``delta_c = (sum_t a_out[t,c] - n_c) / T`` with ``n_c`` =
      ``desired_count`` for the label and ``undesired_count`` for the others, set to 0 where the
      label neuron is above its count or another neuron below its count (one-sided), and
      ``0.5 * T * sum_c delta_c^2`` (the reference repeats ``delta`` over the T steps);
    - ``softmax`` (``spike_soft_max``): cross-entropy of ``log_softmax(scores)``, averaged over the
      batch whatever ``loss_reduction`` says (``CrossEntropyLoss``'s mean, as the reference).

    Each sample's ``kernel`` / ``count`` loss is summed or averaged over the batch
    (``loss_reduction``).

    ``double_filtered_target`` (default True): the target is the desired spike train PSP-filtered
    twice, as in the authors' code (TSSL-BP ``main.py`` + ``functions/loss_f.py``, see
    :func:`target_trace`); False: once, as the paper's text describes.

    Method args: ``tau_m`` (5), ``tau_s`` (3), ``v_threshold`` (1), ``max_inverse_slope`` (8),
    ``fallback_scale`` (0.2), ``fallback_clamp`` (8), ``silent_trace`` (0.25), ``backward``
    (``tssl``: the TSSL-BP code CBP-QSNN ran | ``tssl_rising``: TSSL-BP's later master, timing
    terms also at quiet steps whose membrane rose, see :mod:`cbpqsnn.neurons.tssl` | ``surrogate``),
    ``pool_scale`` (1.1), ``desired_spikes`` (null: reference rule), ``loss`` (``kernel``),
    ``desired_count`` (5) and ``undesired_count`` (1) for ``count``, ``loss_reduction`` (``sum``
    as the reference code | ``mean``), ``weight_clamp`` (4; null: off).
    """

    MODEL_OPTIONS: ClassVar[dict[str, Any]] = {
        "bias": False, "dropout": 0.0, "conv_weight_scale": 1.0, "fc_weight_scale": 1.0}

    def __init__(self, model: Mapping[str, Any], in_shape: Sequence[int], num_classes: int, T: int,
                 *, tau_m: float = 5.0, tau_s: float = 3.0, v_threshold: float = 1.0,
                 max_inverse_slope: float = 8.0, fallback_scale: float = 0.2,
                 fallback_clamp: float = 8.0, silent_trace: float = 0.25, backward: str = "tssl",
                 pool_scale: float = 1.1, desired_spikes: Sequence[float] | None = None,
                 double_filtered_target: bool = True, loss: str = "kernel",
                 desired_count: float = 5.0, undesired_count: float = 1.0, loss_reduction: str = "sum",
                 weight_clamp: float | None = 4.0, **base: Any) -> None:
        if backward not in BACKWARDS:
            raise ValueError(f"unknown backward {backward!r}; valid choices: {list(BACKWARDS)}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; valid choices: {list(LOSSES)}")
        if loss_reduction not in REDUCTIONS:
            raise ValueError(f"unknown loss_reduction {loss_reduction!r}; valid choices: {list(REDUCTIONS)}")
        super().__init__(model, in_shape, num_classes, T, **base)

    @property
    def constants(self) -> TSSLConstants:
        hp = self.hparams
        numbers = {k: float(hp[k]) for k in TSSLConstants.__dataclass_fields__ if k != "rising_timing"}
        return TSSLConstants(**numbers, rising_timing=hp.backward == "tssl_rising")

    def build_net(self, model: dict[str, Any], in_shape: tuple[int, ...], num_classes: int,
                  T: int) -> nn.Module:
        if model["bias"]:
            raise ValueError("TSSL-BP layers have no bias (reference code): set model.bias=false")
        return build_tssl_net(model, in_shape, num_classes, T, self.constants,
                              custom_backward=self.hparams.backward != "surrogate",
                              pool_scale=float(self.hparams.pool_scale))

    def readout(self, out: Tensor) -> Tensor:
        return out.sum(0)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        kind = self.hparams.loss
        if kind == "softmax":
            return nn.functional.cross_entropy(self.readout(out), target)
        per_sample = self._count_loss(out, target) if kind == "count" else self._kernel_loss(out, target)
        return per_sample.sum() if self.hparams.loss_reduction == "sum" else per_sample.mean()

    def _count_loss(self, out: Tensor, target: Tensor) -> Tensor:
        hp, T = self.hparams, out.shape[0]
        label = nn.functional.one_hot(target, self.num_classes).bool()            # [B, C]
        wanted = torch.where(label, float(hp.desired_count), float(hp.undesired_count))
        delta = (out.sum(0) - wanted.to(out)) / T
        # one-sided: the label neuron may fire more than its count, the others less than theirs
        delta = torch.where(label, delta.clamp(max=0), delta.clamp(min=0))
        return 0.5 * T * delta.square().sum(1)

    def _kernel_loss(self, out: Tensor, target: Tensor) -> Tensor:
        trace = target_trace(out.shape[0], self.constants.tau_s, self.hparams.desired_spikes,
                             bool(self.hparams.double_filtered_target)).to(out)
        hot = nn.functional.one_hot(target, self.num_classes).to(out.dtype)  # [B, C]
        desired = trace.view(-1, 1, 1) * hot.unsqueeze(0)                     # [T, B, C]
        return 0.5 * (out - desired).square().sum(dim=(0, 2))

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then every weight clamped to ``[-weight_clamp, weight_clamp]``."""
        super().optimizer_step(*args, **kwargs)
        bound = self.hparams.weight_clamp
        if bound is not None:
            with torch.no_grad():
                for p in self.net.parameters():
                    p.clamp_(-float(bound), float(bound))
