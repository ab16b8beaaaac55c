"""``nmnist``: N-MNIST (Orchard et al. 2015), MNIST digits recorded by a moving 34x34 event camera.

Layout (tonic's ``NMNIST``): ``<root>/NMNIST/Train/<digit>/<id>.bin`` and ``<root>/NMNIST/Test/...``,
official train / test split, label = the digit folder. Files are read with tonic's own reader
(``tonic.io.read_mnist_file``) over that layout, so a partial copy (fewer recordings than the full
60,000 / 10,000, which ``tonic.datasets.NMNIST`` refuses and tries to download) works as it is.
Frames ``[T, 2, 34, 34]`` (or ``size``) by equal event count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tonic.datasets import NMNIST
from tonic.io import read_mnist_file

from cbpqsnn.data.events import EventDataModule, Recording, make_events
from cbpqsnn.data.files import missing_data_error, sorted_files

BYTES_PER_EVENT = 5  # N-MNIST binary format: x, y, polarity bit + 23-bit timestamp


class NMNISTDataModule(EventDataModule):
    """N-MNIST event recordings (34x34 sensor, 2 polarities), official Train / Test folders."""

    name = "nmnist"
    folder_name = "NMNIST"
    sensor = (NMNIST.sensor_size[1], NMNIST.sensor_size[0])
    num_classes = 10

    def list_recordings(self) -> tuple[list[Recording], list[Recording]]:
        return self._list(NMNIST.train_folder), self._list(NMNIST.test_folder)

    def _list(self, split: str) -> list[Recording]:
        folder = self.dataset_dir / split
        recordings = [Recording(p, int(p.parent.name)) for p in sorted_files(folder, "[0-9]/*.bin")]
        if not recordings:
            raise missing_data_error(
                "N-MNIST", folder,
                f"recordings <digit>/<id>.bin (tonic's layout: {self.dataset_dir}/"
                f"{NMNIST.train_folder}/0..9/*.bin and {NMNIST.test_folder}/0..9/*.bin)",
                "tonic.datasets.NMNIST")
        return recordings

    @staticmethod
    def read_events(path: Path) -> np.ndarray:
        size = path.stat().st_size
        if size == 0 or size % BYTES_PER_EVENT:
            raise ValueError(f"{size} bytes is not a whole number of {BYTES_PER_EVENT}-byte events")
        ev = read_mnist_file(str(path), dtype=NMNIST.dtype)
        return make_events(ev["x"], ev["y"], ev["p"], ev["t"])

    def download_data(self) -> None:
        for train in (True, False):  # tonic downloads unless its full set is already there
            NMNIST(save_to=str(self.root), train=train)
