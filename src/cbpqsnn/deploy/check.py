"""Does the exported network compute what the project's network computes? The output summed over
the ``T`` steps (spike counts, or the analog classifier's summed outputs) from three
implementations of the same weights: the project's (torch), an independent simulator reading
``model.nir`` (snnTorch, ``pip install snntorch nirtorch``: the ``deploy`` extra) and the NumPy
integer reference. Inputs are batch-first: static ``[B, *in_shape]`` (repeated every step) or
event frames ``[B, T, *in_shape]`` (one per step)."""

from __future__ import annotations

import contextlib
import io
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cbpqsnn.deploy import numpy_reference


def _frames(net_in_shape: tuple[int, ...], inputs: torch.Tensor) -> bool:
    return inputs.dim() == len(net_in_shape) + 2


@torch.no_grad()
def project_outputs(net: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """The project's output summed over time, ``[B, classes]`` (``net`` runs time-first)."""
    x = inputs.transpose(0, 1) if net.is_frames(inputs) else inputs  # [B, T, ...] has a frame's rank
    return net(x).double().sum(0).numpy()


class _Heaviside(torch.nn.Module):
    """``nir.Threshold``: ``1[x > threshold]`` (snnTorch 1.0 has no mapping for the node)."""

    def __init__(self, threshold: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.as_tensor(threshold, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


def snntorch_network(graph: Any) -> torch.nn.Module:
    """``graph`` read by snnTorch: ``snntorch.import_nir.import_from_nir``; a graph with
    ``nir.Threshold`` nodes (the max pools over spikes) goes through the same node conversions of
    snnTorch plus :class:`_Heaviside`, wired by nirtorch as ``import_from_nir`` wires them."""
    import nir
    from snntorch.import_nir import _nir_to_snntorch_module, import_from_nir

    if any(isinstance(node, nir.IF) for node in graph.nodes.values()):
        raise NotImplementedError(
            "snnTorch 1.0 reads nir.IF as a leaky neuron (Leaky, beta 0.9) that returns (spikes, "
            "membrane) and cannot feed the next layer; and NIR's IF resets to v_reset with no initial "
            "potential, so no NIR simulator reproduces the converted network's reset by subtraction")
    if not any(isinstance(node, nir.Threshold) for node in graph.nodes.values()):
        return import_from_nir(graph)
    import nirtorch

    kinds = (nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.AvgPool2d, nir.LIF, nir.CubaLIF)
    node_map: dict[Any, Any] = {kind: partial(_nir_to_snntorch_module, init_hidden=True) for kind in kinds}
    node_map[nir.Threshold] = lambda n: _Heaviside(n.threshold)
    return nirtorch.nir_to_torch(graph, node_map)


@torch.no_grad()
def snntorch_outputs(graph: Any, inputs: torch.Tensor, T: int) -> np.ndarray:
    """The output of ``graph`` run by snnTorch (:func:`snntorch_network`) summed over ``T``
    steps (after the PSP filter of ``metadata["readout_psp_tau_s"]``, if the graph has one), one
    sample at a time (NIR shapes carry no batch dimension)."""
    import snntorch.utils

    in_shape = tuple(int(d) for d in graph.nodes["input"].input_type["input"])
    frames = _frames(in_shape, inputs)
    with contextlib.redirect_stdout(io.StringIO()):  # snnTorch prints every rescaled threshold array
        net = snntorch_network(graph)
    tau_s = graph.metadata.get("readout_psp_tau_s")
    totals = []
    for x in inputs:
        snntorch.utils.reset(net)
        steps = []
        for t in range(T):
            out = net(x[t] if frames else x)
            steps.append((out[0] if isinstance(out, tuple) else out).double().numpy())
        if tau_s is not None:  # the readout filter the graph's metadata asks for
            for t in range(len(steps)):
                steps[t] = steps[t] / tau_s + (1 - 1 / tau_s) * steps[t - 1] if t else steps[t] / tau_s
        totals.append(np.sum(steps, axis=0))
    return np.stack(totals)


def integer_outputs(manifest: dict[str, Any], arrays: dict[str, np.ndarray],
                    inputs: torch.Tensor) -> np.ndarray:
    return numpy_reference.run(manifest, arrays, inputs.numpy())


def with_nir_if_semantics(manifest: dict[str, Any]) -> dict[str, Any]:
    """The artifact's operations with every IF neuron as NIR's ``IF`` defines it: reset to 0 after
    a spike (not by subtraction) and no initial potential -- what any NIR simulator computes."""
    ops = [dict(op, reset="zero", v_init=False) if op.get("model") == "if" else op for op in manifest["ops"]]
    return {**manifest, "ops": ops}


def check_run(run_dir: Path, net: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, T: int,
              info: dict[str, Any]) -> dict[str, Any]:
    """``src/export.py --check``: every implementation of the run's deployment files against the
    project's network on ``inputs`` (agreement, :func:`agreement`) and each one's accuracy."""
    import nir

    reference = project_outputs(net, inputs)
    truth = labels.numpy()
    accuracy = {"project": 100.0 * float((reference.argmax(1) == truth).mean())}
    result: dict[str, Any] = {"samples": len(inputs), "accuracy": accuracy}

    def compare(key: str, outputs: np.ndarray) -> None:
        result[f"{key}_vs_project"] = agreement(reference, outputs)
        accuracy[key] = 100.0 * float((outputs.argmax(1) == truth).mean())

    if info.get("nir") == "model.nir":
        graph = nir.read(str(run_dir / "model.nir"))
        try:
            compare("snntorch", snntorch_outputs(graph, inputs, T))
        except NotImplementedError as err:
            result["snntorch_vs_project"] = f"not run: {err}"
    if info.get("integer") == "model_int.npz":
        manifest, arrays = numpy_reference.load(str(run_dir / "model_int.npz"))
        compare("numpy_integer", integer_outputs(manifest, arrays, inputs))
        if any(op.get("model") == "if" for op in manifest["ops"]):  # what NIR's IF would cost
            nir_if = with_nir_if_semantics(manifest)
            compare("numpy_nir_if_semantics", integer_outputs(nir_if, arrays, inputs))
    return result


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Percent of samples with the same prediction (argmax) and with the same outputs (spike
    counts equal; analog sums within 1e-4 relative)."""
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    same = np.isclose(other, reference, rtol=1e-4, atol=1e-4).all(1)
    return {"same_prediction": 100.0 * float((reference.argmax(1) == other.argmax(1)).mean()),
            "same_outputs": 100.0 * float(same.mean())}
