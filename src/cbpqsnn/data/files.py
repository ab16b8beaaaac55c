"""File helpers shared by the datamodules: clear errors for missing or corrupt data, a natural
sort order for recordings and an atomic file write."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


class MissingDataError(FileNotFoundError):
    """A dataset's files are not where the config says they are (and ``data.datamodule.download``
    is false)."""


class CorruptSampleError(RuntimeError):
    """A sample file exists but cannot be decoded (truncated, wrong format, out-of-range data)."""


def missing_data_error(dataset: str, folder: Path, expected: str, download_via: str) -> MissingDataError:
    """The error every datamodule raises for absent data: where it looked, what it expected to
    find there, and the overrides (the real config keys) that point elsewhere or download it."""
    return MissingDataError(
        f"{dataset} not found in {folder}: expected {expected}. Put the files there "
        f"(data.datamodule.root=<folder> points elsewhere), or set data.datamodule.download=true "
        f"to download them through {download_via}."
    )


def read_or_raise(path: Path, reader: Callable[[Path], object]) -> object:
    """``reader(path)``; any decoding failure becomes a :class:`CorruptSampleError` naming the file."""
    try:
        return reader(path)
    except (MissingDataError, ImportError):
        raise
    except Exception as err:  # every reader fails differently on a bad file
        raise CorruptSampleError(
            f"cannot read sample file {path}: {type(err).__name__}: {err} "
            "(truncated or corrupt? delete it and extract or download it again)") from err


def natural_key(path: Path | str) -> tuple:
    """Sort key that orders ``x_2`` before ``x_10`` (numbers compared as numbers)."""
    parts = re.split(r"(\d+)", str(path))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def sorted_files(folder: Path, pattern: str, order: str = "natural") -> list[Path]:
    """Files matching ``pattern`` under ``folder``, in ``natural`` or ``lexicographic`` order."""
    if order not in ("natural", "lexicographic"):
        raise ValueError(f"file order must be 'natural' or 'lexicographic', got {order!r}")
    files = [p for p in folder.glob(pattern) if p.is_file()]
    return sorted(files, key=natural_key if order == "natural" else str)


@contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success rename it to ``path`` (atomic on POSIX),
    on failure delete it, so a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
