"""Spike counts behind every neuron's output, the hardware spike rate built on them, and the
training-time firing-rate monitor with its silent-layer warning."""

import csv
import warnings
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from cbpqsnn.deploy.metrics import hardware_metrics
from cbpqsnn.guards import FiringRateMonitor
from cbpqsnn.nets.feedforward import build_spiking_net
from cbpqsnn.neurons import STBPLIF, IFNeuron, TSSLConstants, TSSLNeuron

TABLE = {"fp32_mac": 1.0, "fp32_add": 1.0, "int_add": 1.0, "int_mac": 1.0}


def test_spike_train_recovers_the_spikes_behind_each_neurons_output():
    torch.manual_seed(0)
    x = torch.rand(6, 4, 50, dtype=torch.float64) * 1.5
    stbp = STBPLIF(v_threshold=0.5, decay=0.25)
    out = stbp(x)
    assert torch.equal(stbp.spike_train(out), out.float())

    c = TSSLConstants()
    u_r, spikes = torch.zeros_like(x[0]), []
    for x_t in x:  # the LIF with reset to 0 under the trace, written out
        u = (1 - 1 / c.tau_m) * u_r + x_t
        spikes.append((u > c.v_threshold).double())
        u_r = u * (1 - spikes[-1])
    spikes = torch.stack(spikes)
    assert 0.1 < spikes.mean() < 0.9
    trace = TSSLNeuron(c)(x)
    assert (trace != 0).sum() > spikes.sum()  # the trace outlasts its spikes
    assert torch.equal(TSSLNeuron(c).spike_train(trace), spikes.float())


def test_hardware_spike_rate_of_an_if_layer_counts_spikes_not_their_amplitude():
    identity = torch.nn.Linear(3, 3, bias=False)
    torch.nn.init.eye_(identity.weight)
    neuron = IFNeuron((3,))
    neuron.threshold.fill_(2.0)
    net = torch.nn.Sequential(identity, neuron)
    # v += 1 + V_th / (2T) = 1.25 per step: 1.25, 2.5 -> spike (0.5), 1.75, 3.0 -> spike: 2 of 4
    with torch.no_grad():
        assert net(torch.ones(4, 2, 3)).sum() == 2 * 2 * 3 * 2.0  # spikes of amplitude V_th
    assert hardware_metrics(net, [torch.ones(4, 2, 3)], TABLE)["spike_rate"] == {"1": 0.5}


class _Tiny(L.LightningModule):
    def __init__(self, v_threshold: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = build_spiking_net(["FC16"], (4,), 3, partial(STBPLIF, v_threshold=v_threshold), 3)

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # the net stays as built


def _fit(tmp_path, v_threshold: float, patience: int = 3):
    torch.manual_seed(1)
    x = torch.rand(24, 4) * 2
    module = _Tiny(v_threshold)
    trainer = L.Trainer(max_epochs=1, logger=CSVLogger(tmp_path, name="", version=""),
                        callbacks=[FiringRateMonitor("pretrain", patience=patience)],
                        log_every_n_steps=2, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, accelerator="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, DataLoader(TensorDataset(x), batch_size=4))
    return module, x, caught


def test_monitor_logs_each_layers_rate_on_every_nth_batch(tmp_path):
    module, x, caught = _fit(tmp_path, v_threshold=0.1)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    with torch.no_grad():  # batches 0, 2 and 4 of 6 are measured (log_every_n_steps = 2)
        first = torch.nn.Sequential(*module.net.layers[:2])
        outs = [first(x[i:i + 4].unsqueeze(0).expand(3, 4, 4)) for i in (0, 8, 16)]
        full = [module.net(x[i:i + 4]) for i in (0, 8, 16)]
    hidden = sum(o.mean() for o in outs) / 3
    output = sum(o.mean() for o in full) / 3
    assert 0 < hidden < 1 and float(rows[-1]["rate/net.layers.1"]) == pytest.approx(float(hidden))
    assert float(rows[-1]["rate/net.layers.3"]) == pytest.approx(float(output))
    assert not [w for w in caught if "fired no spike" in str(w.message)]


def test_monitor_warns_once_naming_the_silent_layers(tmp_path):
    _, _, caught = _fit(tmp_path, v_threshold=1e9)
    messages = [str(w.message) for w in caught if "fired no spike" in str(w.message)]
    assert len(messages) == 1
    assert "pretrain stage: neuron layer(s) net.layers.1, net.layers.3" in messages[0]
    assert "first 3 measured training batches (one in every 2)" in messages[0]
