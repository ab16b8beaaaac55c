"""Samplers and splits shared by the datamodules."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sized

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, TensorDataset


def stratified_split(labels: np.ndarray, test_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(kept, held_out)``: ``test_per_class`` random samples of every class are held out."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) <= test_per_class:
            raise ValueError(f"class {c} has {len(idx)} samples, cannot hold out {test_per_class}")
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def sample_labels(dataset: Dataset) -> np.ndarray:
    """The class label of every sample, without reading the samples: ``targets`` (torchvision,
    decoded image folders), ``labels`` (event recordings) or a :class:`TensorDataset`'s second
    tensor."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].numpy()
    for name in ("targets", "labels"):
        if hasattr(dataset, name):
            return np.asarray(getattr(dataset, name))
    raise TypeError(f"cannot hold a validation split out of a {type(dataset).__name__}: it has no "
                    "targets / labels; set data.datamodule.val_per_class=0")


def eval_view(train_set: Dataset, test_set: Dataset) -> Dataset:
    """``train_set``'s samples read as ``test_set`` reads its own: a shallow copy with the test
    transform where the dataset has one (augmentation off); datasets with no transform (tensors,
    event frames) are returned as they are."""
    if not hasattr(train_set, "transform"):
        return train_set
    view = copy.copy(train_set)
    view.transform = test_set.transform
    return view


class EpochShuffleSampler(Sampler[int]):
    """Random permutation that depends only on ``(seed, epoch)``.

    Lightning calls ``set_epoch`` at the start of every epoch, so a run resumed from a checkpoint
    sees exactly the batches an uninterrupted run would have seen (a plain ``shuffle=True``
    draws from the global RNG, which a checkpoint does not restore).
    """

    def __init__(self, data: Sized, seed: int = 0) -> None:
        self.num_samples = len(data)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples
