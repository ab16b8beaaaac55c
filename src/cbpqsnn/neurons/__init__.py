"""Spiking neurons, all in this package under one multi-step base (:class:`MultiStepNeuron`,
time-first ``[T, B, ...]``), and the surrogate gradient functions they use.

- :mod:`.surrogates`: rectangular, ATan, fast sigmoid, sigmoid; the Heaviside step ``spike``;
- :mod:`.base`: ``MultiStepNeuron`` (a neuron is its single step; the base runs it over T),
  ``TemporalModule``, ``seq_apply``;
- :mod:`.lif`: STBP's iterative LIF, SpikingJelly's LIF / PLIF;
- :mod:`.integrate_fire`: the IF neuron of a converted ReLU (fused multi-step backward);
- :mod:`.tssl`: TSSL-BP's LIF with a PSP-trace output and its own backward.
"""

from cbpqsnn.neurons.base import MultiStepNeuron, TemporalModule, seq_apply
from cbpqsnn.neurons.integrate_fire import IFNeuron
from cbpqsnn.neurons.lif import STBPLIF, ParametricLIF
from cbpqsnn.neurons.surrogates import (
    SURROGATES,
    ATan,
    FastSigmoid,
    Rectangular,
    Sigmoid,
    Surrogate,
    make_surrogate,
    spike,
)
from cbpqsnn.neurons.tssl import TSSLConstants, TSSLFunction, TSSLNeuron, psp_kernel, psp_trace

__all__ = [
    "SURROGATES", "STBPLIF", "ATan", "FastSigmoid", "IFNeuron", "MultiStepNeuron", "ParametricLIF",
    "Rectangular", "Sigmoid", "Surrogate", "TSSLConstants", "TSSLFunction", "TSSLNeuron",
    "TemporalModule", "make_surrogate", "psp_kernel", "psp_trace", "seq_apply", "spike",
]
