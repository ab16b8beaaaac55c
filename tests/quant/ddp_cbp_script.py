"""Run by tests/quant/test_ddp.py: a short CBP stage under Lightning's DDP (2 CPU processes,
gloo). Every rank saves its multipliers, schedule and baked weights to <out>/rank<r>.pt."""

import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cbpqsnn.quant.callback import CBPCallback


class MLP(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                                 nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def main(out: Path) -> None:
    torch.manual_seed(0)
    module = MLP()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 8, generator=g)
    data = TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long())
    cbp = CBPCallback(levels="ternary", p_max=2, lr_drop_at_g=3, multiplier_lr=0.01, bake_at_end=False)
    trainer = L.Trainer(max_epochs=5, accelerator="cpu", devices=2, strategy="ddp",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[cbp],
                        gradient_clip_val=1.0, gradient_clip_algorithm="value")
    trainer.fit(module, DataLoader(data, batch_size=8, shuffle=True))
    multipliers = {n: lam.detach().clone() for n, lam in cbp.multipliers.items()}
    cbp.bake()
    torch.save({"multipliers": multipliers, "schedule": cbp.schedule.state_dict(),
                "history": cbp.history, "weights": module.state_dict(),
                "lr": trainer.optimizers[0].param_groups[0]["lr"]},
               out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
