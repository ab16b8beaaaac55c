"""Does the exported network compute what the project's network computes? The output summed over
the ``T`` steps (spike counts, or the analog classifier's summed outputs) from the implementations
of the same weights: the project's (torch), independent simulators reading ``model.nir`` (snnTorch,
Sinabs, Norse: :mod:`cbpqsnn.deploy.simulators`, the ``deploy`` extra) and the NumPy integer
reference. Inputs are batch-first: static ``[B, *in_shape]`` (repeated every step) or event
frames ``[B, T, *in_shape]`` (one per step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cbpqsnn.deploy import numpy_reference, simulators
from cbpqsnn.deploy.simulators.common import NotExpressible, has_if_metadata


@torch.no_grad()
def project_outputs(net: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """The project's output summed over time, ``[B, classes]`` (``net`` runs time-first)."""
    x = inputs.transpose(0, 1) if net.is_frames(inputs) else inputs  # [B, T, ...] has a frame's rank
    return net(x).double().sum(0).numpy()


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
        variants = [("", True)] + ([("_nir_if_semantics", False)] if has_if_metadata(graph) else [])
        for simulator in simulators.ALL:
            for suffix, use_metadata in variants:
                key = simulator.NAME + suffix
                try:
                    compare(key, simulator.outputs(graph, inputs, T, use_metadata=use_metadata))
                except NotExpressible as err:
                    result[f"{key}_vs_project"] = f"not expressible: {err}"
                except ImportError as err:
                    result[f"{key}_vs_project"] = f"not run: {err.name} missing ({simulators.INSTALL})"
        try:
            from cbpqsnn.deploy import speck

            result["speck_dynapcnn"] = speck.verdict(graph, T)
        except ImportError as err:
            result["speck_dynapcnn"] = f"not run: {err.name} missing ({simulators.INSTALL})"
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
