"""Disk cache of converted event frames.

Layout: ``<cache_dir>/<dataset>-T<T>-<h>x<w>-<hash>/<recording>.<bytes>.npz`` where ``<hash>`` is
a digest of every parameter that changes the frames (dataset, T, sensor and output size, framing
rule version; see :meth:`FrameSpec.key`), so a changed T or resolution never reads a stale entry.
An entry is named after its source file (path relative to the dataset folder, and its size in
bytes), not after a dataset index: a changed train/test split or a partial copy that gains files
still finds each recording's own frames. Entries are written to a temporary name and renamed, so
an interrupted run never leaves a half-written entry; an unreadable entry is converted again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from cbpqsnn.data.files import atomic_write
from cbpqsnn.data.frames import FrameSpec

log = logging.getLogger(__name__)


class FrameCache:
    """Converted frames of one dataset under one :class:`FrameSpec`, one ``.npz`` per recording."""

    def __init__(self, cache_dir: str | Path, dataset: str, spec: FrameSpec) -> None:
        self.params = {"dataset": dataset, **spec.key()}
        digest = hashlib.sha1(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:12]
        h, w = spec.size
        self.folder = Path(cache_dir) / f"{dataset}-T{spec.T}-{h}x{w}-{digest}"

    def entry(self, relative_path: str, size_bytes: int) -> Path:
        """Cache file of the recording at ``relative_path`` (of ``size_bytes``) in its dataset folder."""
        name = relative_path.replace("\\", "/").strip("/").replace("/", "__")
        return self.folder / f"{name}.{size_bytes}.npz"

    def load(self, entry: Path) -> np.ndarray | None:
        """The cached frames, or ``None`` on a miss (absent or unreadable entry)."""
        if not entry.is_file():
            return None
        try:
            with np.load(entry) as stored:
                return stored["frames"]
        except Exception as err:  # an unreadable entry is a miss: it is converted again
            log.warning("unreadable frame cache entry %s (%s): converting again", entry, err)
            return None

    def save(self, entry: Path, frames: np.ndarray) -> None:
        """Store ``frames`` atomically (temporary file + rename)."""
        if not (self.folder / "params.json").is_file():
            with atomic_write(self.folder / "params.json") as handle:
                handle.write(json.dumps(self.params, indent=2, sort_keys=True).encode())
        with atomic_write(entry) as handle:
            np.savez_compressed(handle, frames=frames)
