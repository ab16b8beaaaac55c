"""How far does one optimizer step move each layer of a row's network, at full width and narrowed?

    .venv/bin/python benchmarks/width_step.py [--rows tsslbp_cifar10,stbp_cifar10] [--widths 1,4,8]
                                              [--batch 8] [--lr-factor 1]

``row_smoke.py`` runs the STBP and TSSL-BP rows on networks with every width divided by N
(``@widthN``) because a full-width step costs seconds here. Under the standard parametrization a
narrower layer sums fewer inputs, so at the same LR its pre-activations move less per step; this
script measures by how much. Per row and width (``@widthN``, as ``row_smoke.py`` builds it: the
row's init, neuron, loss, optimizer, LR and clipping), from one init (seed 1): the row's loss on one
fixed batch of random CIFAR-shaped images (seed 0, ``--batch``, labels 0..9 in turn), one backward,
the row's gradient clipping, one step of the row's pretraining optimizer at its LR times
``--lr-factor``; then, for every conv / FC layer in order, ``|u_after - u_before| / |u_before|``
of its pre-activations on the same batch (eval mode: no dropout, so the same function before and
after). A layer whose input is silent moves only through its bias; ``inf``: a layer without a
bias whose input was silent before the step and fires after it.

Prints one line per row and width: the LR and the relative change of every layer.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra.utils import instantiate
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from row_smoke import head_classes, row_config  # noqa: E402

from cbpqsnn.builders import build_module  # noqa: E402


def layer_changes(row: str, width: int, batch: int, lr_factor: float) -> tuple[float, list[float]]:
    """The LR used and the relative change of every conv / FC layer's pre-activations after one
    step of ``row`` at width / ``width``."""
    cfg = row_config(row if width == 1 else f"{row}@width{width}", ROOT / "data")
    torch.manual_seed(1)
    module = build_module(cfg, SimpleNamespace(in_shape=(3, 32, 32), num_classes=head_classes(row)))
    module.eval()
    layers = [m for m in module.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    seen: dict[int, Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, k=k: seen.__setitem__(k, out.detach().clone()))
             for k, m in enumerate(layers)]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=generator)
    y = torch.arange(batch) % 10
    stage = cfg.method.pretrain
    lr = float(stage.optimizer.lr) * lr_factor
    optimizer = instantiate(stage.optimizer, lr=lr)(module.parameters())
    module.loss(module.net(module.time_first(x)), y).backward()
    before = dict(seen)
    if stage.get("gradient_clip_val") and stage.get("gradient_clip_algorithm", "norm") == "norm":
        nn.utils.clip_grad_norm_(module.parameters(), float(stage.gradient_clip_val))
    optimizer.step()
    with torch.no_grad():
        module.net(module.time_first(x))
    for hook in hooks:
        hook.remove()
    return lr, [relative_change(before[k], seen[k]) for k in range(len(layers))]


def relative_change(before: Tensor, after: Tensor) -> float:
    """``|after - before| / |before|``; ``inf`` where a layer fed by silent inputs (all-zero
    pre-activations without a bias) gets an input after the step."""
    change, size = float((after - before).norm()), float(before.norm())
    return change / size if size > 0 else (math.inf if change > 0 else 0.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="tsslbp_cifar10,stbp_cifar10")
    parser.add_argument("--widths", default="1,4,8", help="width divisors N (1: the row as published)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr-factor", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for row in args.rows.split(","):
        for width in [int(w) for w in args.widths.split(",")]:
            lr, changes = layer_changes(row, width, args.batch, args.lr_factor)
            print(f"{row} width/{width} lr {lr:g}: " + " ".join(f"{c:.2e}" for c in changes), flush=True)


if __name__ == "__main__":
    main()
