import inspect
from pathlib import Path

import pytest
from hydra.utils import instantiate

from cbpqsnn.builders import build_datamodule
from cbpqsnn.data.cifar import CIFARDataModule
from cbpqsnn.data.cifar10dvs import CIFAR10DVSDataModule
from cbpqsnn.data.dvs_gesture import DVSGestureDataModule
from cbpqsnn.data.nmnist import NMNISTDataModule
from tests.conftest import compose

EXPECTED = {
    "cifar10": (CIFARDataModule, (3, 32, 32), 10),
    "cifar100": (CIFARDataModule, (3, 32, 32), 100),
    "dvs128_gesture": (DVSGestureDataModule, (2, 128, 128), 11),
    "cifar10dvs": (CIFAR10DVSDataModule, (2, 128, 128), 10),
    "nmnist": (NMNISTDataModule, (2, 34, 34), 10),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_data_config_builds_its_datamodule_rooted_in_the_data_folder(name):
    cfg = compose([f"data={name}"])
    dm = build_datamodule(cfg)
    cls, in_shape, num_classes = EXPECTED[name]
    assert isinstance(dm, cls) and cfg.data.name == name
    assert tuple(dm.in_shape) == in_shape and dm.num_classes == num_classes
    assert dm.root == Path(cfg.paths.data_dir) and not dm.download
    dm.batch_size = 7  # the pipeline sets a stage's batch size this way
    assert dm.batch_size == 7


def test_event_frame_options_come_from_the_config():
    cfg = compose(["data=cifar10dvs", "data.datamodule.size=48", "data.datamodule.T=10",
                   "data.datamodule.split=random"])
    dm = instantiate(cfg.data.datamodule)
    assert dm.in_shape == (2, 48, 48) and dm.spec.T == 10 and dm.split == "random"
    assert dm.cache.folder.parent == Path(cfg.paths.data_dir) / "cache"
    cfg = compose(["data=cifar100", "data.datamodule.augment=autoaugment_cutout"])
    cifar = instantiate(cfg.data.datamodule)
    assert "Cutout" in repr(cifar.transforms[0])


def test_cifar10dvs_default_split_is_spikingjelly_s_in_the_config_and_the_datamodule():
    """SEW-ResNet and CBP-QSNN: per class the first 900 recordings of SpikingJelly's
    (lexicographic) listing train, the last 100 test."""
    data = compose(["data=cifar10dvs"]).data.datamodule
    published = {"split": "ordered", "file_order": "lexicographic", "test_per_class": 100}
    assert {key: data[key] for key in published} == published
    defaults = inspect.signature(CIFAR10DVSDataModule.__init__).parameters
    assert {key: defaults[key].default for key in published} == published
