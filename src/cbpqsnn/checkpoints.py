"""Reading checkpoints safely and loading a pretrained FP32 checkpoint into a freshly built
backbone, with clear errors.

Every checkpoint is read with ``torch.load(weights_only=True)``: tensors, containers and plain
values only, so a file from someone else cannot run code when it is unpickled. The checkpoints
this project writes (Lightning's ``fp32.ckpt`` / ``cbp.ckpt``: plain hyper-parameters, optimizer,
scheduler and callback states) need no type allow-listed; Lightning's own resume
(``trainer.fit(ckpt_path=...)``) is called with ``weights_only=True`` too.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

WRITTEN_BY = "a file written by torch.save, e.g. checkpoints/fp32.ckpt of a run folder"


def not_a_checkpoint(path: str | Path) -> str | None:
    """Why ``path`` is not a checkpoint at a glance (no such file; not torch.save's zip archive),
    or None. Cheap: reads the archive's index only."""
    path = Path(path)
    if not path.is_file():
        return "no such file"
    if not zipfile.is_zipfile(path):
        return f"not a checkpoint ({WRITTEN_BY})"
    return None


def read_checkpoint(path: str | Path) -> Any:
    """The object saved in ``path``, read with ``weights_only=True`` onto the CPU. Raises
    ``ValueError`` saying plainly when the file is not a checkpoint, is damaged, or holds objects
    other than tensors and plain values (which are not unpickled: that could run code)."""
    path = Path(path)
    problem = not_a_checkpoint(path)
    if problem:
        raise ValueError(f"{path}: {problem}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise ValueError(
            f"{path} holds objects other than tensors and plain values{what}; it is not loaded, "
            "since unpickling them could run code. This project's checkpoints hold none: use one "
            "written by src/train.py, or a plain state_dict saved with torch.save") from None
    except Exception as err:  # noqa: BLE001 - a truncated or damaged archive fails in many ways
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err}); "
                         "truncated or damaged? copy it again") from err


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
    checkpoint = read_checkpoint(path)
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
    """Before ``resume=path`` continues ``stage``: it must be a Lightning checkpoint, and a
    CBP-stage checkpoint (latent weights under a parametrization) cannot continue the FP32 stage;
    say what to write instead."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or "loops" not in checkpoint:
        raise ValueError(f"resume={path} is not a Lightning checkpoint of a stage (checkpoints/"
                         "fp32.ckpt or checkpoints/cbp.ckpt of the run folder that was stopped)")
    state = checkpoint.get("state_dict", {})
    if stage == "pretrain" and any(".parametrizations." in k for k in state):
        raise ValueError(
            f"resume={path} is a CBP-stage checkpoint (cbp.ckpt); to continue that stage give "
            "pretrained=<the FP32 checkpoint it started from> too. Without pretrained=, resume= "
            "continues an interrupted FP32 stage from its checkpoints/fp32.ckpt.")
