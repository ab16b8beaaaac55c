"""Loading a pretrained FP32 checkpoint into a freshly built backbone, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


def _describe(hparams: dict[str, Any]) -> str:
    keys = ("T", "in_shape", "num_classes", "model")
    return ", ".join(f"{k}={hparams[k]}" for k in keys if k in hparams)


def load_pretrained(module: nn.Module, path: str | Path) -> None:
    """Load the weights of ``path`` (a Lightning checkpoint or a plain ``state_dict``) strictly.

    Raises ``FileNotFoundError`` naming the path if it does not exist and ``ValueError`` listing
    the missing, unexpected and shape-mismatched tensors if it does not fit the built network.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained checkpoint not found: {path}. Pass pretrained=<path to an FP32 checkpoint>, "
            "e.g. logs/runs/<date>/<run>/checkpoints/fp32.ckpt, or drop the option to pretrain."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - report any unreadable file the same way
        raise ValueError(f"cannot read pretrained checkpoint {path}: {err}") from err
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a Lightning checkpoint or a state_dict of tensors")
    if any(".parametrizations." in k for k in state):
        raise ValueError(
            f"{path} is a CBP-stage checkpoint (latent weights + multipliers). Pass it as "
            "resume=<it> together with pretrained=<the FP32 checkpoint>, or load quantized.pt "
            "for evaluation."
        )
    own = module.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(own.keys() & state.keys()) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = [f"pretrained checkpoint {path} does not match the network this run builds:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                lines.append(f"  {title}: {', '.join(items[:8])}{more}")
        hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
        if hparams:
            lines.append(f"  the checkpoint was trained with {_describe(hparams)}")
        lines.append(f"  this run builds {_describe(dict(getattr(module, 'hparams', {})))}")
        lines.append("  choose the same method/model/data as the checkpoint, or pretrain anew.")
        raise ValueError("\n".join(lines))
    module.load_state_dict(state)


def check_stage_checkpoint(path: str | Path, stage: str) -> None:
    """Before ``resume=path`` continues ``stage``: a CBP-stage checkpoint (latent weights under a
    parametrization) cannot continue the FP32 stage; say what to write instead."""
    if stage != "pretrain":
        return
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", {}) if isinstance(checkpoint, dict) else {}
    if any(".parametrizations." in k for k in state):
        raise ValueError(
            f"resume={path} is a CBP-stage checkpoint (cbp.ckpt); to continue that stage give "
            "pretrained=<the FP32 checkpoint it started from> too. Without pretrained=, resume= "
            "continues an interrupted FP32 stage from its checkpoints/fp32.ckpt.")
