from collections import Counter

import pytest

from cbpqsnn.data.cifar10dvs import CIFAR10DVSDataModule
from cbpqsnn.data.files import CorruptSampleError, MissingDataError
from tests.data.fabricate import CIFAR10_CLASSES, make_cifar10dvs

pytest.importorskip("faery", reason="faery (the AEDAT4 encoder the tests write files with) is not installed")
pytest.importorskip("aedat", reason="aedat (tonic's AEDAT4 decoder for CIFAR10-DVS) is not installed")

PER_CLASS = 12  # names _0.._11: natural and lexicographic orders differ


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10dvs")
    return root, make_cifar10dvs(root, PER_CLASS)


def _index(recording) -> int:
    return int(recording.path.stem.rsplit("_", 1)[1])


def _module(root, **kwargs) -> CIFAR10DVSDataModule:
    dm = CIFAR10DVSDataModule(root=root, test_per_class=2, **kwargs)
    dm.setup()
    return dm


def test_ordered_split_puts_the_last_recordings_of_each_class_in_test(fake):
    root, _ = fake
    dm = _module(root)  # default: SpikingJelly's lexicographic listing _0, _1, _10, _11, _2, ..., _9
    assert len(dm.train_set) == 100 and len(dm.test_set) == 20
    assert Counter(dm.test_set.labels) == {c: 2 for c in range(10)}
    assert {_index(r) for r in dm.test_set.recordings} == {8, 9}
    assert [_index(r) for r in dm.train_set.recordings[:10]] == [0, 1, 10, 11, 2, 3, 4, 5, 6, 7]
    for rec in dm.train_set.recordings:  # label = the class folder
        assert CIFAR10_CLASSES[rec.label] == rec.path.parent.name
    natural = _module(root, file_order="natural")  # _0, _1, ..., _9, _10, _11
    assert {_index(r) for r in natural.test_set.recordings} == {10, 11}
    assert {_index(r) for r in natural.train_set.recordings} == set(range(10))


def test_random_split_is_seeded_stratified_and_disjoint(fake):
    root, _ = fake
    a, b, c = (_module(root, split="random", split_seed=s) for s in (0, 0, 1))
    paths = [{r.path for r in dm.test_set.recordings} for dm in (a, b, c)]
    assert paths[0] == paths[1] and paths[0] != paths[2]
    assert not paths[0] & {r.path for r in a.train_set.recordings}
    assert Counter(a.test_set.labels) == {k: 2 for k in range(10)} and len(a.train_set) == 100


def test_aedat4_recordings_decode_into_frames_holding_every_event(fake):
    root, written = fake
    dm = _module(root, T=16, size=48)
    assert dm.in_shape == (2, 48, 48)
    for ds, i in ((dm.train_set, 0), (dm.train_set, 57), (dm.test_set, len(dm.test_set) - 1)):
        frames, label = ds[i]
        assert frames.shape == (16, 2, 48, 48)
        assert frames.sum().item() == written[ds.recordings[i].path]
        assert label == CIFAR10_CLASSES.index(ds.recordings[i].path.parent.name)


def test_missing_cifar10dvs_names_the_folder_the_files_and_the_download_option(tmp_path):
    with pytest.raises(MissingDataError) as err:
        _module(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "CIFAR10DVS" / "airplane") in message
    assert "*.aedat4" in message and "data.datamodule.download=true" in message


def test_a_truncated_aedat4_is_an_error_naming_the_file(tmp_path):
    make_cifar10dvs(tmp_path, 3)
    dm = CIFAR10DVSDataModule(root=tmp_path, test_per_class=1)
    dm.setup()
    path = dm.train_set.recordings[0].path
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CorruptSampleError, match=str(path)):
        dm.train_set[0]
