"""Class folders decoded once (uint8 cache, tensor augmentation): the same batches as decoding every
image at every read, a cache that is reused, keyed by the folder's files, and never trusted when
it does not match."""

import pytest
import torch

from cbpqsnn.data import decoded_images
from cbpqsnn.data.cifar import CIFARDataModule
from cbpqsnn.data.decoded_images import DecodedImageFolder
from cbpqsnn.data.files import CorruptSampleError
from tests.data.fabricate import CIFAR10_CLASSES, make_image_folders


@pytest.fixture
def folders(tmp_path):
    make_image_folders(tmp_path / "cifar10-jpeg", CIFAR10_CLASSES, {"train": 2, "test": 1})
    return tmp_path


def batches(dm, seed):
    torch.manual_seed(seed)
    return [x for x, _ in dm.train_dataloader()] + [x for x, _ in dm.test_dataloader()]


@pytest.mark.parametrize("augment", ["standard", "autoaugment_cutout", "none"])
def test_decoded_once_gives_the_batches_of_the_image_files(folders, augment):
    files = CIFARDataModule(root=folders, layout="folders", augment=augment, batch_size=7)
    decoded = CIFARDataModule(root=folders, layout="folders", augment=augment, batch_size=7,
                              decoded_cache=folders / "cache")
    files.setup()
    decoded.setup()
    assert isinstance(decoded.train_set, DecodedImageFolder)
    assert decoded.train_set.targets == files.train_set.targets
    assert decoded.train_set.classes == CIFAR10_CLASSES
    for a, b in zip(batches(files, 3), batches(decoded, 3), strict=True):
        assert torch.equal(a, b)


def test_the_cache_is_reused_and_rebuilt_when_the_folder_or_the_file_changes(folders, monkeypatch):
    cache = folders / "cache"
    first = CIFARDataModule(root=folders, layout="folders", decoded_cache=cache)
    first.setup()
    files = sorted(cache.glob("cifar10-train-*.pt"))
    assert len(files) == 1 and len(list(cache.glob("cifar10-test-*.pt"))) == 1
    decode = decoded_images._decode

    def refuse(*args):
        raise AssertionError("decoded again although the cache matches")

    monkeypatch.setattr(decoded_images, "_decode", refuse)
    again = CIFARDataModule(root=folders, layout="folders", decoded_cache=cache)
    again.setup()
    assert torch.equal(again.train_set.images, first.train_set.images)
    monkeypatch.setattr(decoded_images, "_decode", decode)
    # a grown folder: a new key, a new entry (the old one is not read)
    make_image_folders(folders / "cifar10-jpeg", CIFAR10_CLASSES, {"train": 3}, seed=1)
    grown = CIFARDataModule(root=folders, layout="folders", decoded_cache=cache)
    grown.setup()
    assert len(grown.train_set) == 30 and len(list(cache.glob("cifar10-train-*.pt"))) == 2
    # a damaged entry is decoded again, not trusted
    entry = sorted(cache.glob("cifar10-test-*.pt"))[0]
    entry.write_bytes(b"not a cache")
    damaged = CIFARDataModule(root=folders, layout="folders", decoded_cache=cache)
    damaged.setup()
    assert torch.equal(damaged.test_set.images, first.test_set.images)
    assert len(list(cache.glob("*.tmp"))) == 0


def test_a_corrupt_image_names_its_file_while_decoding(folders):
    path = folders / "cifar10-jpeg" / "test" / "bird" / "0000.jpg"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CorruptSampleError, match=str(path)):
        CIFARDataModule(root=folders, layout="folders", decoded_cache=folders / "cache").setup()
    assert not list((folders / "cache").glob("cifar10-test-*.pt"))  # nothing half-written
