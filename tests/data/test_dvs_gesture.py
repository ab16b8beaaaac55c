from collections import Counter

import numpy as np
import pytest
import torch

from cbpqsnn.data.dvs_gesture import DVSGestureDataModule
from cbpqsnn.data.files import CorruptSampleError, MissingDataError
from tests.data.fabricate import make_dvs_gesture

USERS = {"ibmGestureTrain": ["user01_fluorescent", "user02_led", "user23_natural"],
         "ibmGestureTest": ["user24_fluorescent", "user29_lab"]}


@pytest.fixture
def fake(tmp_path):
    return tmp_path / "data", make_dvs_gesture(tmp_path / "data", USERS)


def test_dvs_gesture_keeps_the_official_user_split_and_file_name_labels(fake):
    root, written = fake
    dm = DVSGestureDataModule(root=root, T=16)
    dm.setup()
    assert dm.num_classes == 11 and dm.in_shape == (2, 128, 128)
    assert len(dm.train_set) == 3 * 11 and len(dm.test_set) == 2 * 11
    assert Counter(dm.train_set.labels) == {c: 3 for c in range(11)}
    train_users = {r.path.parent.name for r in dm.train_set.recordings}
    test_users = {r.path.parent.name for r in dm.test_set.recordings}
    assert train_users == set(USERS["ibmGestureTrain"]) and test_users == set(USERS["ibmGestureTest"])
    for ds in (dm.train_set, dm.test_set):
        for i in (0, len(ds) - 1):
            frames, label = ds[i]
            path = ds.recordings[i].path
            assert label == int(path.stem) and frames.shape == (16, 2, 128, 128)
            assert frames.sum().item() == written[path]


def test_dvs_gesture_downsampling_conserves_events(fake):
    root, written = fake
    dm = DVSGestureDataModule(root=root, T=8, size=32)
    dm.setup()
    frames, _ = dm.test_set[3]
    assert dm.in_shape == (2, 32, 32) and frames.shape == (8, 2, 32, 32)
    assert frames.sum().item() == written[dm.test_set.recordings[3].path]
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape[1:] == (8, 2, 32, 32) and x.dtype == torch.float32


def test_missing_dvs_gesture_names_the_folder_the_files_and_the_download_option(tmp_path):
    dm = DVSGestureDataModule(root=tmp_path)
    with pytest.raises(MissingDataError) as err:
        dm.setup()
    message = str(err.value)
    assert str(tmp_path / "DVSGesture" / "ibmGestureTrain") in message
    assert "user<NN>_<lighting>/<label>.npy" in message and "data.datamodule.download=true" in message


def test_a_truncated_npy_is_an_error_naming_the_file(fake):
    root, _ = fake
    dm = DVSGestureDataModule(root=root)
    dm.setup()
    path = dm.train_set.recordings[0].path
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptSampleError, match=str(path)):
        dm.train_set[0]
    np.save(path, np.zeros((5, 3)))  # wrong columns
    with pytest.raises(CorruptSampleError, match="x, y, p, t"):
        dm.train_set[0]
