import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.datasets import CIFAR10, CIFAR100

from cbpqsnn.data.cifar import CIFARDataModule
from cbpqsnn.data.files import CorruptSampleError, MissingDataError
from cbpqsnn.data.image_transforms import Cutout, image_transforms
from cbpqsnn.data.sampling import EpochShuffleSampler
from tests.data.conftest import CIFAR_JPEG_TAR, needs
from tests.data.fabricate import (
    CIFAR10_CLASSES,
    make_cifar10_batches,
    make_cifar100_files,
    make_image_folders,
)

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def accept_fabricated_md5s(monkeypatch, cls, md5s: dict[str, str]) -> None:
    """For this test only: torchvision's md5 lists hold the fabricated files' checksums (the
    class attributes are restored afterwards, the check itself is untouched)."""
    monkeypatch.setattr(cls, "train_list", [[n, md5s[n]] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, md5s[n]] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5s[cls.meta["filename"]]})


@pytest.fixture
def cifar10_batches(tmp_path, monkeypatch):
    accept_fabricated_md5s(monkeypatch, CIFAR10, make_cifar10_batches(tmp_path, per_batch=4, test_size=6))
    return tmp_path


def test_cifar10_python_batches_give_the_official_split_labels_and_normalized_images(cifar10_batches):
    dm = CIFARDataModule(root=cifar10_batches, augment="none", batch_size=5)
    dm.setup()
    assert dm.resolved_layout() == "torchvision" and dm.in_shape == (3, 32, 32) and dm.num_classes == 10
    assert len(dm.train_set) == 20 and len(dm.test_set) == 6
    with open(cifar10_batches / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        batch = pickle.load(handle)
    image, label = dm.test_set[2]
    raw = torch.from_numpy(batch["data"][2].reshape(3, 32, 32).astype(np.float32) / 255)
    expected = (raw - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert label == batch["labels"][2] and torch.allclose(image, expected, atol=1e-6)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 3, 32, 32) and isinstance(dm.train_dataloader().sampler, EpochShuffleSampler)


@pytest.mark.parametrize("augment", ["standard", "autoaugment_cutout"])
def test_training_augmentations_keep_the_shape_and_leave_test_images_alone(cifar10_batches, augment):
    dm = CIFARDataModule(root=cifar10_batches, augment=augment)
    plain = CIFARDataModule(root=cifar10_batches, augment="none")
    dm.setup()
    plain.setup()
    assert dm.train_set[0][0].shape == (3, 32, 32)
    assert torch.equal(dm.test_set[1][0], plain.test_set[1][0])
    names = repr(dm.train_set.transform)
    assert "RandomCrop" in names and "RandomHorizontalFlip" in names
    assert ("AutoAugment" in names and "Cutout" in names) == (augment == "autoaugment_cutout")


def test_cutout_zeroes_one_square_clipped_at_the_border():
    torch.manual_seed(0)
    for _ in range(20):
        out = Cutout(16)(torch.ones(3, 32, 32))
        rows, cols = torch.nonzero(out[0] == 0, as_tuple=True)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert 8 <= height <= 16 and 8 <= width <= 16 and len(rows) == height * width
        assert torch.equal(out[0] == 0, out[2] == 0)


def test_cutout_zeroes_pixels_before_normalization_as_the_calibration_pipeline():
    train, _ = image_transforms("autoaugment_cutout", MEAN, STD, 32, 4, 16)
    kinds = [type(t).__name__ for t in train.transforms]
    assert kinds == ["RandomCrop", "RandomHorizontalFlip", "AutoAugment", "ToTensor", "Cutout",
                     "Normalize"]
    torch.manual_seed(0)
    tail = T.Compose(train.transforms[kinds.index("ToTensor"):])
    out = tail(Image.new("RGB", (32, 32), (255, 255, 255)))
    hole_value = (-torch.tensor(MEAN) / torch.tensor(STD)).view(3, 1, 1)  # (0 - mean) / std
    hole = torch.isclose(out, hole_value.expand_as(out), atol=1e-6).all(0)
    assert 64 <= int(hole.sum()) <= 256  # one 16 px square, clipped at the border
    assert torch.all(out[:, ~hole] > 0)  # white elsewhere


def test_cifar100_files_give_fine_labels(tmp_path, monkeypatch):
    accept_fabricated_md5s(monkeypatch, CIFAR100, make_cifar100_files(tmp_path, 12, 5))
    dm = CIFARDataModule(dataset="cifar100", root=tmp_path, mean=(0.5071, 0.4867, 0.4408),
                         std=(0.2675, 0.2565, 0.2761))
    dm.setup()
    assert dm.num_classes == 100 and len(dm.train_set) == 12 and len(dm.test_set) == 5
    with open(tmp_path / "cifar-100-python" / "test", "rb") as handle:
        assert [dm.test_set[i][1] for i in range(5)] == pickle.load(handle)["fine_labels"]


def test_the_md5_check_still_rejects_files_that_are_not_the_official_ones(tmp_path):
    make_cifar10_batches(tmp_path, per_batch=2, test_size=2)  # the real md5 lists, unpatched
    with pytest.raises(CorruptSampleError, match="data_batch_1") as err:
        CIFARDataModule(root=tmp_path).setup()
    assert "md5" in str(err.value) and "data.datamodule.download=true" in str(err.value)


def test_a_truncated_batch_file_is_an_error_naming_it(cifar10_batches):
    path = cifar10_batches / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptSampleError, match=str(path)):
        CIFARDataModule(root=cifar10_batches).setup()


