"""What every file-backed datamodule shares: batch sizes, the resumable training shuffle
(:class:`EpochShuffleSampler`), worker settings and the train/test dataloaders.

The test split doubles as the validation split (as in ``mnist5k``): the paper reports test
accuracy and no method here selects a model on validation data.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset

from cbpqsnn.data.files import MissingDataError
from cbpqsnn.data.sampling import EpochShuffleSampler


class ClassificationDataModule(L.LightningDataModule):
    """Base datamodule: a subclass defines ``name``, ``in_shape``, ``num_classes`` and
    :meth:`build_sets` (``-> (train_set, test_set)`` of ``(input, label)`` samples); downloads, if
    any, happen in :meth:`download_data`, called only when ``download`` is true."""

    name = "base"
    in_shape: tuple[int, ...] = ()
    num_classes = 0

    def __init__(self, root: str | Path = "data", download: bool = False, batch_size: int = 64,
                 eval_batch_size: int = 256, shuffle_seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        self.download = bool(download)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.shuffle_seed = shuffle_seed
        self.num_workers = num_workers
        self.train_set: Dataset | None = None
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

    def _loader_options(self) -> dict:
        workers = int(self.num_workers)
        return {"num_workers": workers, "persistent_workers": workers > 0}

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return DataLoader(self.train_set, batch_size=self.batch_size,
                          sampler=EpochShuffleSampler(self.train_set, self.shuffle_seed),
                          drop_last=False, **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def test_dataloader(self) -> DataLoader:
        assert self.test_set is not None, "call setup() first"
        return DataLoader(self.test_set, batch_size=self.eval_batch_size, shuffle=False,
                          **self._loader_options())
