"""``cifar10dvs``: CIFAR10-DVS (Li et al. 2017), 10,000 CIFAR-10 images recorded by a 128x128 DVS.

Layout (tonic's ``CIFAR10DVS``): ``<root>/CIFAR10DVS/<class>/*.aedat4``, 1,000 per class; label =
the folder. Decoded with tonic's ``read_aedat4`` (needs the ``aedat`` package).

There is no official split, and the choice moves accuracy by several points, so it is explicit:

- ``split: ordered`` (default): per class, the recordings in file order -- the first
  ``N - test_per_class`` (900) train, the last ``test_per_class`` (100) test. The default
  ``file_order: lexicographic`` sorts the names as strings (``..._10`` before ``..._2``), the order
  SpikingJelly's folder datasets (torchvision's ``DatasetFolder``: ``sorted(fnames)``) list them
  in. That is the published split: SEW-ResNet and CBP-QSNN both call
  ``split_to_train_test_set(0.9, origin_set, 10)`` with ``random_split=False`` (front 90 % of
  each class trains), fangwei123456/Spike-Element-Wise-ResNet cifar10dvs/train.py and yoees/CBP-QSNN
  CBP-QSNN-SEW-ResNet/CIFAR10DVS/main_quantize_cbp.py. ``file_order: natural`` compares the
  numbers as numbers (``..._2`` before ``..._10``): a different test set.
- ``split: random``: per class, ``test_per_class`` recordings drawn with ``split_seed`` go to test
  (SpikingJelly's ``split_to_train_test_set(random_split=True)`` idea; a different draw per seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tonic.datasets import CIFAR10DVS
from tonic.io import read_aedat4

from cbpqsnn.data.events import EventDataModule, Recording, make_events
from cbpqsnn.data.files import MissingDataError, missing_data_error, sorted_files
from cbpqsnn.data.sampling import stratified_split

SPLITS = ("ordered", "random")


def ordered_split(labels: np.ndarray, test_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: the last ``test_per_class`` samples of every class (in the given
    order) go to test, the rest to train."""
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= test_per_class:
            raise ValueError(f"class {c} has {len(idx)} samples, cannot hold out {test_per_class}")
        train.append(idx[:-test_per_class])
        test.append(idx[-test_per_class:])
    return np.concatenate(train), np.concatenate(test)


class CIFAR10DVSDataModule(EventDataModule):
    """CIFAR10-DVS recordings (128x128 sensor, 2 polarities, 10 classes), per-class split."""

    name = "cifar10dvs"
    folder_name = "CIFAR10DVS"
    sensor = (CIFAR10DVS.sensor_size[1], CIFAR10DVS.sensor_size[0])
    num_classes = len(CIFAR10DVS.classes)

    def __init__(self, *args, split: str = "ordered", test_per_class: int = 100, split_seed: int = 0,
                 file_order: str = "lexicographic", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if split not in SPLITS:
            raise ValueError(f"data.datamodule.split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.test_per_class = int(test_per_class)
        self.split_seed = int(split_seed)
        self.file_order = file_order

    def list_recordings(self) -> tuple[list[Recording], list[Recording]]:
        recordings = []
        for class_name, label in sorted(CIFAR10DVS.classes.items(), key=lambda item: item[1]):
            files = sorted_files(self.dataset_dir / class_name, "*.aedat4", self.file_order)
            if not files:
                raise self._missing(class_name)
            recordings += [Recording(path, label) for path in files]
        labels = np.array([r.label for r in recordings])
        if self.split == "ordered":
            train, test = ordered_split(labels, self.test_per_class)
        else:
            train, test = stratified_split(labels, self.test_per_class, self.split_seed)
        return [recordings[i] for i in train], [recordings[i] for i in test]

    def _missing(self, class_name: str) -> MissingDataError:
        return missing_data_error(
            "CIFAR10-DVS", self.dataset_dir / class_name,
            f"<recording>.aedat4 files (tonic's layout: {self.dataset_dir}/<class>/*.aedat4 for the classes "
            f"{', '.join(CIFAR10DVS.classes)}, extracted from CIFAR10DVS.zip)",
            "tonic.datasets.CIFAR10DVS")

    @staticmethod
    def read_events(path: Path) -> np.ndarray:
        try:
            import aedat  # noqa: F401 - tonic's read_aedat4 imports it
        except ImportError as err:
            raise ImportError("data=cifar10dvs reads .aedat4 files with the aedat decoder: "
                              "pip install 'aedat>=2.3'") from err
        events = read_aedat4(str(path))
        t, x, y, p = (events[name] for name in events.dtype.names)
        return make_events(x, y, p, t)

    def download_data(self) -> None:
        CIFAR10DVS(save_to=str(self.root))  # tonic downloads and extracts unless the files are there
