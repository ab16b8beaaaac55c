"""Training / test transforms of the static-image datasets, chosen by ``data.augment``:

- ``standard``: random crop (pad ``crop_padding`` px) + horizontal flip + normalize (the usual
  CIFAR setting of the surrogate-gradient / STBP methods);
- ``autoaugment_cutout``: the same, plus AutoAugment (CIFAR-10 policy) before the tensor
  conversion and Cutout (one ``cutout_size`` px square) on the ``[0, 1]`` tensor *before*
  normalization, so a cut-out pixel becomes ``-mean / std`` (the calibration pipeline's order:
  RandomCrop, flip, CIFAR10Policy, ToTensor, Cutout, Normalize in ``build_data`` of yoees/CBP-QSNN
  CBP-QSNN-SNN-Calibration/main_train_ann.py);
- ``none``: normalize only.

Test images are only normalized. ``tensor_input=True``: the same pipelines for uint8 ``[C, H, W]``
tensors (decoded once: :mod:`cbpqsnn.data.decoded_images`): crop and flip run on the tensor and
``ConvertImageDtype`` replaces ``ToTensor`` (both divide by 255) -- the same random numbers, the
same pixels as on the PIL image; AutoAugment's tensor operations round differently from PIL's, so
``autoaugment_cutout`` turns the tensor into a PIL image first (no decoding) and runs the PIL
pipeline: every augment gives the batches of the image files exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision import transforms as T

AUGMENTS = ("standard", "autoaugment_cutout", "none")


class Cutout:
    """Cutout (DeVries & Taylor 2017): zero one ``size`` x ``size`` square of a ``[C, H, W]``
    tensor, centred on a uniformly random pixel and clipped at the border."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: Tensor) -> Tensor:
        h, w = image.shape[-2:]
        cy, cx = (int(torch.randint(n, (1,))) for n in (h, w))
        half = self.size // 2
        y0, y1 = max(cy - half, 0), min(cy + self.size - half, h)
        x0, x1 = max(cx - half, 0), min(cx + self.size - half, w)
        out = image.clone()
        out[..., y0:y1, x0:x1] = 0
        return out

    def __repr__(self) -> str:
        return f"Cutout(size={self.size})"


def image_transforms(augment: str, mean: Sequence[float], std: Sequence[float], image_size: int,
                     crop_padding: int, cutout_size: int, tensor_input: bool = False
                     ) -> tuple[Callable, Callable]:
    """``(train_transform, test_transform)`` for PIL images (or uint8 tensors) -> normalized tensors."""
    if augment not in AUGMENTS:
        raise ValueError(f"data.augment must be one of {AUGMENTS}, got {augment!r}")
    normalize = T.Normalize(tuple(map(float, mean)), tuple(map(float, std)))
    train: list[Callable] = []
    if augment != "none":
        train += [T.RandomCrop(image_size, padding=crop_padding), T.RandomHorizontalFlip()]
    if augment == "autoaugment_cutout":
        train.append(T.AutoAugment(T.AutoAugmentPolicy.CIFAR10))
    to_float = T.ConvertImageDtype(torch.float32) if tensor_input else T.ToTensor()
    if tensor_input and augment == "autoaugment_cutout":
        train.insert(0, T.ToPILImage())
        train.append(T.ToTensor())
    else:
        train.append(to_float)
    if augment == "autoaugment_cutout":
        train.append(Cutout(cutout_size))  # on [0, 1] pixels, before Normalize (reference order)
    train.append(normalize)
    return T.Compose(train), T.Compose([to_float, normalize])
