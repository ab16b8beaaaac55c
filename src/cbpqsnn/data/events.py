"""Shared machinery of the event-camera datamodules (``nmnist``, ``dvs128_gesture``, ``cifar10dvs``).

A dataset module lists its recordings (path + label) and reads one file into events with fields
``x, y, p, t``; everything else lives here: frames ``[T, 2, h, w]`` by equal event count
(:mod:`cbpqsnn.data.frames`), the disk cache (:mod:`cbpqsnn.data.frame_cache`), and conversion
in the DataLoader's worker processes (``data.num_workers``), so the first epoch converts samples
in parallel and later epochs read the cache. Batches are batch-first ``[B, T, 2, h, w]``; the
methods transpose them to time-first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cbpqsnn.data.base import ClassificationDataModule
from cbpqsnn.data.files import read_or_raise
from cbpqsnn.data.frame_cache import FrameCache
from cbpqsnn.data.frames import FrameSpec, events_to_frames

EventReader = Callable[[Path], np.ndarray]


@dataclass(frozen=True)
class Recording:
    """One sample file and its class index."""

    path: Path
    label: int


def make_events(x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Structured event array with fields ``x, y, p, t`` (all int64; p in {0, 1})."""
    return np.rec.fromarrays([np.asarray(a, dtype=np.int64) for a in (x, y, p, t)], names="x,y,p,t")


class EventFrameDataset(Dataset):
    """``(frames, label)`` per recording: frames ``float32 [T, 2, h, w]`` of event counts, read
    from the cache or converted (and cached) on first use. A file that cannot be decoded raises
    :class:`CorruptSampleError` naming it."""

    def __init__(self, recordings: Sequence[Recording], folder: Path, reader: EventReader,
                 spec: FrameSpec, cache: FrameCache | None) -> None:
        self.recordings = list(recordings)
        self.folder = folder
        self.reader = reader
        self.spec = spec
        self.cache = cache

    def __len__(self) -> int:
        return len(self.recordings)

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.recordings]

    def convert(self, path: Path) -> np.ndarray:
        """Frames of one recording file, without the cache."""
        return read_or_raise(path, lambda p: events_to_frames(self.reader(p), self.spec))

    def frames(self, index: int) -> np.ndarray:
        path = self.recordings[index].path
        if self.cache is None:
            return self.convert(path)
        entry = self.cache.entry(path.relative_to(self.folder).as_posix(), path.stat().st_size)
        frames = self.cache.load(entry)
        if frames is None:
            frames = self.convert(path)
            self.cache.save(entry, frames)
        return frames

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return torch.from_numpy(self.frames(index).astype(np.float32)), self.recordings[index].label


class EventDataModule(ClassificationDataModule):
    """Base of the event datamodules. A subclass sets ``folder_name`` (its folder under ``root``,
    tonic's name), ``sensor`` ``(H, W)`` and ``num_classes`` and defines :meth:`list_recordings`,
    :meth:`read_events` and :meth:`download_data`.

    ``T`` frames by equal event count; ``size`` the output side in pixels (``None``: the sensor's);
    ``cache_dir`` the frame cache root (``None``: convert on every read)."""

    folder_name = ""
    sensor: tuple[int, int] = (0, 0)

    def __init__(self, root: str | Path = "data", download: bool = False, T: int = 16,
                 size: int | None = None, cache_dir: str | Path | None = None, batch_size: int = 16,
                 eval_batch_size: int = 64, shuffle_seed: int = 0, num_workers: int = 0,
                 val_per_class: int = 0, val_split_seed: int = 0) -> None:
        super().__init__(root, download, batch_size, eval_batch_size, shuffle_seed, num_workers,
                         val_per_class, val_split_seed)
        self.spec = FrameSpec.make(T, self.sensor, size)
        self.in_shape = (2, *self.spec.size)
        self.cache = FrameCache(cache_dir, self.name, self.spec) if cache_dir else None

    @property
    def dataset_dir(self) -> Path:
        return self.root / self.folder_name

    # -- what a dataset defines --------------------------------------------------------------
    def list_recordings(self) -> tuple[list[Recording], list[Recording]]:
        """``(train, test)`` recordings; raises :class:`MissingDataError` when absent."""
        raise NotImplementedError

    @staticmethod
    def read_events(path: Path) -> np.ndarray:
        """Events of one file as a structured array with fields ``x, y, p, t``."""
        raise NotImplementedError

    # -- shared logic --------------------------------------------------------------------------
    def build_sets(self) -> tuple[EventFrameDataset, EventFrameDataset]:
        train, test = self.list_recordings()
        return tuple(EventFrameDataset(recs, self.dataset_dir, type(self).read_events, self.spec, self.cache)
                     for recs in (train, test))
