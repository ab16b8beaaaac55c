"""``dvs128_gesture``: IBM DVS128 Gesture (Amir et al. 2017), 11 hand and arm gestures, 128x128.

Layout (tonic's ``DVSGesture``, its pre-cut version with one gesture per file):
``<root>/DVSGesture/ibmGestureTrain/user<NN>_<lighting>/<label>.npy`` and ``ibmGestureTest/...``,
each an ``(N, 4)`` array of x, y, p, t (t in ms). The official split is the one the two folders
hold: users 1-23 train (1,176 samples), users 24-29 test (288). Label = the file name.
Frames ``[T, 2, 128, 128]`` (or ``size``) by equal event count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tonic.datasets import DVSGesture

from cbpqsnn.data.events import EventDataModule, Recording, make_events
from cbpqsnn.data.files import missing_data_error, sorted_files

SPLIT_FOLDERS = {"train": "ibmGestureTrain", "test": "ibmGestureTest"}


class DVSGestureDataModule(EventDataModule):
    """DVS128 Gesture recordings (128x128 sensor, 2 polarities, 11 classes), official split."""

    name = "dvs128_gesture"
    folder_name = "DVSGesture"
    sensor = (DVSGesture.sensor_size[1], DVSGesture.sensor_size[0])
    num_classes = len(DVSGesture.classes)

    def list_recordings(self) -> tuple[list[Recording], list[Recording]]:
        return self._list(SPLIT_FOLDERS["train"]), self._list(SPLIT_FOLDERS["test"])

    def _list(self, split_folder: str) -> list[Recording]:
        folder = self.dataset_dir / split_folder
        files = sorted_files(folder, "user*_*/*.npy")
        if not files:
            raise missing_data_error(
                "DVS128 Gesture", folder,
                f"user<NN>_<lighting>/<label>.npy files extracted from {split_folder}.tar.gz "
                f"(tonic's layout: {self.dataset_dir}/ibmGestureTrain/... and ibmGestureTest/...)",
                "tonic.datasets.DVSGesture")
        recordings = []
        for path in files:
            label = int(path.stem) if path.stem.isdigit() else -1
            if not 0 <= label < self.num_classes:
                raise ValueError(f"{path}: file name is not a class index 0..{self.num_classes - 1}")
            recordings.append(Recording(path, label))
        return recordings

    @staticmethod
    def read_events(path: Path) -> np.ndarray:
        array = np.load(path)
        if array.ndim != 2 or array.shape[1] != 4:
            raise ValueError(f"expected an (N, 4) array of x, y, p, t, got shape {array.shape}")
        x, y, p, t = array.T
        return make_events(x, y, p, t)

    def download_data(self) -> None:
        for train in (True, False):  # tonic downloads unless the archive and files are there
            DVSGesture(save_to=str(self.root), train=train)
