"""Sinabs and Norse, reading model.nir, against the project's network on small nets of every
backbone: STBP's LIF with average pools, the surrogate-gradient SEW-ResNet (PLIF, BN, residual ADDs,
max pools over spikes and sums of spikes), TSSL-BP's CubaLIF, and the converted network's IF with
thresholds and initial potentials -- exact in Sinabs through the IF nodes' metadata, NIR's IF in
both; and the Speck toolchain's verdict (sinabs.backend.dynapcnn). Each simulator is optional (the
``deploy`` extra; Sinabs installs with --no-deps, docs/deploying.md): its tests skip without it."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from cbpqsnn.deploy import check, numpy_reference
from cbpqsnn.deploy.artifacts import INTEGER_FILE, NIR_FILE, write_deployment
from cbpqsnn.deploy.simulators import norse_sim, sinabs_sim
from cbpqsnn.deploy.simulators.common import NotExpressible
from tests.test_deploy import tiny_net
from tests.test_deploy_backbones import converted_net, sew_net, tssl_net

SIMULATORS = {"sinabs": sinabs_sim, "norse": norse_sim}


def simulator(name: str):
    pytest.importorskip(name, reason=f"{name} is not installed (the deploy extra; docs/deploying.md)")
    return SIMULATORS[name]


def written(net, quantized, T, tmp_path):
    """The network's model.nir written and read back (node metadata included), and its integer
    artifact."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    info = write_deployment(net, quantized, T, tmp_path)
    assert info["nir"] == NIR_FILE and info["integer"] == INTEGER_FILE
    return nir.read(str(tmp_path / NIR_FILE)), numpy_reference.load(str(tmp_path / INTEGER_FILE))


def exact(reference: np.ndarray, other: np.ndarray) -> None:
    result = check.agreement(reference, other)
    assert result == {"same_prediction": 100.0, "same_outputs": 100.0}, result


def backbone(kind: str):
    """(net, quantized levels, T, inputs) of a small net of the backbone ``kind``."""
    g = torch.Generator().manual_seed(1)
    if kind == "stbp":
        net, quantized = tiny_net(["C4", "P2", "C8", "P2", "FC16"], (1, 8, 8))
        return net, quantized, 5, torch.randn(16, 1, 8, 8, generator=g)
    if kind == "sew_static":
        net, quantized = sew_net("binary")
        return net, quantized, 6, torch.randn(12, 2, 8, 8, generator=g) * 2
    if kind == "sew_events":
        net, quantized = sew_net("ternary")
        return net, quantized, 6, (torch.rand(12, 6, 2, 8, 8, generator=g) < 0.3).float()
    if kind == "tssl":
        net, quantized = tssl_net("binary")
        return net, quantized, 6, torch.randn(16, 1, 8, 8, generator=g) * 3
    net, quantized = converted_net("binary")
    return net, quantized, 6, torch.rand(16, 1, 8, 8, generator=g) * 2


@pytest.mark.parametrize("name", sorted(SIMULATORS))
@pytest.mark.parametrize("kind", ["stbp", "sew_static", "sew_events", "tssl"])
def test_the_simulator_reading_model_nir_gives_the_projects_outputs(tmp_path, name, kind):
    sim = simulator(name)
    net, quantized, T, inputs = backbone(kind)
    ours = check.project_outputs(net, inputs)
    assert len({tuple(row.round(4)) for row in ours}) > 4  # outputs that tell the inputs apart
    graph, _ = written(net, quantized, T, tmp_path)
    exact(ours, sim.outputs(graph, inputs, T, batch=5))  # batches of 5, 5, ..., the rest: each from rest


def test_sinabs_runs_the_converted_network_exactly_from_the_if_metadata(tmp_path):
    sim = simulator("sinabs")
    net, quantized, T, inputs = backbone("calib")
    ours = check.project_outputs(net, inputs)
    assert len({tuple(row.round(4)) for row in ours}) > 8
    graph, (manifest, arrays) = written(net, quantized, T, tmp_path)
    node = graph.nodes["layers.1"]
    assert isinstance(node, nir.IF) and np.allclose(node.v_threshold, 0.7)
    v_init = np.broadcast_to(net.neurons[0].v_init.numpy(), node.r.shape)
    assert np.array_equal(node.metadata["v_init"], v_init) and node.metadata["reset"] == "subtract"
    exact(ours, sim.outputs(graph, inputs, T))
    # without the metadata, Sinabs runs NIR's IF: what the integer reference gives with NIR's IF
    nir_if = check.integer_outputs(check.with_nir_if_semantics(manifest), arrays, inputs)
    assert check.agreement(ours, nir_if)["same_outputs"] < 50.0
    exact(nir_if, sim.outputs(graph, inputs, T, use_metadata=False))


def test_norse_runs_nir_if_and_says_it_cannot_honour_the_if_metadata(tmp_path):
    sim = simulator("norse")
    net, quantized, T, inputs = backbone("calib")
    graph, (manifest, arrays) = written(net, quantized, T, tmp_path)
    with pytest.raises(NotExpressible, match="reset by subtraction"):
        sim.outputs(graph, inputs, T)
    nir_if = check.integer_outputs(check.with_nir_if_semantics(manifest), arrays, inputs)
    exact(nir_if, sim.outputs(graph, inputs, T, use_metadata=False))


def test_speck_toolchain_verdicts(tmp_path):
    pytest.importorskip("sinabs", reason="sinabs is not installed (the deploy extra; docs/deploying.md)")
    from cbpqsnn.deploy import speck

    net, quantized, T, _ = backbone("calib")
    graph, _ = written(net, quantized, T, tmp_path / "calib")
    verdict = speck.verdict(graph, T)
    # the converted network: refused for its analog readout; with a spiking one, every check passes
    assert not verdict["accepted"] and "followed by a spiking layer" in verdict["reason"]
    assert verdict["with_spiking_readout"]["accepted"], verdict["with_spiking_readout"]
    assert verdict["with_spiking_readout"]["memory"]["neuron"]["0"] == 6 * 8 * 8
    net, quantized, T, _ = backbone("stbp")
    graph, _ = written(net, quantized, T, tmp_path / "stbp")
    verdict = speck.verdict(graph, T)
    assert not verdict["accepted"] and "contains LIF layers" in verdict["reason"]
