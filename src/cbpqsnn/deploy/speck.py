"""Would SynSense's chip toolchain take the network? ``sinabs.backend.dynapcnn.DynapcnnNetwork``
(``discretize=True``: weights, biases, thresholds and initial potentials as the chip's integers)
on the Sinabs network read from ``model.nir`` (:mod:`cbpqsnn.deploy.simulators.sinabs_sim`, plain
Sinabs layers in a ``Sequential``), then the layer-to-core mapping under Speck 2f's memory per core,
then each layer's configuration. ``samna`` (SynSense's chip library) is needed only to write the
configuration object; where it is not installed (docs/deploying.md: PyPI's ``samna`` is a
bootstrap that fetches the real package from SynSense's own index at import) its modules are
stubbed for the import of ``sinabs.backend.dynapcnn`` and the verdict stops before the
configuration object."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

import torch

from cbpqsnn.deploy.simulators import sinabs_sim
from cbpqsnn.deploy.simulators.common import if_extension, in_shape

DEVICE = "speck2fmodule"


class _StubType(type):
    """A class whose every attribute is another stub class (only what import time touches)."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubType(name, (), {})


class _Stub(types.ModuleType):
    """A stub ``samna`` module: every attribute a :class:`_StubType`."""

    __path__: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubType(name, (), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.split(".")[0] in ("samna", "samnagui"):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        return _Stub(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def _real_samna() -> bool:
    """PyPI's ``samna`` is a bootstrap (``PYPI_SAMNA``) that runs pip at import: never import it."""
    spec = importlib.util.find_spec("samna")
    if spec is None or spec.origin is None:
        return False
    with open(spec.origin, encoding="utf-8", errors="replace") as source:
        return "PYPI_SAMNA" not in source.read()


@contextlib.contextmanager
def _dynapcnn_importable():
    """``sinabs.backend.dynapcnn`` importable: with the real samna if installed, else stubbed."""
    if _real_samna():
        yield True
        return
    finder = _StubFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield False
    finally:
        sys.meta_path.remove(finder)


def sequential(graph: Any, T: int) -> torch.nn.Sequential:
    """The graph as a ``Sequential`` of plain Sinabs / torch layers (a chain of nodes only), IF
    neurons starting at their calibrated ``v_init`` (the chip's initial neuron state)."""
    import nir

    order = ["input"]
    while order[-1] != "output":
        nxt = [dst for src, dst in graph.edges if src == order[-1]]
        into = [src for src, dst in graph.edges if dst in nxt]
        if len(nxt) != 1 or len(into) != 1:
            raise NotImplementedError(f"{order[-1]}: not a chain of layers (branches or a residual ADD)")
        order.append(nxt[0])
    mapping = sinabs_sim.node_map(graph, T, use_metadata=True, fresh=False)
    layers = []
    for name in order[1:-1]:
        node = graph.nodes[name]
        layer = mapping[type(node)](node)
        if isinstance(node, nir.IF) and (v_init := if_extension(node, True).v_init) is not None:
            layer.init_state_with_shape((1, *v_init.shape))
            layer.v_mem = torch.as_tensor(v_init).unsqueeze(0).clone()
        layers.append(layer)
    return torch.nn.Sequential(*layers)


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"


def verdict(graph: Any, T: int) -> dict[str, Any]:
    """Whether ``DynapcnnNetwork(..., discretize=True)`` takes the network and the layers map onto
    Speck 2f's cores: ``{"accepted": bool, "stage": where it stopped, "reason": the toolchain's
    message, ...}``. A network refused for its analog readout (a weight layer with no spiking layer
    after it) is tried again with an ``IAF`` after the readout (``with_spiking_readout``): what
    the chip says about the rest."""
    import sinabs  # noqa: F401 -- missing: an ImportError for the caller, not a verdict

    try:
        snn = sequential(graph, T)
    except Exception as err:  # noqa: BLE001 -- the reason is the verdict
        return {"device": DEVICE, "accepted": False, "stage": "Sinabs network from model.nir",
                "reason": _reason(err)}
    result = check_sequential(snn, in_shape(graph))
    if not result["accepted"] and "followed by a spiking layer" in result["reason"]:
        import sinabs.layers as sl

        spiking = torch.nn.Sequential(*snn, sl.IAFSqueeze(num_timesteps=T, min_v_mem=None))
        result["with_spiking_readout"] = check_sequential(spiking, in_shape(graph))
    return result


def check_sequential(snn: torch.nn.Sequential, shape: tuple[int, ...]) -> dict[str, Any]:
    """The toolchain's verdict on a ``Sequential`` of Sinabs layers (:func:`verdict`)."""
    result: dict[str, Any] = {"device": DEVICE, "toolchain": "sinabs.backend.dynapcnn"}
    result["layers"] = [type(layer).__name__ for layer in snn]
    with _dynapcnn_importable() as real_samna:
        from sinabs.backend.dynapcnn import DynapcnnNetwork
        from sinabs.backend.dynapcnn.chip_factory import ChipFactory

        result["samna"] = "installed" if real_samna else "not installed: stubbed for the import only"
        stage = "DynapcnnNetwork(discretize=True)"
        try:
            net = DynapcnnNetwork(snn, input_shape=shape, discretize=True)
            result["memory"] = {k: {str(i): int(v) for i, v in per.items()}
                                for k, per in net.memory_summary().items()}
            stage = f"mapping the layers onto {DEVICE}'s cores (memory per core)"
            builder = ChipFactory(DEVICE).get_config_builder()
            layer2core = builder.map_layers_to_cores(net.dynapcnn_layers)
            result["layer2core"] = {str(k): int(v) for k, v in layer2core.items()}
            stage = "each layer's chip configuration"
            for index, layer in net.dynapcnn_layers.items():
                builder.get_dynapcnn_layer_config_dict(layer, layer2core, net.layer_destination_map[index])
            if real_samna:
                stage = "make_config"
                net.make_config(layer2core_map=layer2core, device=DEVICE)
        except Exception as err:  # noqa: BLE001 -- the reason is the verdict
            return {**result, "accepted": False, "stage": stage, "reason": _reason(err)}
    result.update(accepted=True, stage="configuration written" if real_samna else
                  "every check before the samna configuration object passed")
    return result
