"""Does the exported network compute what the project's network computes? Spike counts of the
output layer over ``T`` steps from three implementations of the same weights: the project's
(torch), an independent simulator reading ``model.nir`` (snnTorch, ``pip install snntorch
nirtorch``: the ``deploy`` extra) and the NumPy integer reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cbpqsnn.deploy import numpy_reference


@torch.no_grad()
def project_counts(net: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """The project's output spike counts ``[B, classes]`` (``net`` returns ``[T, B, classes]``)."""
    return net(inputs).sum(0).round().to(torch.int64).numpy()


@torch.no_grad()
def snntorch_counts(graph: Any, inputs: torch.Tensor, T: int) -> np.ndarray:
    """Output spike counts of ``graph`` imported by snnTorch (``snntorch.import_nir``), one sample
    at a time (NIR shapes carry no batch dimension), the input repeated for ``T`` steps."""
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    net = import_from_nir(graph)
    counts = []
    for x in inputs:
        snntorch.utils.reset(net)
        total = 0
        for _ in range(T):
            out = net(x)
            total = total + (out[0] if isinstance(out, tuple) else out)
        counts.append(total.round().to(torch.int64).numpy())
    return np.stack(counts)


def integer_counts(manifest: dict[str, Any], arrays: dict[str, np.ndarray],
                   inputs: torch.Tensor) -> np.ndarray:
    return numpy_reference.run(manifest, arrays, inputs.numpy())


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Percent of samples with the same prediction (argmax) and with identical spike counts."""
    return {"same_prediction": 100.0 * float((reference.argmax(1) == other.argmax(1)).mean()),
            "same_counts": 100.0 * float((reference == other).all(1).mean())}
