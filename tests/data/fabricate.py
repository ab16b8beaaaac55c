"""Tiny datasets written in the exact on-disk layouts and file formats of the real ones."""

from __future__ import annotations

import hashlib
import pickle
import zlib
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def random_events(n: int, width: int, height: int, seed: int, duration_us: int = 300_000) -> dict:
    """``n`` events with sorted timestamps, as plain arrays x, y, p, t."""
    rng = np.random.default_rng(seed)
    return {"x": rng.integers(0, width, n), "y": rng.integers(0, height, n), "p": rng.integers(0, 2, n),
            "t": np.sort(rng.integers(0, duration_us, n))}


# -- N-MNIST ---------------------------------------------------------------------------------------
def nmnist_bytes(events: dict) -> bytes:
    """The N-MNIST binary format: 5 bytes per event, x, y, then 1 polarity bit + 23-bit timestamp
    (big-endian); timestamps must stay below 2**23 us (no overflow events needed)."""
    t = np.asarray(events["t"], dtype=np.uint32)
    assert t.max() < 2**23
    raw = np.empty((len(t), 5), dtype=np.uint8)
    raw[:, 0] = events["x"]
    raw[:, 1] = events["y"]
    raw[:, 2] = (np.asarray(events["p"], dtype=np.uint32) << 7) | (t >> 16)
    raw[:, 3] = (t >> 8) & 0xFF
    raw[:, 4] = t & 0xFF
    return raw.tobytes()


def make_nmnist(root: Path, per_digit: dict[str, int], events_per_file: int = 50) -> dict[Path, int]:
    """``<root>/NMNIST/<Split>/<digit>/<id>.bin``; returns {file: number of events}."""
    written = {}
    for split, count in per_digit.items():
        for digit in range(10):
            folder = root / "NMNIST" / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                n = events_per_file + 7 * k + digit
                path = folder / f"{digit * 1000 + k + 1:05d}.bin"
                seed = zlib.crc32(f"{split}/{digit}/{k}".encode())
                path.write_bytes(nmnist_bytes(random_events(n, 34, 34, seed=seed)))
                written[path] = n
    return written


# -- DVS128 Gesture ----------------------------------------------------------------------------------
def make_dvs_gesture(root: Path, users: dict[str, list[str]], labels: range = range(11),
                     events_per_file: int = 80) -> dict[Path, int]:
    """``<root>/DVSGesture/ibmGesture{Train,Test}/user<NN>_<lighting>/<label>.npy`` ((N, 4) arrays
    x, y, p, t with t in ms) plus the archives tonic checks for; returns {file: number of events}."""
    written = {}
    base = root / "DVSGesture"
    for split, user_folders in users.items():
        (base / f"{split}.tar.gz").parent.mkdir(parents=True, exist_ok=True)
        (base / f"{split}.tar.gz").write_bytes(b"")
        for u, user_folder in enumerate(user_folders):
            folder = base / split / user_folder
            folder.mkdir(parents=True, exist_ok=True)
            for label in labels:
                n = events_per_file + 3 * label + u
                ev = random_events(n, 128, 128, seed=zlib.crc32(f"{user_folder}/{label}".encode()))
                array = np.stack([ev["x"], ev["y"], ev["p"], ev["t"] // 1000], axis=1).astype(np.float64)
                path = folder / f"{label}.npy"
                np.save(path, array)
                written[path] = n
    return written


# -- CIFAR10-DVS ------------------------------------------------------------------------------------
def make_cifar10dvs(root: Path, per_class: int, events_per_file: int = 60) -> dict[Path, int]:
    """``<root>/CIFAR10DVS/<class>/cifar10_<class>_<i>.aedat4`` written with ``faery`` (a real
    AEDAT4 encoder) plus the zip tonic checks for; returns {file: number of events}."""
    import faery

    written = {}
    base = root / "CIFAR10DVS"
    base.mkdir(parents=True, exist_ok=True)
    (base / "CIFAR10DVS.zip").write_bytes(b"")
    for c, name in enumerate(CIFAR10_CLASSES):
        (base / name).mkdir(exist_ok=True)
        for i in range(per_class):
            n = events_per_file + 5 * i + c
            ev = random_events(n, 128, 128, seed=c * 1000 + i)
            array = np.zeros(n, dtype=faery.EVENTS_DTYPE)
            array["t"], array["x"], array["y"], array["on"] = ev["t"], ev["x"], ev["y"], ev["p"] == 1
            path = base / name / f"cifar10_{name}_{i}.aedat4"
            faery.events_stream_from_array(array, dimensions=(128, 128)).to_file(str(path))
            written[path] = n
    return written


# -- CIFAR python pickles -----------------------------------------------------------------------------
def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)


def make_cifar10_batches(root: Path, per_batch: int, test_size: int, seed: int = 0) -> dict[str, str]:
    """``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` in the official
    pickle format; returns {file name: md5} of the fabricated files."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in files:
        n = test_size if name == "test_batch" else per_batch
        _dump(folder / name, {"batch_label": name, "labels": [int(v) for v in rng.integers(0, 10, n)],
                              "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                              "filenames": [f"{name}_{i}.png" for i in range(n)]})
    _dump(folder / "batches.meta", {"label_names": CIFAR10_CLASSES, "num_vis": 3072})
    return {name: md5(folder / name) for name in [*files, "batches.meta"]}


def make_cifar100_files(root: Path, train_size: int, test_size: int, seed: int = 0) -> dict[str, str]:
    """``<root>/cifar-100-python/{train,test,meta}`` in the official format; returns md5s."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    for name, n in (("train", train_size), ("test", test_size)):
        _dump(folder / name, {"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
                              "coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
                              "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)})
    _dump(folder / "meta", {"fine_label_names": [f"class{i:02d}" for i in range(100)],
                            "coarse_label_names": [f"super{i:02d}" for i in range(20)]})
    return {name: md5(folder / name) for name in ("train", "test", "meta")}


def make_image_folders(folder: Path, classes: list[str], per_class: dict[str, int], seed: int = 0) -> None:
    """``<folder>/<split>/<class>/NNNN.jpg`` 32x32 RGB JPEGs (the layout of cifar10-jpeg.tar.gz)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for name in classes:
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / split / name / f"{i:04d}.jpg")
