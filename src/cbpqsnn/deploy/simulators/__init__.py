"""Independent simulators of ``model.nir``, one module each: ``NAME`` and ``outputs(graph, inputs,
T, use_metadata=True)`` -> the output summed over ``T`` steps, ``[B, classes]``; a node the
simulator cannot compute as the graph says raises :class:`common.NotExpressible` with the reason;
a simulator that is not installed raises ``ImportError`` when run. ``use_metadata=False``: the
converted network's IF nodes as NIR 1.0 defines IF (their metadata ignored)."""

from cbpqsnn.deploy.simulators import norse_sim, sinabs_sim, snntorch_sim

ALL = (snntorch_sim, sinabs_sim, norse_sim)
INSTALL = 'pip install -e ".[deploy]"; Sinabs with --no-deps: docs/deploying.md'
