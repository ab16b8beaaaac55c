import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from tonic.datasets import NMNIST
from tonic.io import read_mnist_file

from cbpqsnn.data.files import CorruptSampleError, MissingDataError
from cbpqsnn.data.nmnist import NMNISTDataModule
from cbpqsnn.data.sampling import EpochShuffleSampler
from tests.data.conftest import NMNIST_TAR, needs
from tests.data.fabricate import make_nmnist, nmnist_bytes


@pytest.fixture
def fake(tmp_path):
    written = make_nmnist(tmp_path / "data", {"Train": 3, "Test": 1})
    return tmp_path / "data", written


def _module(root, cache_dir=None, **kwargs) -> NMNISTDataModule:
    dm = NMNISTDataModule(root=root, cache_dir=cache_dir, **kwargs)
    dm.setup()
    return dm


def test_nmnist_reads_the_official_split_with_labels_from_the_digit_folders(fake):
    root, written = fake
    dm = _module(root, T=8, batch_size=4)
    assert len(dm.train_set) == 30 and len(dm.test_set) == 10
    assert Counter(dm.train_set.labels) == {d: 3 for d in range(10)}
    assert all(r.path.parts[-3] == "Train" for r in dm.train_set.recordings)
    assert all(r.path.parts[-3] == "Test" for r in dm.test_set.recordings)
    for ds in (dm.train_set, dm.test_set):
        for i, rec in enumerate(ds.recordings):
            frames, label = ds[i]
            assert frames.shape == (8, 2, 34, 34) and frames.dtype == torch.float32
            assert label == int(rec.path.parent.name)
            assert frames.sum().item() == written[rec.path]  # every event in exactly one frame
    assert dm.in_shape == (2, 34, 34)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 8, 2, 34, 34) and y.shape == (4,)
    assert isinstance(dm.train_dataloader().sampler, EpochShuffleSampler)


def test_nmnist_downsampling_sets_the_input_shape(fake):
    root, written = fake
    dm = _module(root, T=4, size=17)
    assert dm.in_shape == (2, 17, 17)
    frames, _ = dm.test_set[0]
    assert frames.shape == (4, 2, 17, 17) and frames.sum().item() == written[dm.test_set.recordings[0].path]


def test_frame_cache_hits_on_a_second_load_and_misses_when_T_changes(fake, tmp_path):
    root, _ = fake
    cache_dir = tmp_path / "cache"
    first = _module(root, cache_dir, T=8)
    reference = [first.train_set[i][0] for i in range(len(first.train_set))]

    def must_not_read(path):
        raise AssertionError(f"cache miss: {path} was read again")

    again = _module(root, cache_dir, T=8)
    again.train_set.reader = must_not_read
    assert all(torch.equal(again.train_set[i][0], reference[i]) for i in range(len(reference)))

    reads = []
    other_T = _module(root, cache_dir, T=4)
    reader = other_T.train_set.reader
    other_T.train_set.reader = lambda path: reads.append(path) or reader(path)
    assert other_T.train_set[0][0].shape == (4, 2, 34, 34) and len(reads) == 1
    folders = sorted(p.name for p in cache_dir.iterdir())
    assert len(folders) == 2 and folders[0].startswith("nmnist-T4-") and folders[1].startswith("nmnist-T8-")
    assert not [p for p in cache_dir.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written


def test_workers_convert_in_parallel_and_fill_the_cache(fake, tmp_path):
    root, written = fake
    dm = _module(root, tmp_path / "cache", T=8, batch_size=8, num_workers=2)
    total = sum(x.sum().item() for x, _ in dm.train_dataloader())
    assert total == sum(n for p, n in written.items() if p.parts[-3] == "Train")
    entries = list(dm.cache.folder.glob("*.npz"))
    assert len(entries) == 30 and not list(dm.cache.folder.glob(".*.tmp"))


def test_missing_nmnist_names_the_folder_the_files_and_the_download_option(tmp_path):
    with pytest.raises(MissingDataError) as err:
        _module(tmp_path / "nowhere")
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "NMNIST" / "Train") in message
    assert "<digit>/<id>.bin" in message and "data.datamodule.download=true" in message


def test_a_truncated_recording_is_an_error_naming_the_file(fake):
    root, written = fake
    dm = _module(root)
    index = 5
    path = dm.train_set.recordings[index].path
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(CorruptSampleError, match=str(path)):
        dm.train_set[index]


def test_fabricated_files_are_in_the_real_binary_format(fake):
    root, written = fake
    path, n = next(iter(written.items()))
    events = read_mnist_file(str(path), dtype=NMNIST.dtype)
    assert len(events) == n and events["x"].max() < 34 and set(np.unique(events["p"])) <= {0, 1}


@needs(NMNIST_TAR)
def test_real_nmnist_partial_copy_reads_through_tonic_reader(real_nmnist_root, tmp_path):
    dm = _module(real_nmnist_root, tmp_path / "cache", T=16)
    assert len(dm.train_set) == 1000 and len(dm.test_set) == 100
    assert set(dm.train_set.labels) == set(range(10))
    rng = random.Random(0)
    for ds in (dm.train_set, dm.test_set):
        for i in rng.sample(range(len(ds)), 6):
            path = ds.recordings[i].path
            events = read_mnist_file(str(path), dtype=NMNIST.dtype)
            frames, label = ds[i]
            assert label == int(path.parent.name) and frames.shape == (16, 2, 34, 34)
            assert frames.sum().item() == len(events) and 1000 < len(events) < 8000
            # equal event count: 15 frames of N // 16 events, the last holds the rest
            per_frame = frames.sum(dim=(1, 2, 3))
            assert (per_frame[:-1] == len(events) // 16).all()
            # our fabricated format is byte-for-byte the real one
            fields = {k: events[k] for k in ("x", "y", "p", "t")}
            assert nmnist_bytes(fields) == path.read_bytes()
    assert os.path.isdir(dm.cache.folder)


def test_download_true_fetches_missing_data_through_tonic(tmp_path, monkeypatch):
    import cbpqsnn.data.nmnist as module

    calls = []

    class OfflineNMNIST(NMNIST):  # stands in for tonic's download: writes the files instead
        def __init__(self, save_to, train=True):
            calls.append(train)
            make_nmnist(Path(save_to), {"Train" if train else "Test": 1})

    monkeypatch.setattr(module, "NMNIST", OfflineNMNIST)
    dm = NMNISTDataModule(root=tmp_path, download=True)
    dm.prepare_data()
    dm.setup()
    assert calls == [True, False] and len(dm.train_set) == len(dm.test_set) == 10
