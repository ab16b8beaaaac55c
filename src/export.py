"""Deployment files of a finished run, and a check that they compute what the run computed:

    python src/export.py <run folder> [--weights quantized|fp32] [--check N]

Writes ``model.nir`` (NIR graph: ``cbpqsnn/deploy/nir_export.py``) and, for binary / ternary
weights, ``model_int.npz`` (integer codes with the scales folded into the neurons, run by the
pure-NumPy ``cbpqsnn/deploy/numpy_reference.py``) into the run folder -- every run writes them too.
``--check N`` (0: the whole test set) compares, on N test samples, the output spike counts of the
project's network with snnTorch, Sinabs and Norse reading ``model.nir`` (``pip install -e .[deploy]``
and Sinabs with ``--no-deps``: docs/deploying.md) and with the NumPy integer reference, and asks
Speck's toolchain (``sinabs.backend.dynapcnn``) whether it takes the network; ``deploy_check.json``
records the agreement, what a simulator cannot express, and the verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CBPQSNN_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--weights", default="quantized", choices=["quantized", "fp32"])
    parser.add_argument("--check", type=int, default=None, metavar="N",
                        help="compare predictions on N test samples (0: all)")
    args = parser.parse_args(argv)
    import torch

    from cbpqsnn.deploy.artifacts import network_levels, write_deployment
    from cbpqsnn.run_folder import load_run_module

    try:
        cfg, datamodule, module = load_run_module(args.run_dir, args.weights)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    levels = None
    packed = args.run_dir / "quantized_packed.pt"
    if args.weights == "quantized" and packed.is_file():
        entries = torch.load(packed, weights_only=True)["quantized"]
        levels = network_levels({k.removesuffix(".weight"): v["levels"] for k, v in entries.items()})
    T = int(getattr(module.net, "T", cfg.T))
    info = write_deployment(module.net, levels, T, args.run_dir)
    print(json.dumps(info, indent=2))
    if args.check is not None:
        result = check(args.run_dir, module.net, datamodule, T, info, args.check)
        (args.run_dir / "deploy_check.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
    return 0


def check(run_dir: Path, net, datamodule, T: int, info: dict, limit: int) -> dict:
    import torch

    from cbpqsnn.deploy.check import check_run

    datamodule.setup("test")
    batches = list(datamodule.test_dataloader())
    inputs, labels = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    if limit:
        inputs, labels = inputs[:limit], labels[:limit]
    return check_run(run_dir, net, inputs, labels, T, info)


if __name__ == "__main__":
    sys.exit(main())
