"""Class folders of image files decoded once: a uint8 tensor ``[N, C, H, W]`` in memory, kept in a
cache file, augmented as tensors.

Decoding a JPEG costs more than the augmentation and, for a small SNN, about as much as the
training step itself; an image folder is therefore decoded once, on first use, and stored as
``<cache_dir>/<name>-<hash>.pt`` (``images`` uint8, ``targets``, ``classes``), where ``<hash>`` is a
digest of every file's relative path and size and of the image size: a changed, grown or
shrunk folder never reads a stale entry. The file is written to a temporary name and renamed (an
interrupted run leaves no half-written cache); an unreadable or inconsistent cache is decoded again.

Samples are ``(transform(uint8 [C, H, W] tensor), label)``: the transforms of
:func:`cbpqsnn.data.image_transforms.image_transforms` with ``tensor_input=True`` (crop, flip,
AutoAugment and Cutout on tensors, ``ConvertImageDtype`` in place of ``ToTensor``) draw the same
random numbers and compute the same pixels as the PIL pipeline on the decoded image, so the
batches are those of the image-file path (tests check it).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from cbpqsnn.data.files import atomic_write

log = logging.getLogger(__name__)


def _key(folder: ImageFolder, image_size: int) -> str:
    root = Path(folder.root)
    listing = [(str(Path(path).relative_to(root)), Path(path).stat().st_size, label)
               for path, label in folder.samples]
    text = json.dumps({"files": listing, "classes": folder.classes, "size": image_size})
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _decode(folder: ImageFolder, image_size: int) -> Tensor:
    images = torch.empty(len(folder), 3, image_size, image_size, dtype=torch.uint8)
    for i, (path, _) in enumerate(folder.samples):
        array = np.array(folder.loader(path), dtype=np.uint8)  # a writable copy
        if array.shape != (image_size, image_size, 3):
            raise ValueError(f"{path}: a {array.shape[1]}x{array.shape[0]} image, expected "
                             f"{image_size}x{image_size} RGB")
        images[i] = torch.from_numpy(array).permute(2, 0, 1)
    return images


class DecodedImageFolder(Dataset):
    """An :class:`ImageFolder` of ``image_size`` square RGB images, decoded once (module docstring)."""

    def __init__(self, folder: ImageFolder, cache_dir: str | Path | None, name: str, image_size: int,
                 transform: Callable[[Tensor], Any]) -> None:
        self.classes = folder.classes
        self.targets = list(folder.targets)
        self.transform = transform
        key = _key(folder, image_size)
        path = Path(cache_dir) / f"{name}-{key}.pt" if cache_dir else None
        images = self._load(path, key) if path is not None else None
        if images is None:
            log.info("decoding %d images of %s once%s", len(folder), folder.root,
                     f" into {path}" if path else "")
            images = _decode(folder, image_size)
            if path is not None:
                with atomic_write(path) as handle:
                    torch.save({"key": key, "images": images, "targets": self.targets,
                                "classes": self.classes}, handle)
        self.images = images

    def _load(self, path: Path, key: str) -> Tensor | None:
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, weights_only=True)
            ok = (stored["key"] == key and stored["targets"] == self.targets
                  and stored["images"].dtype == torch.uint8 and len(stored["images"]) == len(self.targets))
        except Exception as err:  # an unreadable cache is decoded again
            log.warning("unreadable decoded-image cache %s (%s): decoding again", path, err)
            return None
        if not ok:
            log.warning("decoded-image cache %s does not match its folder: decoding again", path)
            return None
        return stored["images"]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(self.images[index]), self.targets[index]
