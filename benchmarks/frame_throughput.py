"""Frame conversion throughput on real N-MNIST recordings, on one CPU core.

    .venv/bin/python benchmarks/frame_throughput.py [--root data] [--T 16] [--size 17]

Reads ``<root>/NMNIST/{Train,Test}/<digit>/*.bin``; if absent, extracts ``--tarball`` (the
1,100-recording real subset in ../shared/data) into the system temp folder. Reports events per
second (best of ``--repeat`` passes) for: tonic's reader alone, the framing alone
(:func:`events_to_frames`), both together (what a cache miss costs), tonic's own
``ToFrame(n_event_bins=T)`` for comparison, and a frame-cache hit.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: before numpy / torch load

import argparse  # noqa: E402
import shutil  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from tonic.transforms import ToFrame  # noqa: E402

from cbpqsnn.data.frame_cache import FrameCache  # noqa: E402
from cbpqsnn.data.frames import events_to_frames  # noqa: E402
from cbpqsnn.data.nmnist import NMNISTDataModule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def nmnist_root(root: Path, tarball: Path) -> Path:
    if (root / "NMNIST").is_dir():
        return root
    target = Path(tempfile.gettempdir()) / "cbpqsnn-bench" / f"nmnist-{tarball.stat().st_size}"
    if not (target / "NMNIST").is_dir():
        with tarfile.open(tarball, "r:gz") as tar:
            tar.extractall(target, filter="data")
    return target


def best_rate(work: Callable[[], int], repeat: int) -> tuple[float, float]:
    """(events per second, seconds) of the fastest of ``repeat`` passes; ``work`` returns events."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        events = work()
        best = min(best, time.perf_counter() - start)
    return events / best, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / "data")
    parser.add_argument("--tarball", type=Path, default=ROOT.parent / "shared" / "data" / "nmnist-1k.tar.gz")
    parser.add_argument("--T", type=int, default=16)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    root = nmnist_root(args.root, args.tarball)
    dm = NMNISTDataModule(root=root, T=args.T, size=args.size)
    dm.setup()
    paths = [r.path for r in dm.train_set.recordings + dm.test_set.recordings]
    read = NMNISTDataModule.read_events
    recordings = [read(p) for p in paths]
    n_events = sum(len(ev) for ev in recordings)
    spec = dm.spec
    tonic_frames = ToFrame(sensor_size=(34, 34, 2), n_event_bins=spec.T)
    cache_dir = Path(tempfile.mkdtemp(prefix="cbpqsnn-bench-cache-"))
    cache = FrameCache(cache_dir, "nmnist", spec)
    entries = [cache.entry(p.name, p.stat().st_size) for p in paths]
    for entry, ev in zip(entries, recordings, strict=True):
        cache.save(entry, events_to_frames(ev, spec))

    def read_all() -> int:
        return sum(len(read(p)) for p in paths)

    def frame_all(convert: Callable) -> int:
        for ev in recordings:
            convert(ev)
        return n_events

    def read_and_frame_all() -> int:
        return sum(int(events_to_frames(read(p), spec).sum()) for p in paths)

    def load_cached_all() -> int:
        for entry in entries:
            cache.load(entry)
        return n_events

    cases = {
        "read (tonic.io.read_mnist_file)": read_all,
        "frame (events_to_frames)": lambda: frame_all(lambda ev: events_to_frames(ev, spec)),
        "read + frame (a cache miss)": read_and_frame_all,
        f"tonic ToFrame(n_event_bins={spec.T}) (reference)": lambda: frame_all(tonic_frames),
        "cache hit (npz load)": load_cached_all,
    }
    print(f"{len(paths)} real N-MNIST recordings, {n_events:,} events "
          f"({n_events / len(paths):,.0f} per recording), frames {spec.shape}, one core")
    try:
        for name, work in cases.items():
            rate, seconds = best_rate(work, args.repeat)
            print(f"  {name:<42} {rate / 1e6:7.2f} M events/s  {len(paths) / seconds:8.0f} recordings/s")
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