def test_missing_cifar_names_both_layouts_and_the_download_option(tmp_path):
    with pytest.raises(MissingDataError) as err:
        CIFARDataModule(root=tmp_path).setup()
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "data_batch_1" in message
    assert str(tmp_path / "cifar10-jpeg") in message and "data.datamodule.download=true" in message
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    with pytest.raises(MissingDataError, match="missing: data_batch_2"):
        CIFARDataModule(root=tmp_path).setup()


def test_class_folders_of_jpegs_are_read_with_image_folder(tmp_path):
    make_image_folders(tmp_path / "cifar10-jpeg", CIFAR10_CLASSES, {"train": 2, "test": 1})
    dm = CIFARDataModule(root=tmp_path, augment="standard")
    dm.setup()
    assert dm.resolved_layout() == "folders"
    assert len(dm.train_set) == 20 and len(dm.test_set) == 10
    assert dm.train_set.classes == CIFAR10_CLASSES  # alphabetical = the official label order
    image, label = dm.test_set[4]
    assert image.shape == (3, 32, 32) and label == 4
    with pytest.raises(ValueError, match="class folders"):
        make_image_folders(tmp_path / "few", CIFAR10_CLASSES[:3], {"train": 1, "test": 1})
        CIFARDataModule(root=tmp_path, folders_subdir="few").setup()


@pytest.mark.parametrize("cache", [None, "cache"])
def test_the_validation_split_reads_training_images_without_augmentation(tmp_path, cache):
    make_image_folders(tmp_path / "cifar10-jpeg", CIFAR10_CLASSES, {"train": 3, "test": 1})
    dm = CIFARDataModule(root=tmp_path, augment="standard", val_per_class=1,
                         decoded_cache=tmp_path / cache if cache else None)
    plain = CIFARDataModule(root=tmp_path, augment="none", decoded_cache=None)
    dm.setup()
    plain.setup()
    assert len(dm.train_set) == 20 and len(dm.val_set) == 10 and len(dm.test_set) == 10
    for i, index in enumerate(dm.val_set.indices):  # the un-augmented image, every read
        image, label = dm.val_set[i]
        expected, expected_label = plain.train_set[index]
        assert label == expected_label and torch.allclose(image, expected, atol=1e-6)
    assert "RandomCrop" in repr(dm.train_set.dataset.transform)  # training still augments


def test_a_corrupt_jpeg_is_an_error_naming_the_file(tmp_path):
    make_image_folders(tmp_path / "cifar10-jpeg", CIFAR10_CLASSES, {"train": 1, "test": 1})
    dm = CIFARDataModule(root=tmp_path, layout="folders")
    dm.setup()
    path = tmp_path / "cifar10-jpeg" / "test" / "bird" / "0000.jpg"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CorruptSampleError, match=str(path)):
        dm.test_set[2]


@needs(CIFAR_JPEG_TAR)
def test_real_cifar10_jpegs_load_as_normalized_class_folder_images(real_cifar_jpeg_root):
    dm = CIFARDataModule(root=real_cifar_jpeg_root, augment="none")
    dm.setup()
    assert dm.resolved_layout() == "folders" and len(dm.train_set) == 30 and len(dm.test_set) == 30
    assert dm.train_set.classes == CIFAR10_CLASSES
    images = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])
    assert images.shape == (30, 3, 32, 32)
    assert abs(images.mean().item()) < 0.5 and 0.5 < images.std().item() < 1.5  # roughly standardized
    assert [dm.test_set[i][1] for i in range(0, 30, 3)] == list(range(10))
