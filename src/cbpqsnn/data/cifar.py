"""``cifar10`` / ``cifar100``: static 32x32 RGB images ``[3, 32, 32]``, official train / test split.

Two on-disk layouts (``data.layout``):

- ``torchvision``: the official python batches as ``torchvision.datasets.CIFAR10`` / ``CIFAR100``
  keep them (``<root>/cifar-10-batches-py/`` or ``<root>/cifar-100-python/``), md5-checked by
  torchvision; ``data.download=true`` fetches them through torchvision.
- ``folders``: class folders of image files, ``<root>/<folders_subdir>/train/<class>/*.jpg`` and
  ``.../test/<class>/*.jpg``, read with ``torchvision.datasets.ImageFolder`` (classes sorted by
  name, which is the official label order for both CIFAR-10 and CIFAR-100).
- ``auto`` (default): ``torchvision`` if its folder exists, else ``folders``.

Augmentation (``data.augment``) and normalization constants come from the config
(:mod:`cbpqsnn.data.image_transforms`). Class folders are decoded once into a uint8 tensor cache
(``decoded_cache``, :mod:`cbpqsnn.data.decoded_images`) and augmented as tensors, the same batches
as decoding every image at every read (``decoded_cache: null`` reads the files each time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100, ImageFolder
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from cbpqsnn.data.base import ClassificationDataModule
from cbpqsnn.data.decoded_images import DecodedImageFolder
from cbpqsnn.data.files import CorruptSampleError, missing_data_error, read_or_raise
from cbpqsnn.data.image_transforms import image_transforms

DATASETS: dict[str, tuple[type[CIFAR10], int]] = {"cifar10": (CIFAR10, 10), "cifar100": (CIFAR100, 100)}
LAYOUTS = ("auto", "torchvision", "folders")


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def load_rgb(path: str) -> Image.Image:
    """ImageFolder loader: an RGB image, or :class:`CorruptSampleError` naming the file."""
    return read_or_raise(Path(path), _open_rgb)


class CIFARDataModule(ClassificationDataModule):
    """CIFAR-10 or CIFAR-100 (``dataset``) from torchvision's files or class folders of images."""

    image_size = 32

    def __init__(self, dataset: str = "cifar10", root: str | Path = "data", download: bool = False,
                 layout: str = "auto", folders_subdir: str = "cifar10-jpeg", augment: str = "standard",
                 mean: Sequence[float] = (0.4914, 0.4822, 0.4465),
                 std: Sequence[float] = (0.2023, 0.1994, 0.2010), crop_padding: int = 4,
                 cutout_size: int = 16, batch_size: int = 128, eval_batch_size: int = 500,
                 shuffle_seed: int = 0, num_workers: int = 0,
                 decoded_cache: str | Path | None = None, val_per_class: int = 0,
                 val_split_seed: int = 0) -> None:
        super().__init__(root, download, batch_size, eval_batch_size, shuffle_seed, num_workers,
                         val_per_class, val_split_seed)
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"data.datamodule.layout must be one of {LAYOUTS}, got {layout!r}")
        self.name = dataset
        self.torchvision_class, self.num_classes = DATASETS[dataset]
        self.in_shape = (3, self.image_size, self.image_size)
        self.layout = layout
        self.folders_dir = self.root / folders_subdir
        options = (augment, mean, std, self.image_size, crop_padding, cutout_size)
        self.transforms = image_transforms(*options)
        self.decoded_cache = decoded_cache
        self.tensor_transforms = image_transforms(*options, tensor_input=True)

    @property
    def torchvision_dir(self) -> Path:
        return self.root / self.torchvision_class.base_folder

    def _file_names(self) -> list[str]:
        cls = self.torchvision_class
        return [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]

    def resolved_layout(self) -> str:
        if self.layout != "auto":
            return self.layout
        if self.torchvision_dir.is_dir():
            return "torchvision"
        if self.folders_dir.is_dir():
            return "folders"
        raise missing_data_error(
            self.name, self.root,
            f"torchvision's files {self.torchvision_dir}/{{{','.join(self._file_names())}}} "
            f"(data.datamodule.layout=torchvision) or class folders "
            f"{self.folders_dir}/{{train,test}}/<class>/*.jpg "
            "(data.datamodule.layout=folders)", "torchvision")

    def build_sets(self) -> tuple[CIFAR10 | ImageFolder, CIFAR10 | ImageFolder]:
        train_tf, test_tf = self.transforms
        if self.resolved_layout() == "folders":
            return self._folder_set("train", 0), self._folder_set("test", 1)
        return self._torchvision_set(True, train_tf), self._torchvision_set(False, test_tf)

    def _torchvision_set(self, train: bool, transform: Callable) -> CIFAR10:
        missing = [n for n in self._file_names() if not (self.torchvision_dir / n).is_file()]
        if missing:
            raise missing_data_error(self.name, self.torchvision_dir,
                                     f"torchvision's files {', '.join(self._file_names())} "
                                     f"(missing: {', '.join(missing)})", "torchvision")
        try:
            return self.torchvision_class(str(self.root), train=train, transform=transform)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            raise self._corrupt_file_error() from err

    def _corrupt_file_error(self) -> CorruptSampleError:
        cls = self.torchvision_class
        checks = cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]
        bad = [name for name, md5 in checks if not check_integrity(str(self.torchvision_dir / name), md5)]
        return CorruptSampleError(
            f"{self.name}: {', '.join(str(self.torchvision_dir / n) for n in bad) or 'a file'} in "
            f"{self.torchvision_dir} fails torchvision's md5 check (truncated or corrupt): delete it "
            "and download again (data.datamodule.download=true)")

    def _folder_set(self, split: str, which: int) -> ImageFolder | DecodedImageFolder:
        """The split's class folders (``which``: 0 train, 1 test transform), decoded once unless
        ``decoded_cache`` is null."""
        folder = self.folders_dir / split
        if not folder.is_dir():
            raise missing_data_error(self.name, folder, f"class folders <class>/*.jpg ({split} split of "
                                     f"{self.folders_dir}/{{train,test}}/<class>/*.jpg)", "torchvision "
                                     "(into torchvision's layout, data.datamodule.layout=auto)")
        dataset = ImageFolder(str(folder), transform=self.transforms[which], loader=load_rgb)
        if len(dataset.classes) != self.num_classes:
            raise ValueError(f"{folder} holds {len(dataset.classes)} class folders, {self.name} has "
                             f"{self.num_classes}")
        if self.decoded_cache is None:
            return dataset
        return DecodedImageFolder(dataset, self.decoded_cache, f"{self.name}-{split}", self.image_size,
                                  self.tensor_transforms[which])

    def download_data(self) -> None:
        if self._present_layout() == "folders":
            return  # class folders are read as they are; torchvision downloads its own format only
        if all((self.torchvision_dir / n).is_file() for n in self._file_names()):
            return
        cls = self.torchvision_class
        download_and_extract_archive(cls.url, str(self.root), filename=cls.filename, md5=cls.tgz_md5)

    def _present_layout(self) -> str | None:
        try:
            return self.resolved_layout()
        except FileNotFoundError:
            return None
