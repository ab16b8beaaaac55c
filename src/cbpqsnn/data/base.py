"""What every file-backed datamodule shares: batch sizes, the resumable training shuffle
(:class:`EpochShuffleSampler`), worker settings, the validation split and the dataloaders.

Validation (``val_per_class``): ``0`` (default) validates on the test split, as the paper's code
does (no method here selects a model on validation data). ``N > 0`` holds out ``N`` training
samples of every class (stratified, fixed by ``val_split_seed``, the same for every run seed) as
the validation split: they are no longer trained on, they are read with the test split's
transform (no augmentation), and the test split is read only by the final evaluations. Settings
are tuned on it (``src/compare.py --tune``).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset, Subset

from cbpqsnn.data.files import MissingDataError
from cbpqsnn.data.sampling import EpochShuffleSampler, eval_view, sample_labels, stratified_split


class ClassificationDataModule(L.LightningDataModule):
    """Base datamodule: a subclass defines ``name``, ``in_shape``, ``num_classes`` and
    :meth:`build_sets` (``-> (train_set, test_set)`` of ``(input, label)`` samples); downloads, if
    any, happen in :meth:`download_data`, called only when ``download`` is true."""

    name = "base"
    in_shape: tuple[int, ...] = ()
    num_classes = 0

    def __init__(self, root: str | Path = "data", download: bool = False, batch_size: int = 64,
                 eval_batch_size: int = 256, shuffle_seed: int = 0, num_workers: int = 0,
                 val_per_class: int = 0, val_split_seed: int = 0) -> None:
        super().__init__()
        if int(val_per_class) < 0:
            raise ValueError(f"val_per_class must be 0 (validate on the test split) or the number of "
                             f"training samples per class to hold out, got {val_per_class}")
        self.root = Path(root).expanduser()
        self.download = bool(download)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.shuffle_seed = shuffle_seed
        self.num_workers = num_workers
        self.val_per_class = int(val_per_class)
        self.val_split_seed = int(val_split_seed)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None  # None: validation reads the test split
        self.test_set: Dataset | None = None

    # -- what a dataset defines --------------------------------------------------------------
    def build_sets(self) -> tuple[Dataset, Dataset]:
        raise NotImplementedError

    def download_data(self) -> None:
        """Fetch the dataset into ``root`` through its library (only called with ``download=true``)."""
        raise NotImplementedError

    # -- shared logic --------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.download:
            self.download_data()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        try:
            self.train_set, self.test_set = self.build_sets()
        except MissingDataError:
            if not self.download:
                raise
            self.download_data()  # setup() called without prepare_data() (outside a Trainer)
            self.train_set, self.test_set = self.build_sets()
        if self.val_per_class:
            self.train_set, self.val_set = self.hold_out(self.train_set, self.test_set)

    def hold_out(self, train_set: Dataset, test_set: Dataset) -> tuple[Subset, Subset]:
        """``(train, val)``: ``val_per_class`` samples of every class of ``train_set`` moved to the
        validation split, which reads them with ``test_set``'s transform."""
        labels = sample_labels(train_set)
        train_idx, val_idx = stratified_split(labels, self.val_per_class, self.val_split_seed)
        return (Subset(train_set, train_idx.tolist()),
                Subset(eval_view(train_set, test_set), val_idx.tolist()))

    def _loader_options(self) -> dict:
        workers = int(self.num_workers)
        return {"num_workers": workers, "persistent_workers": workers > 0}

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return DataLoader(self.train_set, batch_size=self.batch_size,
                          sampler=EpochShuffleSampler(self.train_set, self.shuffle_seed),
                          drop_last=False, **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            return self.test_dataloader()
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        assert self.test_set is not None, "call setup() first"
        return self._eval_loader(self.test_set)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False,
                          **self._loader_options())
