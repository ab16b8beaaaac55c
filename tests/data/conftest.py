"""Fixtures of the data tests: the real copies in ``../shared/data`` extracted once into the
system temp folder (reused across runs), and a skip marker for machines that lack them."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT

SHARED_DATA = Path(os.environ.get("CBPQSNN_SHARED_DATA", ROOT.parent / "shared" / "data"))
NMNIST_TAR = SHARED_DATA / "nmnist-1k.tar.gz"
CIFAR_JPEG_TAR = SHARED_DATA / "cifar10-jpeg.tar.gz"


def needs(tarball: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not tarball.is_file(),
                              reason=f"real data {tarball} is absent (only the fabricated copies are tested)")


def extracted(tarball: Path, name: str, select: Callable[[str], bool] | None = None, into: str = ".") -> Path:
    """Members of ``tarball`` (those ``select`` keeps) extracted once into ``<folder>/<into>``, with
    ``<folder>`` in the system temp dir keyed by the tarball's size and time (written under a
    temporary name, then renamed); returns ``<folder>``."""
    stat = tarball.stat()
    target = Path(tempfile.gettempdir()) / "cbpqsnn-test-data" / f"{name}-{stat.st_size}-{int(stat.st_mtime)}"
    if target.is_dir():
        return target
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if member.isfile() and (select is None or select(member.name)):
                tar.extract(member, tmp / into, filter="data")
    try:
        os.rename(tmp, target)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def real_nmnist_root() -> Path:
    """Root holding ``NMNIST/{Train,Test}/<digit>/*.bin``: the 1,100 real recordings."""
    return extracted(NMNIST_TAR, "nmnist-1k")


@pytest.fixture(scope="session")
def real_cifar_jpeg_root() -> Path:
    """Root holding ``cifar10-jpeg/{train,test}/<class>/000[0-2].jpg``: 3 real images per class
    and split (60 of the 60,000)."""
    return extracted(CIFAR_JPEG_TAR, "cifar10-jpeg-sample",
                     lambda member: Path(member).name in {"0000.jpg", "0001.jpg", "0002.jpg"}, "cifar10-jpeg")
