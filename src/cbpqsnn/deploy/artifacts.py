"""The deployment files of a baked run: ``model.nir`` (NIR graph, :mod:`cbpqsnn.deploy.nir_export`)
and, for binary / ternary weights, ``model_int.npz`` (integer artifact, :mod:`cbpqsnn.deploy.integer`),
written by every run and by ``src/export.py``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from cbpqsnn.deploy import integer
from cbpqsnn.deploy.nir_export import to_nir

NIR_FILE, INTEGER_FILE = "model.nir", "model_int.npz"


def network_levels(levels: dict[str, Tensor], prefix: str = "net.") -> dict[str, Tensor]:
    """Quantized layers named inside the network (``net.layers.3`` -> ``layers.3``)."""
    return {name.removeprefix(prefix): lv for name, lv in levels.items()}


def write_deployment(net: nn.Module, levels: dict[str, Tensor] | None, T: int,
                     out_dir: Path) -> dict[str, Any]:
    """Write what can be written for ``net``; returns what was written (file names, accumulator
    and membrane bits) and why anything was not (a network or level set without a mapping)."""
    import nir

    info: dict[str, Any] = {}
    try:
        graph = to_nir(net, T)
    except (NotImplementedError, AttributeError) as err:
        info["nir"] = f"not written: {err}"
    else:
        tmp = out_dir / (NIR_FILE + ".tmp")
        nir.write(str(tmp), graph)
        os.replace(tmp, out_dir / NIR_FILE)
        info["nir"] = NIR_FILE
    if not levels:
        info["integer"] = "not written: no quantized layers"
        return info
    try:
        manifest, arrays = integer.build(net, levels, T)
    except (NotImplementedError, AttributeError, ValueError) as err:
        info["integer"] = f"not written: {err}"
    else:
        integer.save(out_dir / INTEGER_FILE, manifest, arrays)
        info["integer"] = INTEGER_FILE
        info["bits"] = integer.bit_widths(manifest, arrays)
    return info
