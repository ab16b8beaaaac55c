"""Run by tests/quant/test_ddp.py: a short CBP stage under Lightning's DDP (2 CPU processes,
gloo), or on one device (``--devices 1``) with the two ranks' batches taken together as one.
Every rank saves its multipliers, schedule, history and baked weights to <out>/rank<r>.pt
(one device: <out>/single.pt)."""

import argparse
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from cbpqsnn.quant.callback import CBPCallback

PER_DEVICE_BATCH = 8
RANKS = 2
# p_max 50 never fires in 6 epochs: every g update comes from a Lagrangian that did not fall,
# so the schedule depends on the all-reduced L_sum itself
CBP_OPTIONS = dict(levels="ternary", p_max=50, lr_drop_at_g=2, multiplier_lr=0.05, bake_at_end=False)


class MLP(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                                 nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.3, momentum=0.9)


def main(out: Path, devices: int) -> None:
    torch.manual_seed(0)
    module = MLP()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 8, generator=g)
    data = TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long())
    # under DDP Lightning gives the training loader a DistributedSampler(shuffle=True, seed=0):
    # per epoch one permutation, rank r taking its elements r, r + 2, ...; one device reading the
    # same permutation in batches of 16 takes, at step i, the 16 samples of the ranks' step i
    if devices == 1:
        loader = DataLoader(data, batch_size=PER_DEVICE_BATCH * RANKS,
                            sampler=DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0))
    else:
        loader = DataLoader(data, batch_size=PER_DEVICE_BATCH)
    cbp = CBPCallback(**CBP_OPTIONS)
    trainer = L.Trainer(max_epochs=6, accelerator="cpu", devices=devices,
                        strategy="ddp" if devices > 1 else "auto",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[cbp],
                        gradient_clip_val=1.0, gradient_clip_algorithm="value")
    trainer.fit(module, loader)
    multipliers = {n: lam.detach().clone() for n, lam in cbp.multipliers.items()}
    cbp.bake()
    name = f"rank{trainer.global_rank}.pt" if devices > 1 else "single.pt"
    torch.save({"multipliers": multipliers, "schedule": cbp.schedule.state_dict(),
                "history": cbp.history, "weights": module.state_dict(),
                "lr": trainer.optimizers[0].param_groups[0]["lr"]}, out / name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--devices", type=int, default=RANKS)
    args = parser.parse_args()
    main(args.out, args.devices)
